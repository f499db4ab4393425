package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/proxy"
)

// zeroRolloutSpec is autoscaledRolloutSpec's function scaled to zero when
// idle for window.
func zeroRolloutSpec(app, body, deployBlock, window string) string {
	return strings.Replace(rolloutSpec(app, body, 0, deployBlock, ""), "min_containers = 0",
		fmt.Sprintf("min_containers   = 0\n    max_containers   = 3\n    scaledown_window = %q", window), 1)
}

// coldAnswers GETs url once, waiting through a cold start: anything but
// 200 with body fails the test.
func coldAnswers(t *testing.T, url, body string) {
	t.Helper()
	began := time.Now()
	status, got, err := getWithin(t, url, time.Minute)
	if err != nil || status != http.StatusOK || got != body {
		t.Fatalf("GET %s: %d %q %v, want 200 %q", url, status, got, err, body)
	}
	t.Logf("GET %s: %q after %s", url, got, time.Since(began).Round(time.Millisecond))
}

// atZero waits until job's web group runs no container and wants none.
func atZero(t *testing.T, job string) {
	t.Helper()
	eventually(t, time.Minute, job+" at zero", func() error {
		if d, r := groupCount(t, job); d != 0 || r != 0 {
			return fmt.Errorf("%d desired, %d running", d, r)
		}
		return nil
	})
}

// A blue-green or canary deploy of an autoscaled function at zero has
// nothing to split (Nomad places no canary where nothing runs to
// replace): the version goes live at once, starts no container, and its
// first request cold-starts it; the live URL never answers 404 or 502, the
// preview hostname answers 404 (no canary), and there is no canary to
// promote or abort. With a container running, the same function's canary
// is a canary again.
func TestCanaryAtZero(t *testing.T) {
	const app, job, service = "wren", "e2e--wren", "e2e--wren-web"
	purgeWithSettings(t, job, service)
	bg, canary := `strategy = "blue-green"`, "strategy = \"canary\"\n    traffic  = 50"

	v1 := deploy(t, "wren.hcl", zeroRolloutSpec(app, "v1", bg, "1s"), api.DeployBody{})
	url := v1.Functions[0].URL
	preview := strings.Replace(url, "--wren-web.", "--wren-web--canary.", 1)
	if d, r := groupCount(t, job); d != 0 || r != 0 {
		t.Fatalf("after the first deploy: %d desired, %d running; want none", d, r)
	}
	coldAnswers(t, url, "v1")
	atZero(t, job)

	// Blue-green at zero: live at once, nothing started.
	v2 := deploy(t, "wren.hcl", zeroRolloutSpec(app, "v2", bg, "1s"), api.DeployBody{})
	if v2.Canary != nil {
		t.Fatalf("a blue-green deploy at zero left a canary: %+v", v2.Canary)
	}
	if d, r := groupCount(t, job); d != 0 || r != 0 {
		t.Fatalf("after a blue-green deploy at zero: %d desired, %d running; want none", d, r)
	}
	coldAnswers(t, url, "v2")
	atZero(t, job)

	// Canary at zero: the same, and nothing to settle.
	v3 := deploy(t, "wren.hcl", zeroRolloutSpec(app, "v3", canary, "30s"), api.DeployBody{})
	if v3.Canary != nil {
		t.Fatalf("a canary deploy at zero left a canary: %+v", v3.Canary)
	}
	if !slices.ContainsFunc(v3.Warnings, func(d api.Diagnostic) bool { return strings.Contains(d.Summary, "at zero") }) {
		t.Errorf("a canary deploy at zero did not say it went live at once: warnings %+v", v3.Warnings)
	}
	if h := history(t, app); h.App.LiveVersion != v3.Version {
		t.Fatalf("live version %d after a canary deploy at zero, want %d", h.App.LiveVersion, v3.Version)
	}
	coldAnswers(t, url, "v3")
	status, body, err := getWithin(t, preview, 30*time.Second)
	if err != nil || status != http.StatusNotFound || !strings.Contains(body, proxy.ErrorNoFunction) {
		t.Errorf("preview without a canary: %d %q %v, want 404 %s", status, body, err, proxy.ErrorNoFunction)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := env.client.Promote(ctx, app, api.ChangeBody{Workspace: "e2e"}); api.ErrorCodeOf(err) != api.CodeNotFound {
		t.Errorf("promote with no canary: %v, want %s", err, api.CodeNotFound)
	}
	if _, err := env.client.Abort(ctx, app, api.ChangeBody{Workspace: "e2e"}); api.ErrorCodeOf(err) != api.CodeNotFound {
		t.Errorf("abort with no canary: %v, want %s", err, api.CodeNotFound)
	}

	// One container up (the 30 s window holds it): a canary again, whose
	// preview and split answer, and whose abort leaves v3 alone.
	v4 := deploy(t, "wren.hcl", zeroRolloutSpec(app, "v4", canary, "30s"), api.DeployBody{})
	if v4.Canary == nil || v4.Canary.Canaries != 1 {
		t.Fatalf("version %d with a container running is not a canary of one: %+v", v4.Version, v4.Canary)
	}
	if counts := tally(t, preview, 10); counts["v4"] != 10 {
		t.Errorf("preview answered %v, want v4 alone", counts)
	}
	if counts := tally(t, url, 40); counts["v3"] == 0 || counts["v4"] == 0 {
		t.Errorf("the live URL under a 50%% split answered %v, want both", counts)
	}
	if _, err := env.client.Abort(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("abort: %v", err)
	}
	onlyBody(t, url, "v3")
}
