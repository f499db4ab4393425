package router_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/kvtools/valkeyrie/store"
	ptypes "github.com/traefik/paerser/types"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
	"github.com/traefik/traefik/v3/pkg/config/kv"
)

func canaryApp(strategy string) *spec.App {
	rate := 50
	app := oneWebApp(&spec.Web{RequiresProxyAuth: true, RateLimit: &rate, HealthPath: "/healthz",
		CustomDomains: []string{"hello.example.com"}})
	app.Deploy = &spec.Deploy{Strategy: strategy}
	return app
}

func TestPreviewRoute(t *testing.T) {
	for _, s := range []string{spec.StrategyRolling, spec.StrategyRecreate} {
		if p := router.Routes(canaryApp(s), testConfig)[0].Preview; p != nil {
			t.Errorf("%s: Preview = %q, want none", s, p.Host)
		}
	}
	for _, s := range []string{spec.StrategyCanary, spec.StrategyBlueGreen} {
		r := router.Routes(canaryApp(s), testConfig)[0]
		p := r.Preview
		if p == nil {
			t.Fatalf("%s: no preview route", s)
		}
		if p.Host != "dev--hello-web--canary.caravan.localhost" || p.URL != "https://dev--hello-web--canary.caravan.localhost:8443" {
			t.Errorf("%s: preview %q %q", s, p.Host, p.URL)
		}
		if len(p.CustomDomains) != 0 || !p.ProxyAuth || p.HealthPath != "/healthz" {
			t.Errorf("%s: preview must keep auth and health path, and serve no custom domain: %+v", s, p)
		}
		rt := p.Config.HTTP.Routers[p.Router]
		if rt.Rule != "Host(`dev--hello-web--canary.caravan.localhost`)" || rt.Service != p.Name || len(rt.Middlewares) != 5 {
			t.Errorf("%s: preview router %+v", s, rt)
		}
		if p.Name == r.Name || strings.HasPrefix(p.Router, r.Router) {
			t.Errorf("%s: preview names %q/%q must differ from the route's %q/%q", s, p.Name, p.Router, r.Name, r.Router)
		}
	}
}

// decodeKV reads pairs back through Traefik's own KV decoder, as its Consul
// KV provider does.
func decodeKV(t *testing.T, pairs map[string]string) *dynamic.Configuration {
	t.Helper()
	var kvs []*store.KVPair
	for k, v := range pairs {
		kvs = append(kvs, &store.KVPair{Key: k, Value: []byte(v)})
	}
	got := &dynamic.Configuration{}
	if err := kv.Decode(kvs, got, "traefik"); err != nil {
		t.Fatalf("Traefik cannot decode the split: %v", err)
	}
	return got
}

func TestSplitRoundTripsThroughTraefiksKVDecoder(t *testing.T) {
	cfg := testConfig
	cfg.BodyLimitPlugin = "bodylimit"
	r := router.Routes(canaryApp(spec.StrategyCanary), cfg)[0]
	split := router.Split{Route: r, Servers: []string{"http://127.0.0.1:20001", "http://127.0.0.1:20002"}, Weight: 10}
	want := split.Config()
	pairs, err := router.KV("traefik", want)
	if err != nil {
		t.Fatal(err)
	}
	got := decodeKV(t, pairs)
	if !reflect.DeepEqual(got.HTTP.Routers, want.HTTP.Routers) {
		t.Errorf("routers differ after the round trip:\n got %+v\nwant %+v", got.HTTP.Routers, want.HTTP.Routers)
	}
	// The decoder fills in Traefik's defaults (a rate limit's period, say);
	// what caravan set must come back as it was.
	for name, w := range want.HTTP.Middlewares {
		g := got.HTTP.Middlewares[name]
		switch {
		case g == nil:
			t.Errorf("middleware %s lost in the round trip", name)
		case w.RateLimit != nil && (g.RateLimit == nil || g.RateLimit.Average != w.RateLimit.Average || g.RateLimit.Burst != w.RateLimit.Burst ||
			g.RateLimit.SourceCriterion.RequestHeaderName != router.HeaderRoute):
			t.Errorf("rate limit %s: got %+v, want %+v", name, g.RateLimit, w.RateLimit)
		case w.ForwardAuth != nil && (g.ForwardAuth == nil || g.ForwardAuth.Address != w.ForwardAuth.Address):
			t.Errorf("forward auth %s: got %+v, want %+v", name, g.ForwardAuth, w.ForwardAuth)
		case w.Plugin != nil && !reflect.DeepEqual(g.Plugin, w.Plugin):
			t.Errorf("plugin %s: got %+v, want %+v", name, g.Plugin, w.Plugin)
		case w.Headers != nil && (g.Headers == nil || !reflect.DeepEqual(g.Headers.CustomRequestHeaders, w.Headers.CustomRequestHeaders)):
			t.Errorf("headers %s: got %+v, want %+v", name, g.Headers, w.Headers)
		}
	}

	rt := got.HTTP.Routers["dev--hello-web-split"]
	if rt == nil || rt.Priority != router.PriorityGenerated+router.SplitPriority || rt.Service != "dev--hello-web-split" ||
		rt.Rule != r.Config.HTTP.Routers[r.Router].Rule {
		t.Fatalf("split router %+v", rt)
	}
	custom := got.HTTP.Routers["dev--hello-web-split--custom"]
	if custom == nil || custom.Priority != router.PriorityCustom+router.SplitPriority || custom.Service != "dev--hello-web-split" ||
		custom.Rule != "Host(`hello.example.com`)" {
		t.Fatalf("split router for the custom domain %+v", custom)
	}
	w := got.HTTP.Services["dev--hello-web-split"].Weighted
	if w == nil || len(w.Services) != 2 || w.Services[0].Name != "dev--hello-web@consulcatalog" || *w.Services[0].Weight != 90 ||
		w.Services[1].Name != "dev--hello-web-next-or-live" || *w.Services[1].Weight != 10 {
		t.Fatalf("weighted service %+v", w)
	}
	if f := got.HTTP.Services["dev--hello-web-next-or-live"].Failover; f == nil || f.Service != "dev--hello-web-next" ||
		f.Fallback != "dev--hello-web@consulcatalog" || f.HealthCheck != nil {
		t.Fatalf("failover service %+v: the canaries' share must fall back to the live version", f)
	}
	lb := got.HTTP.Services["dev--hello-web-next"].LoadBalancer
	if lb == nil || len(lb.Servers) != 2 || lb.Servers[1].URL != "http://127.0.0.1:20002" || !*lb.PassHostHeader {
		t.Fatalf("next service %+v", lb)
	}
	if hc := lb.HealthCheck; hc == nil || hc.Path != "/healthz" || hc.Interval != ptypes.Duration(time.Second) || hc.Timeout != ptypes.Duration(3*time.Second) {
		t.Fatalf("next service health check %+v", lb.HealthCheck)
	}
}

func TestSplitPrefixesCoverEveryKey(t *testing.T) {
	r := router.Routes(canaryApp(spec.StrategyCanary), testConfig)[0]
	pairs, err := router.KV("traefik", router.Split{Route: r, Servers: []string{"http://127.0.0.1:1"}, Weight: 10}.Config())
	if err != nil {
		t.Fatal(err)
	}
	prefixes := router.SplitPrefixes("traefik", r)
	for k := range pairs {
		if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(k, p) }) {
			t.Errorf("key %s is under none of %v", k, prefixes)
		}
	}
	other := router.Routes(canaryApp(spec.StrategyCanary), router.Config{Domain: "other.example"})[0]
	for _, p := range prefixes {
		if strings.HasPrefix(p, "traefik/http/routers/"+other.Router) {
			t.Errorf("prefix %s covers the route's own router", p)
		}
	}
}

func TestSplitAllTrafficSkipsTheWeightedService(t *testing.T) {
	r := router.Routes(canaryApp(spec.StrategyBlueGreen), testConfig)[0]
	pairs, err := router.KV("traefik", router.Split{Route: r, Servers: []string{"http://127.0.0.1:20001"}, Weight: 100}.Config())
	if err != nil {
		t.Fatal(err)
	}
	got := decodeKV(t, pairs)
	if rt := got.HTTP.Routers["dev--hello-web-split"]; rt == nil || rt.Service != "dev--hello-web-next-or-live" {
		t.Fatalf("split router %+v, want it on the new containers alone", rt)
	}
	if _, ok := got.HTTP.Services["dev--hello-web-split"]; ok {
		t.Error("a full switch needs no weighted service")
	}
}
