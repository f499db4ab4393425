package router_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/router"
)

// TestFirstRouteRanksBelowItsRouteOnly: a first route serves its
// hostnames while its route's own routers are absent, gives way to them
// the moment they appear, and outranks every other app's routers, as the
// route itself does.
func TestFirstRouteRanksBelowItsRouteOnly(t *testing.T) {
	a := app("dev", "a", "api.shared.example")
	rate := 5
	a.Functions[0].Web.RateLimit = &rate
	a.Functions[0].Web.RequiresProxyAuth = true
	cfg := testConfig
	cfg.AuthURL = router.DefaultAuthURL
	ra := router.Routes(a, cfg)[0]
	b := router.Routes(app("evil", "b", "*.caravan.localhost", "*.shared.example"), testConfig)
	first, err := router.First(ra, []string{"http://127.0.0.1:25000"})
	if err != nil {
		t.Fatal(err)
	}

	// Only the first route and another app's wildcards: the first route.
	mux := routersOf(b, false)
	maps.Copy(mux, first.HTTP.Routers)
	for _, host := range []string{ra.Host, "api.shared.example"} {
		got := routedTo(t, mux, host)
		if !strings.HasPrefix(got, ra.Name) || !strings.HasSuffix(got, router.FirstSuffix) {
			t.Errorf("before the route: %s went to %q, want a first router of %s", host, got, ra.Name)
		}
	}
	// With the route's own routers: they take everything.
	maps.Copy(mux, ra.Config.HTTP.Routers)
	for _, host := range []string{ra.Host, "api.shared.example"} {
		if got := routedTo(t, mux, host); strings.HasSuffix(got, router.FirstSuffix) || !strings.HasPrefix(got, ra.Name) {
			t.Errorf("with the route: %s went to %q, want the route's own router", host, got)
		}
	}

	for name, rt := range first.HTTP.Routers {
		orig := ra.Config.HTTP.Routers[strings.TrimSuffix(name, router.FirstSuffix)]
		if orig == nil {
			t.Fatalf("first router %s has no original", name)
		}
		if rt.Priority != orig.Priority-router.FirstPriorityOffset || rt.Rule != orig.Rule {
			t.Errorf("%s: priority %d rule %s; original %d %s", name, rt.Priority, rt.Rule, orig.Priority, orig.Rule)
		}
		if rt.Service != router.FirstService(ra) {
			t.Errorf("%s sends to %s, want %s", name, rt.Service, router.FirstService(ra))
		}
		if len(rt.Middlewares) != len(orig.Middlewares) {
			t.Errorf("%s: middlewares %v, original's %v", name, rt.Middlewares, orig.Middlewares)
		}
		for _, m := range rt.Middlewares {
			if first.HTTP.Middlewares[m] == nil || !strings.HasSuffix(m, router.FirstSuffix) {
				t.Errorf("%s uses middleware %s, which the first route lacks", name, m)
			}
		}
	}
	// The probe's router still ranks above the generated hostname's.
	probe, gen := first.HTTP.Routers[strings.Replace(ra.Router, ra.Name, ra.Name+"--probe", 1)+router.FirstSuffix], first.HTTP.Routers[ra.Router+router.FirstSuffix]
	if probe == nil || gen == nil || probe.Priority <= gen.Priority {
		t.Errorf("probe router %+v, generated %+v: the probe must rank above", probe, gen)
	}
	svc := first.HTTP.Services[router.FirstService(ra)]
	if svc == nil || len(svc.LoadBalancer.Servers) != 1 || svc.LoadBalancer.Servers[0].URL != "http://127.0.0.1:25000" {
		t.Errorf("first service = %+v", svc)
	}
	if got := router.FirstRouters(ra); len(got) != len(first.HTTP.Routers) {
		t.Errorf("FirstRouters = %v, first route has %d routers", got, len(first.HTTP.Routers))
	}
	// The route is untouched.
	for name, rt := range ra.Config.HTTP.Routers {
		if strings.HasSuffix(rt.Service, router.FirstSuffix) || strings.HasSuffix(name, router.FirstSuffix) {
			t.Errorf("First changed its route's router %s: %+v", name, rt)
		}
	}
}

func TestNoFirstRouteForProxiedRoutesOrNoServer(t *testing.T) {
	r := router.Routes(app("dev", "a"), testConfig)[0]
	if _, err := router.First(r, nil); err == nil {
		t.Error("First with no server: no error")
	}
	r.Proxied = true
	if _, err := router.First(r, []string{"http://127.0.0.1:1"}); err == nil {
		t.Error("First of a proxied route: no error")
	}
}
