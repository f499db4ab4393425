package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/jobs"
)

// autoscaledRolloutSpec is rolloutSpec's function autoscaled: from one
// container up to three, through caravan's proxy.
func autoscaledRolloutSpec(app, body, deployBlock string) string {
	return strings.Replace(rolloutSpec(app, body, 1, deployBlock, ""), "min_containers = 1", "min_containers = 1\n    max_containers = 3", 1)
}

// requireProxied fails the test unless service's containers are reached
// through caravan's proxies: they carry no Traefik tag (the route is in
// Traefik's KV) and canaries only the canary tag.
func requireProxied(t *testing.T, service string) {
	t.Helper()
	entries, _, err := env.consul.Catalog().Service(service, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatalf("no instance of %s in Consul", service)
	}
	for _, e := range entries {
		for _, tag := range e.ServiceTags {
			if tag != jobs.CanaryTag {
				t.Fatalf("%s (%s) carries tag %q: not proxied", service, e.ServiceID, tag)
			}
		}
	}
}

// canaryInstances counts the instances of service tagged as canaries.
func canaryInstances(t *testing.T, service string) int {
	t.Helper()
	entries, _, err := env.consul.Catalog().Service(service, jobs.CanaryTag, nil)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// An autoscaled function deployed canary: the split's share and the
// preview hostname through caravan's proxy, and a promotion under load
// with no failed request.
func TestCanaryOfAutoscaledFunction(t *testing.T) {
	const app, job, service = "finch", "e2e--finch", "e2e--finch-web"
	purgeWithSettings(t, job, service)
	canary := `strategy = "canary"
    traffic  = 30`
	v1 := deploy(t, "finch.hcl", autoscaledRolloutSpec(app, "v1", canary), api.DeployBody{})
	url := v1.Functions[0].URL
	answers(t, url, "v1")
	requireProxied(t, service)

	v2 := deploy(t, "finch.hcl", autoscaledRolloutSpec(app, "v2", canary), api.DeployBody{})
	if v2.Canary == nil || v2.Canary.Traffic != 30 {
		t.Fatalf("version 2 is not a canary at 30%%: %+v", v2.Canary)
	}
	preview := v2.Canary.Previews["web"]
	if preview != strings.Replace(url, "--finch-web.", "--finch-web--canary.", 1) {
		t.Fatalf("preview URL %q for %q", preview, url)
	}
	requireProxied(t, service)
	if n := canaryInstances(t, service); n != 1 {
		t.Fatalf("%d canary instances in Consul, want 1", n)
	}
	// The preview answers from the canary alone.
	if counts := tally(t, preview, 50); counts["v2"] != 50 {
		t.Errorf("preview answered %v, want v2 alone", counts)
	}

	counts := tally(t, url, 500)
	share := float64(counts["v2"]) / 5
	t.Logf("canary share over 500 requests at traffic = 30: %.1f%% (%v)", share, counts)
	if counts["v1"]+counts["v2"] != 500 || share < 25 || share > 35 {
		t.Errorf("canary took %.1f%% of 500 requests (%v), want 30%% give or take 5", share, counts)
	}
	if h := history(t, app); h.App.LiveVersion != 1 {
		t.Errorf("live version %d while the canary runs, want 1", h.App.LiveVersion)
	}

	// Abort: everything back on v1, the canary gone.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := env.client.Abort(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("abort: %v", err)
	}
	onlyBody(t, url, "v1")
	eventually(t, 30*time.Second, "canary gone after abort", func() error {
		if n := canaryInstances(t, service); n != 0 {
			return fmt.Errorf("%d canary instances", n)
		}
		return nil
	})

	// A new canary, promoted under a bounded load: no request fails.
	v3 := deploy(t, "finch.hcl", autoscaledRolloutSpec(app, "v3", canary), api.DeployBody{})
	if v3.Canary == nil {
		t.Fatalf("version %d is not a canary", v3.Version)
	}
	answers(t, preview, "v3")
	stop := sampleLoad(url, 4)
	res, err := env.client.Promote(ctx, app, api.ChangeBody{Workspace: "e2e"})
	if err != nil {
		stop()
		t.Fatalf("promote: %v", err)
	}
	time.Sleep(2 * time.Second) // load past the promotion's end
	samples := stop()
	failed, oldAfter, errs := switchStats(samples, "v1", "v3")
	t.Logf("promotion under load: %d requests, %d failed, %d answered by v1 after v3 first did (promote %s)",
		len(samples), failed, oldAfter, res.Duration.Round(time.Millisecond))
	if failed != 0 {
		t.Errorf("%d of %d requests failed across the promotion: %v", failed, len(samples), errs[:min(len(errs), 5)])
	}
	onlyBody(t, url, "v3")
	requirePromoted(t, app, v3.Version, preview)
	eventually(t, 30*time.Second, "no canary instance after the promotion", func() error {
		if n := canaryInstances(t, service); n != 0 {
			return fmt.Errorf("%d canary instances", n)
		}
		return nil
	})
}

// An autoscaled function deployed blue-green switches in one step through
// caravan's proxy: no failed request, none to blue once green answered.
func TestBlueGreenOfAutoscaledFunction(t *testing.T) {
	const app, job, service = "robin", "e2e--robin", "e2e--robin-web"
	purgeWithSettings(t, job, service)
	bg := `strategy = "blue-green"`
	v1 := deploy(t, "robin.hcl", autoscaledRolloutSpec(app, "blue", bg), api.DeployBody{})
	url := v1.Functions[0].URL
	answers(t, url, "blue")
	requireProxied(t, service)

	stop := sampleLoad(url, 4)
	res := deploy(t, "robin.hcl", autoscaledRolloutSpec(app, "green", bg), api.DeployBody{})
	time.Sleep(2 * time.Second)
	samples := stop()
	if res.Canary != nil {
		t.Fatal("a blue-green version must be live when deploy returns")
	}
	requireOneStepSwitch(t, "blue-green switch of an autoscaled function", samples, res.Duration)
	onlyBody(t, url, "green")
	requireProxied(t, service)
	eventually(t, 30*time.Second, "no canary instance after the switch", func() error {
		if n := canaryInstances(t, service); n != 0 {
			return fmt.Errorf("%d canary instances", n)
		}
		return nil
	})
	// Still autoscaled: the count stays within [1, 3].
	if d, _ := groupCount(t, job); d < 1 || d > 3 {
		t.Errorf("%d containers desired after the switch, want 1 to 3", d)
	}
}
