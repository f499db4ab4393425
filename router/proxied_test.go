package router_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
)

func TestProxied(t *testing.T) {
	scaled := &spec.Scaling{MinContainers: 0, MaxContainers: 3}
	fixed := &spec.Scaling{MinContainers: 2, MaxContainers: 2}
	cases := []struct {
		name     string
		strategy string
		scaling  *spec.Scaling
		noWeb    bool
		cfg      router.Config
		want     bool
	}{
		{name: "autoscaled rolling", scaling: scaled, cfg: router.DefaultConfig, want: true},
		{name: "autoscaled recreate", strategy: spec.StrategyRecreate, scaling: scaled, cfg: router.DefaultConfig, want: true},
		{name: "min 1 max 4", scaling: &spec.Scaling{MinContainers: 1, MaxContainers: 4}, cfg: router.DefaultConfig, want: true},
		{name: "fixed count", scaling: fixed, cfg: router.DefaultConfig},
		{name: "hand-built function (nil Scaling)", cfg: router.DefaultConfig},
		{name: "autoscaled canary", strategy: spec.StrategyCanary, scaling: scaled, cfg: router.DefaultConfig, want: true},
		{name: "autoscaled blue-green", strategy: spec.StrategyBlueGreen, scaling: scaled, cfg: router.DefaultConfig, want: true},
		{name: "fixed canary", strategy: spec.StrategyCanary, scaling: fixed, cfg: router.DefaultConfig},
		{name: "no proxies configured", scaling: scaled, cfg: testConfig},
		{name: "the proxy inside Traefik alone", scaling: scaled, cfg: router.Config{ProxyPlugin: "caravan"}, want: true},
		{name: "no web", scaling: scaled, noWeb: true, cfg: router.DefaultConfig},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			app := oneWebApp(&spec.Web{})
			if c.strategy != "" {
				app.Deploy = &spec.Deploy{Strategy: c.strategy}
			}
			fn := app.Functions[0]
			fn.Scaling = c.scaling
			if c.noWeb {
				fn.Web = nil
			}
			if got := router.Proxied(app, fn, c.cfg); got != c.want {
				t.Errorf("Proxied = %v, want %v", got, c.want)
			}
		})
	}
}

func TestProxiedRoute(t *testing.T) {
	app := oneWebApp(&spec.Web{})
	app.Functions[0].Scaling = &spec.Scaling{MinContainers: 0, MaxContainers: 3}
	r := router.Routes(app, router.DefaultConfig)[0]
	if !r.Proxied {
		t.Fatal("route not proxied")
	}
	if len(r.Config.HTTP.Services) != 0 {
		t.Errorf("services %v: a proxied route defines none of its own", r.Config.HTTP.Services)
	}
	for name, rt := range r.Config.HTTP.Routers {
		if rt.Service != router.DefaultProxyService {
			t.Errorf("router %s sends to %q, want %q", name, rt.Service, router.DefaultProxyService)
		}
		found := false
		for _, m := range rt.Middlewares {
			if mw := r.Config.HTTP.Middlewares[m]; mw != nil && mw.Headers != nil && mw.Headers.CustomRequestHeaders[router.HeaderFunction] == r.Name {
				found = true
			}
		}
		if !found {
			t.Errorf("router %s does not set %s to %s", name, router.HeaderFunction, r.Name)
		}
		// Last: a request no proxy accepted is tried again (after the
		// other middlewares, which do not run twice).
		last := r.Config.HTTP.Middlewares[rt.Middlewares[len(rt.Middlewares)-1]]
		if last == nil || last.Retry == nil || last.Retry.Attempts != router.ProxyRetryAttempts || last.Retry.InitialInterval <= 0 {
			t.Errorf("router %s's last middleware is %+v, want the proxies' retry", name, last)
		}
	}
	direct := router.Routes(oneWebApp(&spec.Web{}), router.DefaultConfig)[0]
	for name, rt := range direct.Config.HTTP.Routers {
		// Last, straight to the containers: the next one at once, no
		// interval (tags cannot carry one), fewer attempts than a proxy's.
		last := direct.Config.HTTP.Middlewares[rt.Middlewares[len(rt.Middlewares)-1]]
		if last == nil || last.Retry == nil || last.Retry.Attempts != router.DirectRetryAttempts || last.Retry.InitialInterval != 0 {
			t.Errorf("direct router %s's last middleware is %+v, want the containers' retry", name, last)
		}
	}
	kv, err := r.KV("traefik")
	if err != nil {
		t.Fatal(err)
	}
	if kv["traefik/http/routers/"+r.Router+"/service"] != router.DefaultProxyService {
		t.Errorf("KV lacks the router's service: %v", kv)
	}
}

func TestProxyServices(t *testing.T) {
	if c := router.ProxyServices(nil); len(c.HTTP.Services) != 0 {
		t.Errorf("no proxies: %d services, want none", len(c.HTTP.Services))
	}
	one := router.ProxyServices([]router.ProxyServer{{URL: "http://127.0.0.1:7480", HealthPort: 7481}})
	if w := one.HTTP.Services[router.ProxiesName].Weighted; w == nil || w.Services[0].Name != "caravan-proxy-0" {
		t.Errorf("one proxy: %+v", one.HTTP.Services[router.ProxiesName])
	}
	three := router.ProxyServices([]router.ProxyServer{{"http://a:1", 2}, {"http://b:1", 2}, {"http://c:1", 2}})
	s := three.HTTP.Services
	if f := s[router.ProxiesName].Failover; f == nil || f.Service != "caravan-proxy-0" || f.Fallback != "caravan-proxies-1" || f.HealthCheck != nil {
		t.Errorf("head of the chain: %+v", s[router.ProxiesName].Failover)
	}
	if f := s["caravan-proxies-1"].Failover; f == nil || f.Service != "caravan-proxy-1" || f.Fallback != "caravan-proxy-2" || f.HealthCheck != nil {
		t.Errorf("second link: %+v", s["caravan-proxies-1"].Failover)
	}
	// Traefik's KV provider reads every chain, of any length (an empty
	// section such as a failover's healthCheck would fail the whole KV
	// configuration).
	for n := 1; n <= 4; n++ {
		var ps []router.ProxyServer
		for i := range n {
			ps = append(ps, router.ProxyServer{URL: fmt.Sprintf("http://10.0.0.%d:7480", i+1), HealthPort: 7481})
		}
		pairs, err := router.KV("traefik", router.ProxyServices(ps))
		if err != nil {
			t.Fatal(err)
		}
		got := decodeKV(t, pairs)
		if len(got.HTTP.Services) == 0 || got.HTTP.Services[router.ProxiesName] == nil {
			t.Errorf("%d proxies: Traefik's KV decoder reads no %s: %v", n, router.ProxiesName, got.HTTP.Services)
		}
	}
	lb := s["caravan-proxy-2"].LoadBalancer
	if lb == nil || lb.Servers[0].URL != "http://c:1" || lb.HealthCheck.Port != 2 || lb.HealthCheck.Path != "/healthz" {
		t.Errorf("third proxy: %+v", lb)
	}
	for name := range s {
		if len(name) < len(router.ProxiesPrefix) || name[:len(router.ProxiesPrefix)] != router.ProxiesPrefix {
			t.Errorf("service %s does not start with %s", name, router.ProxiesPrefix)
		}
	}
}

// TestProxiedRouteInTraefik: with the proxy inside Traefik (ProxyPlugin),
// a proxied route's routers end in the plugin, which answers every
// request, and name Traefik's noop service; nothing retries (the proxy is
// in the same process); a function at a fixed count is routed as before.
func TestProxiedRouteInTraefik(t *testing.T) {
	cfg := router.DefaultConfig
	cfg.ProxyPlugin = "caravan"
	app := oneWebApp(&spec.Web{})
	app.Functions[0].Scaling = &spec.Scaling{MinContainers: 0, MaxContainers: 3}
	r := router.Routes(app, cfg)[0]
	if !r.Proxied {
		t.Fatal("route not proxied")
	}
	if cfg.ProxiedService() != router.NoopService {
		t.Errorf("ProxiedService = %q, want %q", cfg.ProxiedService(), router.NoopService)
	}
	for name, rt := range r.Config.HTTP.Routers {
		if rt.Service != router.NoopService {
			t.Errorf("router %s sends to %q, want %q", name, rt.Service, router.NoopService)
		}
		last := r.Config.HTTP.Middlewares[rt.Middlewares[len(rt.Middlewares)-1]]
		if last == nil || last.Plugin["caravan"] == nil {
			t.Errorf("router %s's last middleware is %+v, want the caravan plugin", name, last)
		}
		for _, m := range rt.Middlewares {
			if mw := r.Config.HTTP.Middlewares[m]; mw != nil && mw.Retry != nil {
				t.Errorf("router %s retries (%s): nothing to retry inside Traefik", name, m)
			}
		}
	}
	kv, err := r.KV("traefik")
	if err != nil {
		t.Fatal(err)
	}
	var plugin bool
	for k := range kv {
		plugin = plugin || strings.Contains(k, "/plugin/caravan/")
	}
	if !plugin || kv["traefik/http/routers/"+r.Router+"/service"] != router.NoopService {
		t.Errorf("KV lacks the plugin or the noop service: %v", kv)
	}
	fixed := oneWebApp(&spec.Web{})
	fixed.Functions[0].Scaling = &spec.Scaling{MinContainers: 2, MaxContainers: 2}
	if d := router.Routes(fixed, cfg)[0]; d.Proxied || len(d.Config.HTTP.Services) != 1 {
		t.Errorf("a fixed count is routed to its containers: proxied %v, services %v", d.Proxied, d.Config.HTTP.Services)
	}
}
