package router_test

import (
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
	"github.com/traefik/traefik/v3/pkg/config/label"
	"github.com/traefik/traefik/v3/pkg/types"
)

var testConfig = router.Config{Domain: "caravan.localhost", EntryPoint: "websecure", CertResolver: "caravan", HTTPSPort: 8443}

// storeApp is examples/multi.hcl, built by hand: two web functions (one with
// a label and a custom domain) and a worker.
func storeApp() *spec.App {
	return &spec.App{
		Name:        "store",
		Workspace:   "shop",
		Environment: "staging",
		Functions: []*spec.Function{
			{Name: "frontend", Command: "node", Web: &spec.Web{}},
			{Name: "api", Command: "node", Web: &spec.Web{Label: "api", CustomDomains: []string{"api.shop.example.com"}}},
			{Name: "worker", Command: "node"},
		},
	}
}

func oneWebApp(web *spec.Web) *spec.App {
	return &spec.App{
		Name:      "hello",
		Workspace: "dev",
		Functions: []*spec.Function{{Name: "web", Command: "node", Web: web}},
	}
}

func TestRoutes(t *testing.T) {
	routes := router.Routes(storeApp(), testConfig)
	if len(routes) != 2 {
		t.Fatalf("got %d routes, want 2 (the worker has no web block)", len(routes))
	}
	want := []struct {
		function, name, host, url string
		domains                   []string
	}{
		{"frontend", "shop-staging--store-frontend", "shop-staging--store-frontend.caravan.localhost", "https://shop-staging--store-frontend.caravan.localhost:8443", nil},
		{"api", "shop-staging--api", "shop-staging--api.caravan.localhost", "https://shop-staging--api.caravan.localhost:8443", []string{"api.shop.example.com"}},
	}
	for i, w := range want {
		r := routes[i]
		if r.Function != w.function || r.Name != w.name || r.Host != w.host || r.URL != w.url || !slices.Equal(r.CustomDomains, w.domains) {
			t.Errorf("routes[%d] = {%q %q %q %q %q}, want %+v", i, r.Function, r.Name, r.Host, r.URL, r.CustomDomains, w)
		}
		rt := r.Config.HTTP.Routers[r.Router]
		if rt == nil || r.Config.HTTP.Services[r.Name] == nil {
			t.Errorf("routes[%d]: no router or service named %q", i, r.Name)
		}
	}
	if rule := routes[1].Config.HTTP.Routers[routes[1].Router].Rule; rule != "Host(`shop-staging--api.caravan.localhost`)" {
		t.Errorf("api rule = %s", rule)
	}
	custom := routes[1].Config.HTTP.Routers[strings.Replace(routes[1].Router, "shop-staging--api", "shop-staging--api--custom", 1)]
	if custom == nil || custom.Rule != "Host(`api.shop.example.com`)" || custom.Priority != router.PriorityCustom || custom.Service != "shop-staging--api" {
		t.Errorf("custom domain router %+v", custom)
	}
}

func TestRouteURLPort(t *testing.T) {
	for port, want := range map[int]string{
		0:    "https://dev--hello-web.caravan.localhost",
		443:  "https://dev--hello-web.caravan.localhost",
		8443: "https://dev--hello-web.caravan.localhost:8443",
		80:   "https://dev--hello-web.caravan.localhost:80",
	} {
		cfg := testConfig
		cfg.HTTPSPort = port
		if got := router.Routes(oneWebApp(&spec.Web{}), cfg)[0].URL; got != want {
			t.Errorf("HTTPSPort %d: URL = %q, want %q", port, got, want)
		}
	}
}

func TestRouteNormalizesDomains(t *testing.T) {
	cfg := testConfig
	cfg.Domain = "Caravan.Example.COM"
	r := router.Routes(oneWebApp(&spec.Web{CustomDomains: []string{"WWW.Example.com."}}), cfg)[0]
	if r.Host != "dev--hello-web.caravan.example.com" {
		t.Errorf("Host = %q", r.Host)
	}
	if !slices.Equal(r.CustomDomains, []string{"www.example.com"}) {
		t.Errorf("CustomDomains = %q", r.CustomDomains)
	}
}

func TestServiceNameTruncated(t *testing.T) {
	app := oneWebApp(&spec.Web{})
	app.Name = strings.Repeat("a", 63)
	r := router.Routes(app, testConfig)[0]
	if len(r.Name) > router.MaxLabel || r.Name != router.ServiceName(app, app.Functions[0]) {
		t.Errorf("Name = %q", r.Name)
	}
	if !strings.HasPrefix(r.Host, r.Name+".") {
		t.Errorf("Host %q does not start with Name %q", r.Host, r.Name)
	}
}

// decodeTags reads tags back the way Traefik's consulCatalog provider does.
func decodeTags(t *testing.T, tags []string) *dynamic.Configuration {
	t.Helper()
	labels := map[string]string{}
	enabled := false
	for _, tag := range tags {
		if tag == "traefik.enable=true" {
			enabled = true
			continue
		}
		k, v, ok := strings.Cut(tag, "=")
		if !ok {
			t.Fatalf("tag %q has no =", tag)
		}
		if _, dup := labels[k]; dup {
			t.Fatalf("key %q tagged twice", k)
		}
		labels[k] = v
	}
	if !enabled {
		t.Fatalf("tags %q lack traefik.enable=true", tags)
	}
	conf, err := label.DecodeConfiguration(labels)
	if err != nil {
		t.Fatalf("DecodeConfiguration: %v", err)
	}
	return conf
}

func TestTagsRoundTrip(t *testing.T) {
	apps := map[string]*spec.App{
		"store":    storeApp(),
		"wildcard": oneWebApp(&spec.Web{CustomDomains: []string{"*.example.com", "example.com"}}),
	}
	noResolver := testConfig
	noResolver.CertResolver = ""
	for _, cfg := range []router.Config{testConfig, noResolver} {
		for name, app := range apps {
			for _, r := range router.Routes(app, cfg) {
				t.Run(name+"/"+r.Name+"/resolver="+cfg.CertResolver, func(t *testing.T) {
					tags, err := r.Tags()
					if err != nil {
						t.Fatal(err)
					}
					if !slices.IsSorted(tags) {
						t.Errorf("tags are not sorted: %q", tags)
					}
					conf := decodeTags(t, tags)
					want := r.Config.HTTP.Routers[r.Router]
					got := conf.HTTP.Routers[r.Router]
					if got == nil {
						t.Fatalf("decoded routers %v lack %q", conf.HTTP.Routers, r.Name)
					}
					if len(conf.HTTP.Routers) != len(r.Config.HTTP.Routers) || len(conf.HTTP.Services) != 1 {
						t.Errorf("decoded %d routers and %d services, want %d and 1", len(conf.HTTP.Routers), len(conf.HTTP.Services), len(r.Config.HTTP.Routers))
					}
					for name, rt := range r.Config.HTTP.Routers {
						if g := conf.HTTP.Routers[name]; g == nil || g.Priority != rt.Priority || g.Priority == 0 {
							t.Errorf("router %s decoded as %+v, want priority %d", name, g, rt.Priority)
						}
					}
					if got.Rule != want.Rule {
						t.Errorf("Rule = %s, want %s", got.Rule, want.Rule)
					}
					if got.Service != want.Service || got.Service != r.Name {
						t.Errorf("Service = %q, want %q", got.Service, want.Service)
					}
					if !slices.Equal(got.EntryPoints, want.EntryPoints) || !slices.Equal(got.EntryPoints, []string{"websecure"}) {
						t.Errorf("EntryPoints = %q, want %q", got.EntryPoints, want.EntryPoints)
					}
					// A router without TLS would serve plain HTTP on the
					// HTTPS entry point, even with no resolver.
					if got.TLS == nil {
						t.Fatal("decoded router has no TLS")
					}
					if got.TLS.CertResolver != want.TLS.CertResolver || got.TLS.CertResolver != cfg.CertResolver {
						t.Errorf("CertResolver = %q, want %q", got.TLS.CertResolver, want.TLS.CertResolver)
					}
					if !slices.EqualFunc(got.TLS.Domains, want.TLS.Domains, domainEqual) {
						t.Errorf("TLS domains = %+v, want %+v", got.TLS.Domains, want.TLS.Domains)
					}
					svc := conf.HTTP.Services[r.Name]
					if svc == nil || svc.LoadBalancer == nil || svc.LoadBalancer.PassHostHeader == nil || !*svc.LoadBalancer.PassHostHeader {
						t.Errorf("service %q does not pass the Host header: %+v", r.Name, svc)
					}
				})
			}
		}
	}
}

func domainEqual(a, b types.Domain) bool { return a.Main == b.Main && slices.Equal(a.SANs, b.SANs) }

func TestWildcardDomain(t *testing.T) {
	r := router.Routes(oneWebApp(&spec.Web{CustomDomains: []string{"*.Example.com"}}), testConfig)[0]
	rt := r.Config.HTTP.Routers[r.Router]
	if want := "Host(`dev--hello-web.caravan.localhost`)"; rt.Rule != want || rt.Priority != router.PriorityGenerated {
		t.Errorf("Rule = %s (priority %d), want %s", rt.Rule, rt.Priority, want)
	}
	wc := r.Config.HTTP.Routers[strings.Replace(r.Router, "dev--hello-web", "dev--hello-web--wildcard", 1)]
	if want := "HostRegexp(`^[a-z0-9-]+\\.example\\.com$`)"; wc == nil || wc.Rule != want || wc.Priority != router.PriorityWildcard {
		t.Fatalf("wildcard router %+v, want rule %s", wc, want)
	}
	if !reflect.DeepEqual(wc.TLS, rt.TLS) {
		t.Errorf("wildcard router TLS %+v, want the route's %+v: one set of certificates", wc.TLS, rt.TLS)
	}
	// Every name is listed (Traefik cannot read one off a HostRegexp), and
	// the DNS-01 resolver issues them (ACME issues wildcards only so).
	var names []string
	for _, d := range rt.TLS.Domains {
		names = append(names, d.Main)
	}
	if !slices.Equal(names, []string{"dev--hello-web.caravan.localhost", "*.example.com"}) {
		t.Errorf("TLS domains = %v, want the generated host and *.example.com", names)
	}
	if rt.TLS.CertResolver != "caravan" {
		t.Errorf("without a DNS resolver configured, CertResolver = %q, want caravan", rt.TLS.CertResolver)
	}
	dnsCfg := testConfig
	dnsCfg.DNSCertResolver = "caravan-dns"
	r2 := router.Routes(oneWebApp(&spec.Web{CustomDomains: []string{"*.Example.com"}}), dnsCfg)[0]
	if got := r2.Config.HTTP.Routers[r2.Router].TLS.CertResolver; got != "caravan-dns" {
		t.Errorf("wildcard route CertResolver = %q, want caravan-dns", got)
	}
	// The generated hostname's router names the platform wildcard then
	// (TestGeneratedHostnamesUseThePlatformWildcard), the custom domains'
	// keep theirs (TestCustomDomainsKeepTheirOwnCertificates).
	re := regexp.MustCompile(`^[a-z0-9-]+\.example\.com$`)
	for host, want := range map[string]bool{
		"www.example.com": true, "a-b.example.com": true,
		"example.com": false, "a.b.example.com": false, "wwwxexample.com": false, "www.example.com.evil.org": false,
	} {
		if re.MatchString(host) != want {
			t.Errorf("wildcard regexp on %q = %v, want %v", host, !want, want)
		}
	}
}

func TestExactDomainHasNoTLSDomain(t *testing.T) {
	r := router.Routes(oneWebApp(&spec.Web{CustomDomains: []string{"www.example.com"}}), testConfig)[0]
	if d := r.Config.HTTP.Routers[r.Router].TLS.Domains; len(d) != 0 {
		t.Errorf("TLS domains = %+v, want none (the resolver takes the names from Host rules)", d)
	}
}

func TestMerge(t *testing.T) {
	routes := router.Routes(storeApp(), testConfig)
	merged := router.Merge(routes)
	if len(merged.HTTP.Routers) != 3 || len(merged.HTTP.Services) != 2 {
		t.Fatalf("merged %d routers and %d services, want 3 (the custom domain has its own) and 2", len(merged.HTTP.Routers), len(merged.HTTP.Services))
	}
	for _, r := range routes {
		if merged.HTTP.Routers[r.Router] != r.Config.HTTP.Routers[r.Router] {
			t.Errorf("router %q not merged", r.Name)
		}
		if merged.HTTP.Services[r.Name] != r.Config.HTTP.Services[r.Name] {
			t.Errorf("service %q not merged", r.Name)
		}
	}
	if empty := router.Merge(nil); empty.HTTP == nil || len(empty.HTTP.Routers) != 0 {
		t.Errorf("Merge(nil) = %+v", empty)
	}
}

// TestMiddlewaresSurviveTheTags decodes the tags as Traefik will and checks
// the middlewares come back as rendered (durations included: Traefik's
// encoder and decoder disagree on their unit).
func TestMiddlewaresSurviveTheTags(t *testing.T) {
	app := &spec.App{Name: "hello", Workspace: "dev", Functions: []*spec.Function{{Name: "web", Web: &spec.Web{}}}}
	r := router.Routes(app, router.DefaultConfig)[0]
	tags, err := r.Tags()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{}
	for _, tag := range tags {
		k, v, _ := strings.Cut(tag, "=")
		if k != "traefik.enable" {
			labels[k] = v
		}
	}
	got, err := label.DecodeConfiguration(labels)
	if err != nil {
		t.Fatal(err)
	}
	suffix := strings.TrimPrefix(r.Router, "dev--hello-web")
	if len(suffix) != 7 {
		t.Fatalf("router %q: want dev--hello-web and a 6-hex-digit settings hash", r.Router)
	}
	tagName, rlName, blName, stripName := "dev--hello-web-route"+suffix, "dev--hello-web-ratelimit"+suffix, "dev--hello-web-bodylimit"+suffix, "dev--hello-web-strip-auth"+suffix
	retryName := "dev--hello-web-retry" + suffix
	if !reflect.DeepEqual(got.HTTP.Middlewares, r.Config.HTTP.Middlewares) {
		t.Fatalf("middlewares after the tags:\n%+v\nrendered:\n%+v", got.HTTP.Middlewares[rlName].RateLimit,
			r.Config.HTTP.Middlewares[rlName].RateLimit)
	}
	rl := got.HTTP.Middlewares[rlName].RateLimit
	if rl.Average != 200 || rl.Burst != 1000 || rl.SourceCriterion.RequestHeaderName != router.HeaderRoute || rl.SourceCriterion.RequestHost ||
		rl.Period != 0 {
		t.Fatalf("rate limit %+v (%+v), want 200/s burst 1000 per route with Traefik's default period", rl, rl.SourceCriterion)
	}
	if h := got.HTTP.Middlewares[tagName].Headers; h == nil || !maps.Equal(h.CustomRequestHeaders, map[string]string{router.HeaderRoute: "dev--hello-web"}) {
		t.Fatalf("route header middleware %+v, want %s set to the route's name", h, router.HeaderRoute)
	}
	if mws := got.HTTP.Routers[r.Router].Middlewares; !slices.Equal(mws, []string{tagName, rlName, blName, stripName, retryName}) {
		t.Fatalf("router middlewares %v, want the route header, the rate limit, the body limit, the credential strip, then the retry", mws)
	}
	if rt := got.HTTP.Middlewares[retryName].Retry; rt == nil || rt.Attempts != router.DirectRetryAttempts || rt.InitialInterval != 0 {
		t.Fatalf("retry after the tags %+v, want %d attempts at once", rt, router.DirectRetryAttempts)
	}
	if pc := got.HTTP.Middlewares[blName].Plugin["bodylimit"]; pc["maxBytes"] != "4294967296" {
		t.Fatalf("body limit plugin config %v, want maxBytes 4 GiB", pc)
	}
	zero := 0
	app.Functions[0].Web.RateLimit = &zero
	r0 := router.Routes(app, router.DefaultConfig)[0]
	if r0.Router == r.Router {
		t.Fatal("changing the rate limit kept the router's name: old and new containers would conflict in Traefik")
	}
	if r0.Config.HTTP.Middlewares["dev--hello-web-ratelimit"+strings.TrimPrefix(r0.Router, "dev--hello-web")] != nil {
		t.Fatalf("rate_limit = 0 still renders a rate limit: %v", r0.Config.HTTP.Middlewares)
	}
}

// probeRouter reports whether rt is a route's probe router: it matches
// the probe's key.
func probeRouter(rt *dynamic.Router) bool {
	return strings.Contains(rt.Rule, "Header(`"+router.HeaderKey+"`, `"+router.ProbeKey+"`)")
}

// TestTheProbeHasARouterOfItsOwn: a rate-limited route has a router for
// the deploy probe (Caravan-Key caravan-probe) beside its generated
// hostname's, ranked above it and below a split, with the same chain but
// a forwardAuth that takes the probe's credential alone in place of the
// route's own: Traefik keeps a rate limiter's bucket per router, so the
// probe spends none of the function's. Without a rate limit there is no
// budget to spare and no such router.
func TestTheProbeHasARouterOfItsOwn(t *testing.T) {
	zero := 0
	for name, c := range map[string]struct {
		web       *spec.Web
		wantProbe bool
	}{
		"plain":         {&spec.Web{}, true},
		"proxy auth":    {&spec.Web{RequiresProxyAuth: true}, true},
		"no rate limit": {&spec.Web{RateLimit: &zero}, false},
	} {
		r := router.Routes(oneWebApp(c.web), router.DefaultConfig)[0]
		gen := r.Config.HTTP.Routers[r.Router]
		var probes []*dynamic.Router
		for _, rt := range r.Config.HTTP.Routers {
			if probeRouter(rt) {
				probes = append(probes, rt)
			}
		}
		if !c.wantProbe {
			if len(probes) != 0 {
				t.Errorf("%s: probe routers %v, want none", name, probes)
			}
			continue
		}
		if len(probes) != 1 {
			t.Fatalf("%s: %d probe routers, want 1", name, len(probes))
		}
		p := probes[0]
		if !strings.HasPrefix(p.Rule, gen.Rule+" && ") || p.Priority != router.PriorityProbe || p.Service != gen.Service ||
			p.Priority <= gen.Priority || p.Priority >= gen.Priority+router.SplitPriority || !reflect.DeepEqual(p.TLS, gen.TLS) {
			t.Errorf("%s: probe router %+v beside %+v", name, p, gen)
		}
		var want []string
		for _, m := range gen.Middlewares {
			if r.Config.HTTP.Middlewares[m].ForwardAuth == nil {
				want = append(want, m)
			}
		}
		var got []string
		for _, m := range p.Middlewares {
			if fa := r.Config.HTTP.Middlewares[m].ForwardAuth; fa != nil {
				if fa.Address != router.DefaultAuthURL+"?probe=true" {
					t.Errorf("%s: probe router asks %s", name, fa.Address)
				}
				continue
			}
			got = append(got, m)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: probe router's middlewares %v, want the route's %v (its auth aside)", name, p.Middlewares, gen.Middlewares)
		}
		// A split stands in for the route's own routers, not the probe's.
		split := router.Split{Route: r, Servers: []string{"http://10.0.0.1:2000"}, Weight: 10}.Config()
		if len(split.HTTP.Routers) != 1 {
			t.Errorf("%s: split routers %v, want the generated hostname's alone", name, slices.Collect(maps.Keys(split.HTTP.Routers)))
		}
		for n, rt := range split.HTTP.Routers {
			if probeRouter(rt) {
				t.Errorf("%s: split router %s is the probe's", name, n)
			}
		}
	}
}

// TestEveryRouteStripsCredentials: whatever a web block says, the request
// that reaches the function has no Caravan-Key or Caravan-Secret header.
// A function without proxy auth must not see an endpoint key its caller
// sent (by mistake, or to another function behind the same client); one
// with proxy auth must not see the key that opened it. The strip comes
// last but the retry, after forwardAuth has read the headers, and holds
// for previews and traffic splits too.
func TestEveryRouteStripsCredentials(t *testing.T) {
	zero := 0
	for name, web := range map[string]*spec.Web{
		"plain":         {},
		"proxy auth":    {RequiresProxyAuth: true},
		"label, domain": {Label: "api", CustomDomains: []string{"api.example.com", "*.example.org"}},
		"no rate limit": {RateLimit: &zero},
	} {
		for _, strategy := range []string{spec.StrategyRolling, spec.StrategyCanary} {
			app := oneWebApp(web)
			app.Deploy = &spec.Deploy{Strategy: strategy}
			r := router.Routes(app, router.DefaultConfig)[0]
			configs := map[string]*dynamic.Configuration{"route": r.Config}
			if r.Preview != nil {
				configs["preview"] = r.Preview.Config
			}
			configs["split"] = router.Split{Route: r, Servers: []string{"http://10.0.0.1:2000"}, Weight: 10}.Config()
			for what, c := range configs {
				for rname, rt := range c.HTTP.Routers {
					if len(rt.Middlewares) == 0 {
						t.Errorf("%s, %s, %s: router %s has no middlewares", name, strategy, what, rname)
						continue
					}
					// The last that touches the request: a retry (the
					// route's last middleware) only sends it again.
					mws := rt.Middlewares
					for len(mws) > 1 && c.HTTP.Middlewares[mws[len(mws)-1]] != nil && c.HTTP.Middlewares[mws[len(mws)-1]].Retry != nil {
						mws = mws[:len(mws)-1]
					}
					last := c.HTTP.Middlewares[mws[len(mws)-1]]
					if last == nil || last.Headers == nil {
						t.Errorf("%s, %s, %s: router %s ends in %v, not a headers middleware", name, strategy, what, rname, rt.Middlewares)
						continue
					}
					for _, h := range []string{router.HeaderKey, router.HeaderSecret} {
						if v, ok := last.Headers.CustomRequestHeaders[h]; !ok || v != "" {
							t.Errorf("%s, %s, %s: router %s does not remove %s: %v", name, strategy, what, rname, h, last.Headers.CustomRequestHeaders)
						}
					}
					auth := slices.IndexFunc(rt.Middlewares, func(m string) bool { return c.HTTP.Middlewares[m].ForwardAuth != nil })
					if probe := probeRouter(rt); probe != (auth >= 0 && strings.HasSuffix(c.HTTP.Middlewares[rt.Middlewares[auth]].ForwardAuth.Address, "?probe=true")) {
						t.Errorf("%s, %s, %s: router %s: probe router %v, forwardAuth at %d", name, strategy, what, rname, probe, auth)
					} else if !probe && web.RequiresProxyAuth != (auth >= 0) {
						t.Errorf("%s, %s, %s: router %s forwardAuth at %d", name, strategy, what, rname, auth)
					}
				}
			}
		}
	}
}
