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

// Prober checks that a route answers through the proxy.
type Prober interface {
	Probe(ctx context.Context, r router.Route) error
}

// HTTPSProber sends GET requests for a route's hostname to the proxy's HTTPS
// address (whatever DNS says about the hostname) and waits for a 2xx over a
// certificate that verifies against Roots.
type HTTPSProber struct {
	// Addr is the proxy's HTTPS address, e.g. "127.0.0.1:8443".
	Addr string
	// Roots verify the proxy's certificates; nil uses the system roots.
	Roots *x509.CertPool
	// AuthHeader is added to requests for routes with proxy auth; those
	// routes strip it before the function, so it never reaches user code.
	AuthHeader http.Header
}

var _ Prober = (*HTTPSProber)(nil)

// Probe polls until the route answers 2xx or ctx ends.
func (p *HTTPSProber) Probe(ctx context.Context, r router.Route) error {
	client := ProxyClient(p.Addr, p.Roots)
	defer client.CloseIdleConnections()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/", nil)
		if r.ProxyAuth {
			for k, v := range p.AuthHeader {
				req.Header[k] = v
			}
		}
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return last
		case <-time.After(200 * time.Millisecond):
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
