package orchestrator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/caravanhq/caravan/router"
)

// Prober checks that a route answers through the proxy. With stable > 0
// it must answer 2xx without a break for that long: after an update the old
// containers may answer for a moment, until the proxy drops them.
type Prober interface {
	Probe(ctx context.Context, r router.Route, stable time.Duration) error
}

// HTTPSProber sends GET requests for a route's hostname to the proxy's HTTPS
// address (whatever DNS says about the hostname) and waits for a 2xx over a
// certificate that verifies against Roots. It follows no redirect: a probe
// wants the route itself to answer, and its credential must not travel to
// wherever a function's answer points.
type HTTPSProber struct {
	// Addr is the proxy's HTTPS address, e.g. "127.0.0.1:8443".
	Addr string
	// Roots verify the proxy's certificates; nil uses the system roots.
	Roots *x509.CertPool
	// Auth returns the headers added to requests for routes with proxy
	// auth, given the route's hostname: a credential that opens that
	// hostname alone (caravan server's is an HMAC of it). Every route strips
	// them before the function, so they never reach user code. Nil sends
	// none.
	Auth func(host string) http.Header
}

var _ Prober = (*HTTPSProber)(nil)

// Probe polls the route's health path until it has answered 2xx for
// stable without a break, or ctx ends.
func (p *HTTPSProber) Probe(ctx context.Context, r router.Route, stable time.Duration) error {
	client := ProxyClient(p.Addr, p.Roots)
	defer client.CloseIdleConnections()
	// A redirect is an answer, and not a 2xx one.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var last error
	var since time.Time // start of the current run of 2xx answers
	for {
		path := r.HealthPath
		if path == "" {
			path = "/"
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+path, nil)
		if r.ProxyAuth && p.Auth != nil {
			for k, v := range p.Auth(r.Host) {
				req.Header[k] = v
			}
		}
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				if since.IsZero() {
					since = time.Now()
				}
				if time.Since(since) >= stable {
					return nil
				}
			} else if loc := resp.Header.Get("Location"); resp.StatusCode/100 == 3 && loc != "" {
				err = fmt.Errorf("status %s to %s (a probe follows no redirect)", resp.Status, loc)
			} else {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
		if err != nil {
			last, since = err, time.Time{}
		}
		wait := 200 * time.Millisecond
		if !since.IsZero() {
			wait = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return last
		case <-time.After(wait):
		}
	}
}

// ProxyClient is an HTTP client that connects every request to addr,
// keeping the URL's hostname for SNI and Host, and verifies certificates
// against roots.
func ProxyClient(addr string, roots *x509.CertPool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			TLSClientConfig: &tls.Config{RootCAs: roots},
		},
	}
}
