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

// Prober checks that a route answers through the proxy, or that it no
// longer does.
type Prober interface {
	// Probe waits until r answers 2xx; with stable > 0, without a break
	// for that long (after an update the old containers may answer for a
	// moment, until the proxy drops them, when caravan cannot see it).
	Probe(ctx context.Context, r router.Route, stable time.Duration) error
	// Gone waits until the proxy answers r's URL 404: it routes the
	// hostname nowhere.
	Gone(ctx context.Context, r router.Route) error
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
	// Auth returns the headers added to every probe, given the route's
	// hostname: a credential that opens that hostname alone (caravan
	// server's is an HMAC of it), for routes with proxy auth and for the
	// probe router of rate-limited routes, so the probe spends none of the
	// function's rate limit (see router.ProbeKey). Every route strips them
	// before the function, so they never reach user code. Nil sends none
	// (and the probe counts against the rate limit).
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
	began := time.Now()
	for {
		path := r.HealthPath
		if path == "" {
			path = "/"
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+path, nil)
		if p.Auth != nil {
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
		wait := probeWait(time.Since(began))
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

// probeWait is the pause between probes that found no answer yet, after
// probing for so long: brief while a route that was just registered is
// about to answer (the probes go to the proxy on loopback, and a request
// to an unrouted hostname costs it little), longer once its containers
// take their time to start.
func probeWait(so time.Duration) time.Duration {
	switch {
	case so < 3*time.Second:
		return 25 * time.Millisecond
	case so < 15*time.Second:
		return 100 * time.Millisecond
	default:
		return 250 * time.Millisecond
	}
}

// Gone polls the route's health path until the proxy answers 404, or ctx
// ends. It sends no credential, so it does not verify the certificate: a
// hostname the proxy routes nowhere may get its default certificate, and
// the answer's status is all Gone reads.
func (p *HTTPSProber) Gone(ctx context.Context, r router.Route) error {
	client := ProxyClient(p.Addr, p.Roots)
	defer client.CloseIdleConnections()
	client.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	path := r.HealthPath
	if path == "" {
		path = "/"
	}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+path, nil)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusNotFound {
				return nil
			}
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
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
