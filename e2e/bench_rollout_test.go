//go:build bench

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// TestBenchCanaryAndBlueGreen prints the canary's measured share of traffic
// and the failed requests across blue/green switches under steady load
// (`just bench`). It asserts only that the rollouts worked.
func TestBenchCanaryAndBlueGreen(t *testing.T) {
	const runs = 3
	canary := `strategy = "canary"
    traffic  = 10`
	var shares []float64
	var toCanary, promotions []time.Duration
	var promoteLoad []string // failed requests across each promotion
	for i := range runs {
		app := fmt.Sprintf("bcanary%d", i)
		purge(t, "e2e--"+app)
		deploy(t, app+".hcl", rolloutSpec(app, "v1", 2, canary, ""), api.DeployBody{})
		settled(t, "e2e--"+app)
		res := deploy(t, app+".hcl", rolloutSpec(app, "v2", 2, canary, ""), api.DeployBody{})
		if res.Canary == nil {
			t.Fatal("not a canary")
		}
		toCanary = append(toCanary, res.Duration)
		counts := tally(t, res.Functions[0].URL, 1000)
		shares = append(shares, float64(counts["v2"])/10)
		stop := sampleLoad(res.Functions[0].URL, 8)
		p, err := env.client.Promote(context.Background(), app, api.ChangeBody{Workspace: "e2e"})
		if err != nil {
			t.Fatal(err)
		}
		promotions = append(promotions, p.Duration)
		time.Sleep(2 * time.Second)
		samples := stop()
		failed, _, errs := switchStats(samples, "v1", "v2")
		promoteLoad = append(promoteLoad, fmt.Sprintf("%d of %d", failed, len(samples)))
		if failed != 0 {
			t.Errorf("promotion %d: %d of %d requests failed: %v", i+1, failed, len(samples), errs)
		}
	}
	fmt.Printf("canary share at traffic = 10 (2 live containers, 1 canary), 1000 sequential GETs through Traefik per run, %d runs: %v%%\n", runs, shares)
	m, x := stats(toCanary)
	fmt.Printf("canary deploy until its share of traffic is live  median %8s  max %8s  (%d runs)\n", m.Round(time.Millisecond), x.Round(time.Millisecond), runs)
	fmt.Printf("    server-side duration of the deploy, from a live version Nomad calls stable: Nomad starts the canary, it passes its checks, answers on its preview hostname over TLS, and the split is published and applied\n")
	m, x = stats(promotions)
	fmt.Printf("caravan app promote                               median %8s  max %8s  (%d runs)\n", m.Round(time.Millisecond), x.Round(time.Millisecond), runs)
	fmt.Printf("    server-side: all traffic to the canary, Nomad promotion, old containers replaced and gone from Consul, split removed\n")
	fmt.Printf("failed requests across each promotion (8 clients, each a GET every 20 ms, from before the promotion until 2 s after): %v\n", promoteLoad)

	bg := `strategy = "blue-green"`
	for i := range runs {
		app := fmt.Sprintf("bgreen%d", i)
		purge(t, "e2e--"+app)
		v1 := deploy(t, app+".hcl", rolloutSpec(app, "blue", 2, bg, ""), api.DeployBody{})
		settled(t, "e2e--"+app)
		stop := sampleLoad(v1.Functions[0].URL, 8)
		began := time.Now()
		res := deploy(t, app+".hcl", rolloutSpec(app, "green", 2, bg, ""), api.DeployBody{})
		time.Sleep(2 * time.Second)
		samples := stop()
		failed, blueAfter, errs := switchStats(samples, "blue", "green")
		fmt.Printf("blue/green switch %d: %d requests (8 clients, each a GET every 20 ms) across a %s deploy: %d failed, %d reached blue after green first answered\n",
			i+1, len(samples), res.Duration.Round(100*time.Millisecond), failed, blueAfter)
		if failed != 0 || blueAfter != 0 {
			t.Errorf("switch %d: %d failed %v, %d to blue after the switch (began %s)", i+1, failed, errs, blueAfter, began.Format(time.TimeOnly))
		}
	}
}
