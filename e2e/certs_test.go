package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
)

// servedCert is the certificate Traefik serves for host, verified against
// Pebble's root.
func servedCert(t *testing.T, host string) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", env.stack.HTTPSAddr(),
		&tls.Config{ServerName: host, RootCAs: env.roots})
	if err != nil {
		t.Fatalf("TLS to %s: %v", host, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// TestCertificatesSurviveTraefikRestart: Traefik keeps its ACME
// certificates in storage, so after a restart it serves the same one rather
// than asking Pebble again.
func TestCertificatesSurviveTraefikRestart(t *testing.T) {
	purge(t, "e2e--durable")
	res := deploy(t, "durable.hcl", nodeServer("durable", "still here\n", false), api.DeployBody{})
	url := res.Functions[0].URL
	host := strings.SplitN(strings.TrimPrefix(url, "https://"), ":", 2)[0]
	before := servedCert(t, host).SerialNumber.String()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.stack.Restart(ctx, "traefik"); err != nil {
		t.Fatalf("restarting Traefik: %v", err)
	}
	answers(t, url, "still here\n")
	if after := servedCert(t, host).SerialNumber.String(); after != before {
		t.Fatalf("certificate serial %s after the restart, %s before: it was issued again", after, before)
	}
}

// firstAnswer is what a client saw of a hostname from before its app was
// deployed until its first 200.
type firstAnswer struct {
	// unverified lists the responses served over a certificate that does
	// not verify for the hostname (Traefik's default certificate, say).
	unverified []string
	// requests counts every response, and names are the DNS names of the
	// certificate of the first 200.
	requests int
	names    []string
}

// watchFirstAnswer sends GETs to url (host at the stack's HTTPS address),
// each on a new connection so each has its own handshake, until one
// answers 200 or stop closes, checking every certificate served against
// Pebble's root for host.
func watchFirstAnswer(host, url string, stop <-chan struct{}) <-chan firstAnswer {
	out := make(chan firstAnswer, 1)
	client := orchestrator.ProxyClient(env.stack.HTTPSAddr(), nil)
	tr := client.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	tr.DisableKeepAlives = true
	go func() {
		var a firstAnswer
		defer func() { out <- a }()
		deadline := time.Now().Add(3 * time.Minute)
		for time.Now().Before(deadline) {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := client.Get(url)
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			resp.Body.Close()
			a.requests++
			leaf := resp.TLS.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range resp.TLS.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: env.roots, Intermediates: inter}); err != nil {
				a.unverified = append(a.unverified, fmt.Sprintf("%d over %v: %v", resp.StatusCode, leaf.DNSNames, err))
			}
			if resp.StatusCode == http.StatusOK {
				a.names = leaf.DNSNames
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return out
}

// TestNewHostnameVerifiesOnFirstRequest: a new app's generated hostname is
// served by the platform's wildcard certificate, which caravan server had
// Traefik order before any app: every response, from before the route
// exists to its first 200, comes over a certificate that verifies, and
// that certificate is *.<domain>, not one ordered for the hostname.
func TestNewHostnameVerifiesOnFirstRequest(t *testing.T) {
	purge(t, "e2e--firstcert")
	host := "e2e--firstcert-web." + env.stack.Domain
	url := fmt.Sprintf("https://%s:%d/", host, env.stack.Ports.TraefikWebsecure)
	stop := make(chan struct{})
	watched := watchFirstAnswer(host, url, stop)

	res := deploy(t, "firstcert.hcl", nodeServer("firstcert", "first\n", false), api.DeployBody{})
	if res.Functions[0].URL+"/" != url {
		t.Fatalf("URL %s, want %s", res.Functions[0].URL, url)
	}
	answers(t, url, "first\n")
	close(stop)
	a := <-watched
	if len(a.unverified) > 0 {
		t.Errorf("%d of %d responses came over a certificate that does not verify for %s, first: %s",
			len(a.unverified), a.requests, host, a.unverified[0])
	}
	if want := env.stack.WildcardCertificate(); !slices.Equal(a.names, []string{want}) {
		t.Errorf("the first 200 came over a certificate for %v, want %s", a.names, want)
	}
	if got := servedCert(t, host).DNSNames; !slices.Equal(got, []string{env.stack.WildcardCertificate()}) {
		t.Errorf("%s is served a certificate for %v, want the wildcard", host, got)
	}
}
