package clientcfg

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// LeaderWait is how long a Nomad read waits out a leader election: from
// a leader's death until the other servers have elected one, a server
// answers 500 ("No cluster leader", or its connection to the dead leader
// refused) to every request it must forward. A three-server cluster
// elects within seconds.
const LeaderWait = 30 * time.Second

// noLeaderMarks are the texts of Nomad's 500s while it has no leader to
// forward to. "rpc error:" is every failure of a server's forwarding RPC
// to the leader (EOF, a session shut down, a broken pipe to the dead
// leader, ...): a read that failed there never ran, so sending it again
// is safe.
var noLeaderMarks = []string{"No cluster leader", "failed to get conn", "rpc error:", "leadership lost"}

// leaderRetry is the Nomad client's transport: it sends a GET again while
// the answer says the cluster has no reachable leader, for up to wait.
// Writes are never sent twice: one that reached a dying leader may have
// been applied, and caravan's check-and-set registrations would refuse
// the second anyway; they fail, and the deploy with them.
type leaderRetry struct {
	next http.RoundTripper
	wait time.Duration
}

func (t *leaderRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet {
		return t.next.RoundTrip(req)
	}
	deadline := time.Now().Add(t.wait)
	backoff := 100 * time.Millisecond
	for {
		resp, err := t.next.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusInternalServerError {
			return resp, err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if !noLeader(readable(resp.Header, body)) || time.Now().Add(backoff).After(deadline) {
			return resp, nil
		}
		select {
		case <-req.Context().Done():
			return resp, nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// readable is body as text: Nomad's client asks for gzip itself, so its
// answers come compressed (and are returned so).
func readable(h http.Header, body []byte) string {
	if h.Get("Content-Encoding") != "gzip" {
		return string(body)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(zr, 64<<10))
	return string(b)
}

func noLeader(body string) bool {
	for _, m := range noLeaderMarks {
		if strings.Contains(body, m) {
			return true
		}
	}
	return false
}

// leaderRetryClient is the HTTP client nomad.NewClient would make for cfg
// (pooled, HTTP/1, cfg's TLS), its transport wrapped in leaderRetry.
func leaderRetryClient(cfg *nomad.Config) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSHandshakeTimeout = 10 * time.Second
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	hc := &http.Client{Transport: tr}
	if err := nomad.ConfigureTLS(hc, cfg.TLSConfig); err != nil {
		return nil, err
	}
	hc.Transport = &leaderRetry{next: tr, wait: LeaderWait}
	return hc, nil
}
