package router_test

import (
	"cmp"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
)

// ranked orders routers as Traefik's HTTP muxer tries them: by priority,
// highest first, a router without one ranked by its rule's length (as
// Traefik's router manager gives it).
func ranked(routers map[string]*dynamic.Router) []string {
	priority := func(rt *dynamic.Router) int {
		if rt.Priority != 0 {
			return rt.Priority
		}
		return len(rt.Rule)
	}
	names := slices.Collect(maps.Keys(routers))
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(priority(routers[b]), priority(routers[a])) })
	return names
}

// matches reports whether a rule of the shapes caravan renders (Host and
// HostRegexp joined by ||) matches host, canonized as Traefik does (lower
// case, no port, no trailing dot).
func matches(t *testing.T, rule, host string) bool {
	t.Helper()
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, m := range strings.Split(rule, " || ") {
		if v, ok := strings.CutPrefix(m, "Host(`"); ok {
			if strings.TrimSuffix(v, "`)") == host {
				return true
			}
			continue
		}
		v, ok := strings.CutPrefix(m, "HostRegexp(`")
		if !ok {
			t.Fatalf("rule %s: matcher %s is neither Host nor HostRegexp", rule, m)
		}
		if regexp.MustCompile(strings.TrimSuffix(v, "`)")).MatchString(host) {
			return true
		}
	}
	return false
}

// routedTo is the first router, in Traefik's order, whose rule matches host.
func routedTo(t *testing.T, routers map[string]*dynamic.Router, host string) string {
	t.Helper()
	for _, name := range ranked(routers) {
		if matches(t, routers[name].Rule, host) {
			return name
		}
	}
	return ""
}

// routersOf are the routers of routes, also those of their traffic splits
// when split is true.
func routersOf(routes []router.Route, split bool) map[string]*dynamic.Router {
	out := map[string]*dynamic.Router{}
	for _, r := range routes {
		for k, v := range r.Config.HTTP.Routers {
			out[k] = v
		}
		if split {
			for k, v := range (router.Split{Route: r, Servers: []string{"http://127.0.0.1:1"}, Weight: 10}).Config().HTTP.Routers {
				out[k] = v
			}
		}
	}
	return out
}

func app(workspace, name string, domains ...string) *spec.App {
	return &spec.App{Name: name, Workspace: workspace, Functions: []*spec.Function{
		{Name: "web", Command: "node", Web: &spec.Web{CustomDomains: domains}},
	}}
}

// TestLongCustomRulesCannotOutrankGeneratedHosts: Traefik ranks a router
// without a priority by its rule's length, so another app's long rule (many
// custom domains, a long wildcard) that matches a generated hostname or an
// exact custom domain used to take its requests. Every router caravan
// renders has an explicit priority: generated hostnames above exact custom
// domains above wildcards, whatever the rules' lengths.
func TestLongCustomRulesCannotOutrankGeneratedHosts(t *testing.T) {
	var many []string
	for i := range 40 {
		many = append(many, "x"+strings.Repeat("y", 20)+string(rune('a'+i%26))+".other.example")
	}
	a := router.Routes(app("dev", "a", "api.shared.example"), testConfig)
	// b's rules match a's generated hostname and a's exact custom domain,
	// and are far longer than a's.
	b := router.Routes(app("evil", "b", append([]string{"*.caravan.localhost", "*.shared.example"}, many...)...), testConfig)
	for _, split := range []bool{false, true} {
		mux := routersOf(append(append([]router.Route{}, b...), a...), split)
		for _, host := range []string{a[0].Host, "API.shared.example", "api.shared.example."} {
			got := routedTo(t, mux, host)
			if !strings.HasPrefix(got, a[0].Name) {
				t.Errorf("split=%v: %s went to router %q, want one of %s", split, host, got, a[0].Name)
			}
		}
		if got := routedTo(t, mux, "www.shared.example"); !strings.HasPrefix(got, b[0].Name) {
			t.Errorf("split=%v: www.shared.example went to %q, want b's wildcard", split, got)
		}
		if got := routedTo(t, mux, b[0].Host); !strings.HasPrefix(got, b[0].Name) {
			t.Errorf("split=%v: b's own hostname went to %q", split, got)
		}
	}
}

// TestSplitRanksAboveItsRouteOnly: a traffic split's routers take their
// route's requests, and stay in their band: a wildcard's split does not
// take requests for another app's exact custom domain or generated host.
func TestSplitRanksAboveItsRouteOnly(t *testing.T) {
	a := router.Routes(app("dev", "a", "api.shared.example"), testConfig)
	b := router.Routes(app("dev", "b", "*.shared.example", "b.other.example"), testConfig)
	routers := routersOf(a, false)
	for k, v := range routersOf(b, true) {
		routers[k] = v
	}
	mux := routers
	for host, want := range map[string]string{
		a[0].Host:            a[0].Router,
		"api.shared.example": a[0].Name + "--custom-",
		"www.shared.example": b[0].Name + "-split--wildcard",
		"b.other.example":    b[0].Name + "-split--custom",
		b[0].Host:            b[0].Name + "-split",
	} {
		if got := routedTo(t, mux, host); !strings.HasPrefix(got, want) {
			t.Errorf("%s went to %q, want %s...", host, got, want)
		}
	}
	for name, rt := range routers {
		if rt.Priority <= 0 || rt.Priority > router.SplitPriority+router.PriorityGenerated {
			t.Errorf("router %s has priority %d, outside caravan's bands", name, rt.Priority)
		}
	}
}
