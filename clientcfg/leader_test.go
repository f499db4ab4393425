package clientcfg

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// A GET answered "no leader" is sent again until a leader answers; any
// other 500, and every write, is passed on at once.
func TestLeaderRetry(t *testing.T) {
	cases := []struct {
		name, method, body string
		failures           int32
		wantCalls          int32
		wantStatus         int
	}{
		{"read during an election", http.MethodGet, "rpc error: failed to get conn: dial tcp 127.0.0.1:1: connect: connection refused", 3, 4, 200},
		{"read, no leader", http.MethodGet, "No cluster leader", 1, 2, 200},
		{"read, another 500", http.MethodGet, "boom", 3, 1, 500},
		{"write during an election", http.MethodPut, "No cluster leader", 3, 1, 500},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) <= tc.failures {
					http.Error(w, tc.body, 500)
					return
				}
				io.WriteString(w, "ok")
			}))
			defer srv.Close()
			c := &http.Client{Transport: &leaderRetry{next: http.DefaultTransport, wait: 10 * time.Second}}
			req, _ := http.NewRequest(tc.method, srv.URL, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || calls.Load() != tc.wantCalls {
				t.Fatalf("status %d after %d calls (%q), want %d after %d", resp.StatusCode, calls.Load(), b, tc.wantStatus, tc.wantCalls)
			}
			if tc.wantStatus == 500 && len(b) == 0 {
				t.Fatal("the 500's body was lost")
			}
		})
	}
}

// Past its wait, the last "no leader" answer is returned as it came.
func TestLeaderRetryGivesUp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "No cluster leader", 500)
	}))
	defer srv.Close()
	c := &http.Client{Transport: &leaderRetry{next: http.DefaultTransport, wait: 300 * time.Millisecond}}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 500 || string(b) != "No cluster leader\n" {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
}

// Nomad's client asks for gzip, so Nomad's "no leader" answers come
// compressed; they are still recognised, and returned as they came.
func TestLeaderRetryReadsGzip(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Content-Encoding", "gzip")
			w.WriteHeader(500)
			zw := gzip.NewWriter(w)
			io.WriteString(zw, "rpc error: failed to get conn: dial tcp 127.0.0.1:1: connect: connection refused")
			zw.Close()
			return
		}
		w.Write([]byte(`{"ID":"x"}`))
	}))
	defer srv.Close()
	c, err := Nomad{Addr: srv.URL}.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Jobs().Info("x", nil); err != nil || calls.Load() != 2 {
		t.Fatalf("Info: %v after %d calls, want success after 2", err, calls.Load())
	}
}
