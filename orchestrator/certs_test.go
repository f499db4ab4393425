package orchestrator

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/router"
)

// TestPublishWildcardCertificate: with a DNS-01 resolver, caravan server's
// start writes the wildcard certificate's router under the KV root, and
// nothing else; without one it writes nothing.
func TestPublishWildcardCertificate(t *testing.T) {
	h := newHarness(t)
	if err := h.o.PublishWildcardCertificate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(h.consul.kv) != 0 {
		t.Fatalf("without a DNS-01 resolver it wrote %v", h.consul.kv)
	}

	h.o.router.DNSCertResolver = "caravan-dns"
	if err := h.o.PublishWildcardCertificate(context.Background()); err != nil {
		t.Fatal(err)
	}
	prefix := "traefik/http/routers/" + router.WildcardRouter + "/"
	for k := range h.consul.kv {
		if !strings.HasPrefix(k, prefix) {
			t.Errorf("wrote %s, outside %s", k, prefix)
		}
	}
	for k, want := range map[string]string{
		prefix + "tls/certResolver":   "caravan-dns",
		prefix + "tls/domains/0/main": "*.caravan.test",
		prefix + "service":            "noop@internal",
		prefix + "rule":               "Host(`caravan-wildcard.caravan.test`)",
	} {
		if got := h.consul.kv[k]; got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}

	h.consul.writeErr = errors.New("consul is down")
	if err := h.o.PublishWildcardCertificate(context.Background()); err == nil {
		t.Error("a failed Consul write was not reported")
	}
}
