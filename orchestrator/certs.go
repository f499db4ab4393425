package orchestrator

import (
	"context"
	"fmt"

	"github.com/caravanhq/caravan/router"
)

// PublishWildcardCertificate writes, through Traefik's Consul KV provider,
// the router that asks Traefik for the platform's wildcard certificate
// (router.Config.WildcardCertificate): Traefik orders it once, before the
// first app, and renews it, so every generated hostname is served by a
// certificate that verifies from its first request. The same keys each
// time, so a restart rewrites them; nothing without a DNS-01 resolver.
func (o *Orchestrator) PublishWildcardCertificate(ctx context.Context) error {
	c := o.router.WildcardCertificate()
	if c == nil {
		return nil
	}
	pairs, err := router.KV(o.router.KVRoot, c)
	if err != nil {
		return err
	}
	if err := o.putKV(ctx, pairs); err != nil {
		return fmt.Errorf("publishing the router of the wildcard certificate %s: %w", o.router.WildcardDomain(), err)
	}
	o.log.Info("wildcard certificate router published", "domain", o.router.WildcardDomain(), "router", router.WildcardRouter)
	return nil
}
