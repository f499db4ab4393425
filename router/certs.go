package router

import (
	"strings"

	"github.com/traefik/traefik/v3/pkg/config/dynamic"
	"github.com/traefik/traefik/v3/pkg/types"
)

// WildcardDomain is the name of the platform's wildcard certificate,
// "*.<domain>": every generated hostname (canary previews and serve copies
// included) is one label under Domain, so it covers them all.
func (c Config) WildcardDomain() string { return "*." + strings.ToLower(c.Domain) }

// InWildcard reports whether host is served by the platform's wildcard
// certificate: there is one (a DNS-01 resolver) and host is one label
// under Domain.
func (c Config) InWildcard(host string) bool {
	label, ok := strings.CutSuffix(strings.ToLower(host), "."+strings.ToLower(c.Domain))
	return c.DNSCertResolver != "" && ok && label != "" && !strings.Contains(label, ".")
}

// GeneratedTLS is the TLS of the router of a generated hostname, host.
// With a DNS-01 resolver it names the platform's wildcard certificate
// (tls.domains = [{main: "*.<domain>"}]): Traefik orders it once, serves
// it for every generated hostname from its first request and renews it,
// instead of ordering one certificate per new hostname (and serving its
// default certificate until the order completes). Without one (ACME issues
// wildcards only over DNS-01), Traefik orders a certificate for host from
// the router's rule through CertResolver.
func (c Config) GeneratedTLS(host string) *dynamic.RouterTLSConfig {
	if c.DNSCertResolver == "" {
		return &dynamic.RouterTLSConfig{CertResolver: c.CertResolver}
	}
	return &dynamic.RouterTLSConfig{CertResolver: c.DNSCertResolver, Domains: []types.Domain{{Main: c.WildcardDomain()}}}
}

// WildcardLabel is the first label of the hostname of the router that
// holds the platform's wildcard certificate before any app exists. No
// generated label is it: every one holds "--" or, cut to 63 characters,
// ends in a hyphen and 8 hex digits.
const WildcardLabel = "caravan-wildcard"

// WildcardRouter names that router (in Traefik's KV provider).
const WildcardRouter = "caravan-wildcard-certificate"

// WildcardCertificate is the Traefik dynamic configuration, for the KV
// provider, of a router that only asks Traefik for the platform's wildcard
// certificate: caravan server publishes it when it starts, so the
// certificate is ordered once, before the first app, and renewed while the
// router exists even when no app runs. Its rule matches one hostname no
// app can have, and its service is Traefik's internal no-op (which answers
// 418). Nil without a DNS-01 resolver: there is no wildcard to order.
func (c Config) WildcardCertificate() *dynamic.Configuration {
	if c.DNSCertResolver == "" {
		return nil
	}
	return &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{
		Routers: map[string]*dynamic.Router{WildcardRouter: {
			EntryPoints: []string{c.EntryPoint},
			Rule:        "Host(`" + c.Host(WildcardLabel) + "`)",
			Priority:    1,
			Service:     "noop@internal",
			TLS:         c.GeneratedTLS(c.Host(WildcardLabel)),
		}},
	}}
}
