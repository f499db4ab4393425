package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/api"
)

// TestRoutePriorities: Traefik ranks a router without a priority by the
// length of its rule, so app b's long rule, whose wildcard also covers app
// a's exact custom domain, used to take a's requests. With explicit
// priorities a's generated hostname and exact domain reach a, and the
// wildcard serves only what nothing more specific claims. (Both apps are
// in one workspace: a wildcard over another workspace's hostname is
// refused, and a custom domain under the platform domain too, so this is
// the overlap a user can still make; the router unit tests cover the rest.)
func TestRoutePriorities(t *testing.T) {
	purge(t, "e2e--prioa")
	purge(t, "e2e--priob")
	port := strconv.Itoa(env.stack.Ports.TraefikWebsecure)
	// b's label, and so its rule, is far longer than a's.
	b := deploy(t, "b.hcl", labelled("priob", "prio-wildcard-with-a-much-longer-label-than-a", "*.prio.caravan-e2e.test", "b\n"), api.DeployBody{})
	a := deploy(t, "a.hcl", labelled("prioa", "pa", "api.prio.caravan-e2e.test", "a\n"), api.DeployBody{})

	answers(t, a.Functions[0].URL, "a\n")
	answers(t, b.Functions[0].URL, "b\n")
	answers(t, "https://www.prio.caravan-e2e.test:"+port, "b\n")
	// Traefik has both routers; a's exact domain must win every time.
	for i := range 20 {
		status, body, err := get(t, "https://api.prio.caravan-e2e.test:"+port)
		if err != nil || status != 200 || body != "a\n" {
			t.Fatalf("request %d for a's custom domain: %d %q %v, want a's answer", i, status, body, err)
		}
	}
	host := strings.SplitN(strings.TrimPrefix(a.Functions[0].URL, "https://"), ":", 2)[0]
	if status, body, err := get(t, fmt.Sprintf("https://%s:%s", host, port)); err != nil || status != 200 || body != "a\n" {
		t.Fatalf("a's generated hostname: %d %q %v", status, body, err)
	}
}
