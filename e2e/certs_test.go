package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
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
