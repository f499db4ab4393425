package e2e

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/server"
)

func servedSerial(t *testing.T, host string) string {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", env.stack.HTTPSAddr(),
		&tls.Config{ServerName: host, RootCAs: env.roots})
	if err != nil {
		t.Fatalf("TLS to %s: %v", host, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestCertificatesSurviveTraefikRestart: Traefik keeps its ACME
// certificates in storage, so after a restart it serves the same one rather
// than asking Pebble again.
func TestCertificatesSurviveTraefikRestart(t *testing.T) {
	purge(t, "e2e--durable")
	res := deploy(t, "durable.hcl", nodeServer("durable", "still here\n", false), server.DeployBody{})
	url := res.Functions[0].URL
	host := strings.SplitN(strings.TrimPrefix(url, "https://"), ":", 2)[0]
	before := servedSerial(t, host)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.stack.Restart(ctx, "traefik"); err != nil {
		t.Fatalf("restarting Traefik: %v", err)
	}
	answers(t, url, "still here\n")
	if after := servedSerial(t, host); after != before {
		t.Fatalf("certificate serial %s after the restart, %s before: it was issued again", after, before)
	}
}
