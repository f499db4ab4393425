package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// load sends GETs to url through Traefik at a steady rate until stop is
// closed (or a hard bound of 10 minutes and 200,000 requests passes), and
// counts the failures: any transport error or non-200 answer.
type load struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	firstErrors  []string
	// done is closed once every request has finished.
	done chan struct{}
}

func runLoad(ctx context.Context, url string, perSecond int, stop <-chan struct{}) *load {
	l := &load{done: make(chan struct{})}
	const workers = 8
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	jobs := make(chan struct{}, perSecond)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				l.one(ctx, url)
			}
		}()
	}
	go func() {
		defer cancel()
		defer tick.Stop()
		defer func() { close(jobs); wg.Wait(); close(l.done) }()
		for l.sent.Load() < 200_000 {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				select {
				case jobs <- struct{}{}:
				default: // workers saturated: count it, do not queue
					l.fail("generator: all workers busy")
					l.sent.Add(1)
				}
			}
		}
	}()
	return l
}

func (l *load) one(ctx context.Context, url string) {
	l.sent.Add(1)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := newGet(rctx, url)
	resp, err := env.https.Do(req)
	if err != nil {
		l.fail(err.Error())
		return
	}
	drain(resp)
	if resp.StatusCode != 200 {
		l.fail(fmt.Sprintf("status %d", resp.StatusCode))
	}
}

func (l *load) fail(msg string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.firstErrors) < 5 {
		l.firstErrors = append(l.firstErrors, msg)
	}
	l.mu.Unlock()
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
	<-l.done
	elapsed := time.Since(began)
	sent, failed := l.sent.Load(), l.failed.Load()
	t.Logf("load: %d requests in %s (%.0f/s), %d failed", sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), failed)
	if rate := float64(sent) / elapsed.Seconds(); rate < 100 {
		t.Errorf("sent %.0f requests a second, want at least 100", rate)
	}
	if failed != 0 {
		t.Fatalf("%d of %d requests failed across 5 rolling redeploys and a rollback; first: %v", failed, sent, l.firstErrors)
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
	<-l.done
	t.Logf("load: %d requests across 3 route-changing redeploys, %d failed", l.sent.Load(), l.failed.Load())
	if l.failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", l.failed.Load(), l.sent.Load(), l.firstErrors)
	}
}
