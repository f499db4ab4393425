package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// canarySpec is nodeServer's function, rolled out as a canary: two
// canaries beside the two live containers, taking traffic percent of the
// requests until promoted.
func canarySpec(app, body string, traffic int) string {
	return strings.Replace(nodeServer(app, body, 2), "\n  function ", fmt.Sprintf(`
  deploy {
    strategy = "canary"
    canaries = 2
    traffic  = %d
  }
  function `, traffic), 1)
}

// TestClusterCanary: a canary rollout on the cluster, under bounded load
// from before the canary until after its promotion. Version 1 runs one
// container on each client; version 2's two canaries start beside them,
// one on each client too; the preview hostname answers version 2; the
// app's hostname splits its requests between the versions; the canary is
// promoted through the other caravan server (on another Nomad server),
// after which only version 2 answers, in two containers. No request of
// the load fails.
func TestClusterCanary(t *testing.T) {
	const app, job, traffic = "canarybird", "e2e--canarybird", 30
	purge(t, job)
	v1 := deploy(t, env.servers[0], "canarybird.hcl", canarySpec(app, "v1", traffic), api.DeployBody{})
	url := v1.Functions[0].URL
	answers(t, url, "v1")
	if on, err := onNodes(job); err != nil || on["nomad-client-0"] != 1 || on["nomad-client-1"] != 1 {
		t.Fatalf("version 1's containers per client: %v (%v), want one on each", on, err)
	}

	l, stopLoad := loadUntilStopped(t, url)
	v2 := deploy(t, env.servers[0], "canarybird.hcl", canarySpec(app, "v2", traffic), api.DeployBody{})
	if v2.Canary == nil || v2.Canary.Traffic != traffic {
		t.Fatalf("version 2 is not a canary at %d%%: %+v", traffic, v2.Canary)
	}
	if on, err := onNodes(job); err != nil || on["nomad-client-0"] != 2 || on["nomad-client-1"] != 2 {
		t.Errorf("containers per client with the canaries: %v (%v), want two on each (a live one and a canary)", on, err)
	}
	preview := v2.Canary.Previews["web"]
	answers(t, preview, "v2")

	const n = 200
	counts := map[string]int{}
	for i := range n {
		status, body, err := get(url)
		if err != nil || status != 200 {
			t.Fatalf("request %d of the split: %d %q %v", i+1, status, body, err)
		}
		counts[body]++
	}
	share := 100 * float64(counts["v2"]) / n
	t.Logf("canary on the cluster: %.1f%% of %d requests to version 2 at traffic = %d (%v)", share, n, traffic, counts)
	if counts["v1"]+counts["v2"] != n || share < traffic-15 || share > traffic+15 {
		t.Errorf("the canary took %.1f%% of %d requests (%v), want %d%% give or take 15", share, n, counts, traffic)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := env.servers[1].Promote(ctx, app, api.ChangeBody{Workspace: "e2e"})
	if err != nil {
		t.Fatalf("promote through caravan-server-1: %v", err)
	}
	eventually(t, 30*time.Second, "only v2 answers", func() error {
		for i := range 50 {
			status, got, err := get(url)
			if err != nil || status != 200 || got != "v2" {
				return fmt.Errorf("request %d: %d %q %v", i+1, status, got, err)
			}
		}
		return nil
	})
	eventually(t, time.Minute, "two containers after the promotion", func() error {
		on, err := onNodes(job)
		if err != nil {
			return err
		}
		if on["nomad-client-0"]+on["nomad-client-1"] != 2 {
			return fmt.Errorf("containers per client: %v", on)
		}
		return nil
	})
	h, err := env.servers[0].History(ctx, app, api.ChangeBody{Workspace: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	if h.App.LiveVersion != v2.Version {
		t.Errorf("live version %d after the promotion, want %d", h.App.LiveVersion, v2.Version)
	}
	stopLoad()
	t.Logf("canary promoted through caravan-server-1 in %s; under 50/s load from before the canary until after the promotion: %d requests, %d failed (first: %v)",
		res.Duration.Round(time.Millisecond), l.Sent.Load(), l.Failed.Load(), l.FirstErrors())
	if f := l.Failed.Load(); f != 0 {
		t.Errorf("%d of %d requests failed during the canary rollout", f, l.Sent.Load())
	}
}
