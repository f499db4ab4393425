package cluster

import (
	"context"

	"github.com/caravanhq/caravan/e2e/e2ekit"
)

// runLoad sends GETs to url through Traefik at a steady rate until stop
// is closed (or 10 minutes and 100,000 requests pass), and counts the
// failures: any transport error or non-200 answer.
func runLoad(ctx context.Context, url string, perSecond int, stop <-chan struct{}) *e2ekit.Load {
	return e2ekit.RunLoad(ctx, env.https, url, perSecond, 100_000, stop)
}
