package router_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
	"github.com/traefik/traefik/v3/pkg/types"
)

// dnsConfig is testConfig with the DNS-01 resolver, as `caravan dev up`
// and a default `caravan server` run.
var dnsConfig = func() router.Config {
	c := testConfig
	c.DNSCertResolver = "caravan-dns"
	return c
}()

var platformWildcard = &dynamic.RouterTLSConfig{CertResolver: "caravan-dns",
	Domains: []types.Domain{{Main: "*.caravan.localhost"}}}

// TestGeneratedHostnamesUseThePlatformWildcard: every generated hostname's
// router names the one wildcard certificate of the platform domain, through
// the DNS-01 resolver, so Traefik orders no certificate per new hostname;
// canary previews and serve copies too.
func TestGeneratedHostnamesUseThePlatformWildcard(t *testing.T) {
	serve := oneWebApp(&spec.Web{})
	serve.Serve = true
	canary := oneWebApp(&spec.Web{})
	canary.Deploy = &spec.Deploy{Strategy: spec.StrategyCanary}
	apps := map[string]*spec.App{"store": storeApp(), "serve": serve, "canary": canary,
		"wildcard": oneWebApp(&spec.Web{CustomDomains: []string{"*.example.com", "example.com"}})}
	for name, app := range apps {
		for _, r := range router.Routes(app, dnsConfig) {
			routes := []router.Route{r}
			if r.Preview != nil {
				routes = append(routes, *r.Preview)
			}
			for _, r := range routes {
				if !strings.HasSuffix(r.Host, ".caravan.localhost") || strings.Count(r.Host, ".") != 2 {
					t.Errorf("%s: host %s is not one label under the domain: the wildcard does not cover it", name, r.Host)
				}
				rt := r.Config.HTTP.Routers[r.Router]
				if !reflect.DeepEqual(rt.TLS, platformWildcard) {
					t.Errorf("%s: router %s TLS = %+v, want %+v", name, r.Router, rt.TLS, platformWildcard)
				}
				// The tags Traefik reads carry it too.
				tags, err := r.Tags()
				if err != nil {
					t.Fatal(err)
				}
				got := decodeTags(t, tags).HTTP.Routers[r.Router].TLS
				if got == nil || got.CertResolver != "caravan-dns" || !slices.EqualFunc(got.Domains, platformWildcard.Domains, domainEqual) {
					t.Errorf("%s: decoded router %s TLS = %+v", name, r.Router, got)
				}
			}
		}
	}
}

// TestCustomDomainsKeepTheirOwnCertificates: the platform wildcard is for
// generated hostnames only; an exact custom domain is ordered from its rule
// (TLS-ALPN-01), a route with a wildcard custom domain lists its own names
// over DNS-01, and neither names the platform's.
func TestCustomDomainsKeepTheirOwnCertificates(t *testing.T) {
	exact := router.Routes(oneWebApp(&spec.Web{CustomDomains: []string{"api.example.com"}}), dnsConfig)[0]
	for name, rt := range exact.Config.HTTP.Routers {
		if name == exact.Router {
			continue
		}
		if rt.TLS.CertResolver != "caravan" || len(rt.TLS.Domains) != 0 {
			t.Errorf("exact custom domain router %s TLS = %+v, want the TLS-ALPN resolver and names from the rule", name, rt.TLS)
		}
	}
	wild := router.Routes(oneWebApp(&spec.Web{CustomDomains: []string{"*.example.com", "example.com"}}), dnsConfig)[0]
	n := 0
	for name, rt := range wild.Config.HTTP.Routers {
		if name == wild.Router {
			continue
		}
		n++
		var names []string
		for _, d := range rt.TLS.Domains {
			names = append(names, d.Main)
		}
		if rt.TLS.CertResolver != "caravan-dns" || !slices.Equal(names, []string{"*.example.com", "example.com"}) {
			t.Errorf("custom router %s TLS = %s %v, want caravan-dns and the spec's own names", name, rt.TLS.CertResolver, names)
		}
	}
	if n != 2 {
		t.Errorf("%d custom routers, want 2 (exact and wildcard)", n)
	}
}

// TestWithoutDNSResolverEachHostnameHasItsOwnCertificate: ACME issues
// wildcards only over DNS-01, so without that resolver nothing changes:
// each hostname's certificate is ordered from its router's rule, and
// there is no wildcard router to publish.
func TestWithoutDNSResolverEachHostnameHasItsOwnCertificate(t *testing.T) {
	r := router.Routes(oneWebApp(&spec.Web{}), testConfig)[0]
	if tls := r.Config.HTTP.Routers[r.Router].TLS; tls.CertResolver != "caravan" || len(tls.Domains) != 0 {
		t.Errorf("TLS = %+v, want the TLS-ALPN resolver and names from the rule", tls)
	}
	if c := testConfig.WildcardCertificate(); c != nil {
		t.Errorf("WildcardCertificate() = %+v without a DNS-01 resolver, want nil", c)
	}
}

// TestWildcardCertificateRouter: what caravan server publishes at start so
// the wildcard exists before the first app. Traefik's KV decoder reads it
// back as it was, and its rule takes no hostname an app could have.
func TestWildcardCertificateRouter(t *testing.T) {
	c := dnsConfig.WildcardCertificate()
	pairs, err := router.KV("traefik", c)
	if err != nil {
		t.Fatal(err)
	}
	for k := range pairs {
		if !strings.HasPrefix(k, "traefik/http/routers/"+router.WildcardRouter+"/") {
			t.Errorf("key %s is not under the wildcard router's prefix", k)
		}
	}
	got := decodeKV(t, pairs).HTTP.Routers[router.WildcardRouter]
	want := c.HTTP.Routers[router.WildcardRouter]
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	if !reflect.DeepEqual(got.TLS, platformWildcard) || got.Service != "noop@internal" ||
		got.Rule != "Host(`caravan-wildcard.caravan.localhost`)" || !slices.Equal(got.EntryPoints, []string{"websecure"}) {
		t.Errorf("wildcard router %+v", got)
	}
	if strings.Contains(router.WildcardLabel, "--") {
		t.Errorf("WildcardLabel %q holds --: a generated hostname could be it", router.WildcardLabel)
	}
}

func TestInWildcard(t *testing.T) {
	for host, want := range map[string]bool{
		"dev--hello-web.caravan.localhost": true, "Dev--Hello-Web.Caravan.Localhost": true,
		"caravan.localhost": false, "a.b.caravan.localhost": false, "api.example.com": false, "xcaravan.localhost": false,
	} {
		if got := dnsConfig.InWildcard(host); got != want {
			t.Errorf("InWildcard(%q) = %v, want %v", host, got, want)
		}
	}
	if testConfig.InWildcard("dev--hello-web.caravan.localhost") {
		t.Error("InWildcard without a DNS-01 resolver: there is no wildcard")
	}
}
