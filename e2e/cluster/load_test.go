package cluster

import (
	"context"
	"sync"
	"testing"

	"github.com/caravanhq/caravan/e2e/e2ekit"
)

// runLoad sends GETs to url through Traefik at a steady rate until stop
// is closed (or 10 minutes and 100,000 requests pass), and counts the
// failures: any transport error or non-200 answer.
func runLoad(ctx context.Context, url string, perSecond int, stop <-chan struct{}) *e2ekit.Load {
	return e2ekit.RunLoad(ctx, env.https, url, perSecond, 100_000, stop)
}

// loadUntilStopped runs 50 GETs a second to url's root until the function
// it returns is called (once or more; at the test's end at the latest),
// which waits for the load to end.
func loadUntilStopped(t *testing.T, url string) (*e2ekit.Load, func()) {
	stop := make(chan struct{})
	l := runLoad(context.Background(), url+"/", 50, stop)
	var once sync.Once
	end := func() {
		once.Do(func() { close(stop) })
		<-l.Done
	}
	t.Cleanup(end)
	return l, end
}
