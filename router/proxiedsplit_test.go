package router_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
)

func proxiedCanaryApp(strategy string) *spec.App {
	app := canaryApp(strategy)
	app.Functions[0].Scaling = &spec.Scaling{MinContainers: 1, MaxContainers: 3}
	return app
}

// headersOf merges the request headers rt's middlewares set, in order.
func headersOf(c *dynamic.Configuration, rt *dynamic.Router) (map[string]string, []string) {
	out := map[string]string{}
	var order []string
	for _, m := range rt.Middlewares {
		mw := c.HTTP.Middlewares[m]
		if mw == nil || mw.Headers == nil {
			continue
		}
		for k, v := range mw.Headers.CustomRequestHeaders {
			out[k] = v
			order = append(order, k)
		}
	}
	return out, order
}

func TestProxiedPreviewRoute(t *testing.T) {
	if router.HeaderSplit != proxy.HeaderSplit || router.SplitCanary != proxy.SplitCanary {
		t.Fatalf("router's split header %q/%q is not the proxy's %q/%q", router.HeaderSplit, router.SplitCanary, proxy.HeaderSplit, proxy.SplitCanary)
	}
	for _, s := range []string{spec.StrategyCanary, spec.StrategyBlueGreen} {
		r := router.Routes(proxiedCanaryApp(s), router.DefaultConfig)[0]
		p := r.Preview
		if !r.Proxied || p == nil || !p.Proxied {
			t.Fatalf("%s: route proxied %v, preview %+v: both must be proxied", s, r.Proxied, p)
		}
		for _, c := range []struct {
			route *router.Route
			split string
		}{{&r, ""}, {p, router.SplitCanary}} {
			for name, rt := range c.route.Config.HTTP.Routers {
				if rt.Service != router.DefaultProxyService {
					t.Errorf("%s: router %s sends to %q, want the proxies", s, name, rt.Service)
				}
				h, _ := headersOf(c.route.Config, rt)
				// The canaries register as the function's service: the
				// preview names it, and selects them by the split header.
				if h[router.HeaderFunction] != r.Name {
					t.Errorf("%s: router %s sets %s to %q, want %q", s, name, router.HeaderFunction, h[router.HeaderFunction], r.Name)
				}
				if v, ok := h[router.HeaderSplit]; !ok || v != c.split {
					t.Errorf("%s: router %s sets %s to %q (set %v), want %q (an empty value removes a client's)", s, name, router.HeaderSplit, v, ok, c.split)
				}
			}
		}
	}
}

func TestProxiedSplit(t *testing.T) {
	r := router.Routes(proxiedCanaryApp(spec.StrategyCanary), router.DefaultConfig)[0]
	servers := []string{"http://10.0.0.6:23002", "http://10.0.0.5:23001"}
	for _, weight := range []int{30, 100} {
		c := router.Split{Route: r, Servers: servers, Weight: weight}.Config()
		if len(c.HTTP.Services) != 0 {
			t.Errorf("weight %d: services %v; a proxied split sends to the proxies alone", weight, c.HTTP.Services)
		}
		if len(c.HTTP.Middlewares) != 1 {
			t.Errorf("weight %d: middlewares %v, want the split's alone (the route's are published with it)", weight, c.HTTP.Middlewares)
		}
		want := map[string]int{}
		for _, rt := range r.Config.HTTP.Routers {
			if rt.Priority != router.PriorityProbe {
				want[rt.Rule] = rt.Priority + router.SplitPriority
			}
		}
		if len(c.HTTP.Routers) != len(want) {
			t.Fatalf("weight %d: %d routers, want %d", weight, len(c.HTTP.Routers), len(want))
		}
		for name, rt := range c.HTTP.Routers {
			if rt.Service != router.DefaultProxyService || want[rt.Rule] != rt.Priority {
				t.Errorf("weight %d: router %s: service %q priority %d, want the proxies at %d", weight, name, rt.Service, rt.Priority, want[rt.Rule])
			}
			merged := &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{Middlewares: map[string]*dynamic.Middleware{}}}
			for k, v := range r.Config.HTTP.Middlewares {
				merged.HTTP.Middlewares[k] = v
			}
			for k, v := range c.HTTP.Middlewares {
				merged.HTTP.Middlewares[k] = v
			}
			h, order := headersOf(merged, rt)
			wantSplit := proxy.SplitHeader(weight, []string{"10.0.0.5:23001", "10.0.0.6:23002"})
			if h[router.HeaderSplit] != wantSplit || h[router.HeaderFunction] != r.Name {
				t.Errorf("weight %d: router %s sets %v, want %s %q", weight, name, h, router.HeaderSplit, wantSplit)
			}
			// The split's value comes after the function's middleware
			// removes what a client sent.
			if order[len(order)-1] != router.HeaderSplit {
				t.Errorf("weight %d: router %s sets headers in order %v; the split's must be last", weight, name, order)
			}
			for _, m := range rt.Middlewares {
				if merged.HTTP.Middlewares[m] == nil {
					t.Errorf("weight %d: router %s uses middleware %s, which neither the route nor the split defines", weight, name, m)
				}
			}
		}
		pairs, err := router.KV("traefik", c)
		if err != nil {
			t.Fatal(err)
		}
		back := decodeKV(t, pairs)
		if len(back.HTTP.Routers) != len(c.HTTP.Routers) || len(back.HTTP.Middlewares) != 1 {
			t.Errorf("weight %d: the KV decodes to %d routers and %d middlewares", weight, len(back.HTTP.Routers), len(back.HTTP.Middlewares))
		}
		// Removing the split keeps the route's own middlewares: its
		// routers in KV use them.
		prefixes := router.SplitPrefixes("traefik", r)
		for k := range pairs {
			if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(k, p) }) {
				t.Errorf("weight %d: key %s outside the split's prefixes %v", weight, k, prefixes)
			}
		}
		for m := range r.Config.HTTP.Middlewares {
			if slices.Contains(prefixes, "traefik/http/middlewares/"+m+"/") {
				t.Errorf("the split's prefixes hold the route's middleware %s", m)
			}
		}
	}
}

// A canary deployed while its function was at zero runs as a function of
// its own, the preview's service: the preview's routers name it, and the
// split sends its share there.
func TestFunctionPreviewAndSplit(t *testing.T) {
	r := router.Routes(proxiedCanaryApp(spec.StrategyCanary), router.DefaultConfig)[0]
	p := r.FunctionPreview()
	if p == nil {
		t.Fatal("no function preview for a proxied canary route")
	}
	if p.Name != r.Preview.Name || p.Router != r.Preview.Router || !slices.Equal(routerNames(p), routerNames(r.Preview)) {
		t.Errorf("the function preview renames its routers: %v, want %v", routerNames(p), routerNames(r.Preview))
	}
	for name, rt := range p.Config.HTTP.Routers {
		h, _ := headersOf(p.Config, rt)
		if h[router.HeaderFunction] != r.Preview.Name || h[router.HeaderSplit] != "" {
			t.Errorf("function preview router %s sets %v, want %s %q and no split", name, h, router.HeaderFunction, r.Preview.Name)
		}
	}
	// The route's own preview is untouched.
	for _, rt := range r.Preview.Config.HTTP.Routers {
		if h, _ := headersOf(r.Preview.Config, rt); h[router.HeaderFunction] != r.Name || h[router.HeaderSplit] != router.SplitCanary {
			t.Errorf("FunctionPreview changed the route's preview: %v", h)
		}
	}
	c := router.Split{Route: r, Function: p.Name, Weight: 10}.Config()
	if got, want := c.HTTP.Middlewares[r.Name+"-split"].Headers.CustomRequestHeaders[router.HeaderSplit],
		proxy.SplitFunctionHeader(10, p.Name); got != want {
		t.Errorf("split to the function: %s %q, want %q", router.HeaderSplit, got, want)
	}
	direct := router.Routes(canaryApp(spec.StrategyCanary), router.DefaultConfig)[0]
	if direct.FunctionPreview() != nil {
		t.Error("a route straight to its containers has a function preview")
	}
}

func routerNames(r *router.Route) []string {
	var out []string
	for name := range r.Config.HTTP.Routers {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// TestProxiedSplitInTraefik: with the proxy inside Traefik, a split's
// header middleware comes before the proxy plugin (a middleware after it
// would never run), on every split router, and the plugin stays last.
func TestProxiedSplitInTraefik(t *testing.T) {
	cfg := router.DefaultConfig
	cfg.ProxyPlugin = "caravan"
	r := router.Routes(proxiedCanaryApp(spec.StrategyCanary), cfg)[0]
	for _, s := range []router.Split{
		{Route: r, Servers: []string{"http://10.0.0.5:23001"}, Weight: 20},
		{Route: r, Function: "dev--shop-api--canary", Weight: 20},
	} {
		c := s.Config()
		if len(c.HTTP.Routers) == 0 {
			t.Fatal("no split routers")
		}
		for name, rt := range c.HTTP.Routers {
			n := len(rt.Middlewares)
			last, prev := r.Config.HTTP.Middlewares[rt.Middlewares[n-1]], c.HTTP.Middlewares[rt.Middlewares[n-2]]
			if last == nil || last.Plugin["caravan"] == nil {
				t.Errorf("split router %s: last middleware %s is not the proxy plugin", name, rt.Middlewares[n-1])
			}
			if prev == nil || prev.Headers == nil || prev.Headers.CustomRequestHeaders[router.HeaderSplit] == "" {
				t.Errorf("split router %s: the split's header is not right before the plugin: %v", name, rt.Middlewares)
			}
			if rt.Service != router.NoopService {
				t.Errorf("split router %s sends to %q, want %q", name, rt.Service, router.NoopService)
			}
		}
	}
}
