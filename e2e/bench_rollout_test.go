//go:build bench

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caravanhq/caravan/server"
)

// TestBenchCanaryAndBlueGreen prints the canary's measured share of traffic
// and the failed requests across blue/green switches under steady load
// (`just bench`). It asserts only that the rollouts worked.
func TestBenchCanaryAndBlueGreen(t *testing.T) {
	const runs = 3
	canary := `strategy = "canary"
    traffic  = 10`
	var shares []float64
	for i := range runs {
		app := fmt.Sprintf("bcanary%d", i)
		purge(t, "e2e--"+app)
		deploy(t, app+".hcl", rolloutSpec(app, "v1", 2, canary, 0), server.DeployBody{})
		res := deploy(t, app+".hcl", rolloutSpec(app, "v2", 2, canary, 0), server.DeployBody{})
		if res.Canary == nil {
			t.Fatal("not a canary")
		}
		counts := tally(t, res.Functions[0].URL, 1000)
		shares = append(shares, float64(counts["v2"])/10)
		if _, err := env.client.Abort(context.Background(), app, server.ChangeBody{Workspace: "e2e"}); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Printf("canary share at traffic = 10 (2 live containers, 1 canary), 1000 sequential GETs through Traefik per run, %d runs: %v%%\n", runs, shares)

	bg := `strategy = "blue-green"`
	for i := range runs {
		app := fmt.Sprintf("bgreen%d", i)
		purge(t, "e2e--"+app)
		v1 := deploy(t, app+".hcl", rolloutSpec(app, "blue", 2, bg, 0), server.DeployBody{})
		stop := sampleLoad(v1.Functions[0].URL, 8)
		began := time.Now()
		res := deploy(t, app+".hcl", rolloutSpec(app, "green", 2, bg, 0), server.DeployBody{})
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
