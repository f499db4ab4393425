package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/e2e/e2ekit"
)

// runLoad sends GETs to url through Traefik at a steady rate until stop
// is closed (or a hard bound of 10 minutes and 200,000 requests passes),
// and counts the failures: any transport error or non-200 answer.
func runLoad(ctx context.Context, url string, perSecond int, stop <-chan struct{}) *e2ekit.Load {
	return e2ekit.RunLoad(ctx, env.https, url, perSecond, 200_000, stop)
}

// TestZeroFailedRequestsAcrossRollingRedeploys sends at least 100 requests
// a second through Traefik while the app is redeployed five times with the
// rolling strategy and then rolled back, and requires that none fails.
func TestZeroFailedRequestsAcrossRollingRedeploys(t *testing.T) {
	const app, job = "steady", "e2e--steady"
	purge(t, job)
	first := deploy(t, "steady.hcl", nodeServer(app, "v0\n", false), api.DeployBody{})
	url := first.Functions[0].URL

	stop := make(chan struct{})
	began := time.Now()
	l := runLoad(context.Background(), url+"/", 150, stop)
	for i := 1; i <= 5; i++ {
		res := deploy(t, "steady.hcl", nodeServer(app, fmt.Sprintf("v%d\n", i), false), api.DeployBody{Strategy: "rolling"})
		t.Logf("redeploy %d: version %d in %s", i, res.Version, res.Duration.Round(time.Millisecond))
	}
	res, err := env.client.Rollback(context.Background(), app, api.ChangeBody{Workspace: "e2e"})
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	t.Logf("rollback: version %d in %s", res.Version, res.Duration.Round(time.Millisecond))
	answers(t, url, "v4\n")
	close(stop)
	<-l.Done
	elapsed := time.Since(began)
	sent, failed := l.Sent.Load(), l.Failed.Load()
	t.Logf("load: %d requests in %s (%.0f/s), %d failed", sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), failed)
	if rate := float64(sent) / elapsed.Seconds(); rate < 100 {
		t.Errorf("sent %.0f requests a second, want at least 100", rate)
	}
	if failed != 0 {
		t.Fatalf("%d of %d requests failed across 5 rolling redeploys and a rollback; first: %v", failed, sent, l.FirstErrors())
	}
}

// TestZeroFailedRequestsAcrossRouteChanges redeploys under load with changes
// to the route itself (a rate limit, a body limit): the old and the new
// containers carry different route settings for a while, and no request may
// fail for it.
func TestZeroFailedRequestsAcrossRouteChanges(t *testing.T) {
	purge(t, "e2e--morph")
	first := deploy(t, "morph.hcl", nodeServer("morph", "a\n", false), api.DeployBody{})
	stop := make(chan struct{})
	l := runLoad(context.Background(), first.Functions[0].URL+"/", 100, stop)
	for _, web := range []string{"web {\n      rate_limit = 1000\n    }", "web {\n      max_body_size = \"1MB\"\n    }", "web {}"} {
		deploy(t, "morph.hcl", strings.Replace(nodeServer("morph", "b\n", false), "web {}", web, 1), api.DeployBody{})
	}
	close(stop)
	<-l.Done
	t.Logf("load: %d requests across 3 route-changing redeploys, %d failed", l.Sent.Load(), l.Failed.Load())
	if l.Failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", l.Failed.Load(), l.Sent.Load(), l.FirstErrors())
	}
}
