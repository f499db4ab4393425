package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
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

// canaryJobStopped waits until canary job id runs nothing.
func canaryJobStopped(t *testing.T, id string) {
	t.Helper()
	eventually(t, time.Minute, id+" stopped", func() error {
		j, _, err := env.nomad.Jobs().Info(id, nsq(id))
		if err != nil {
			return err
		}
		if j.Stop == nil || !*j.Stop {
			return fmt.Errorf("not stopped")
		}
		return nil
	})
}

// A blue-green deploy of an autoscaled function at zero has nothing to
// switch: it goes live at once, starts no container, and its first
// request cold-starts it. A canary deploy at zero is a canary: its
// version runs as a job of its own (e2e--wren--canary) at zero, the live
// version stays live, the preview hostname answers by cold-starting the
// canary, the live hostname's split sends its share there, and promote
// and abort settle it. With a container running, the same function's
// canary is one of Nomad's.
func TestCanaryAtZero(t *testing.T) {
	const app, job, service = "wren", "e2e--wren", "e2e--wren-web"
	const canaryJob, canaryService = job + "--canary", service + "--canary"
	purgeWithSettings(t, job, service)
	purgeWithSettings(t, canaryJob, canaryService)
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

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// startCanary deploys body as a canary at zero and checks it: v2
	// stays live, nothing starts, and the preview cold-starts the canary.
	startCanary := func(body, window string) *orchestrator.DeployResult {
		t.Helper()
		res := deploy(t, "wren.hcl", zeroRolloutSpec(app, body, canary, window), api.DeployBody{})
		if res.Canary == nil || res.Canary.CanaryJob != canaryJob || res.Canary.Traffic != 50 {
			t.Fatalf("a canary deploy at zero: canary %+v, want one in job %s at 50%%", res.Canary, canaryJob)
		}
		if slices.ContainsFunc(res.Warnings, func(d api.Diagnostic) bool { return strings.Contains(d.Summary, "at zero") }) {
			t.Errorf("a canary deploy at zero said it went live at once: %+v", res.Warnings)
		}
		if h := history(t, app); h.App.LiveVersion != v2.Version {
			t.Fatalf("live version %d under a canary at zero, want %d", h.App.LiveVersion, v2.Version)
		}
		if d, r := groupCount(t, job); d != 0 || r != 0 {
			t.Fatalf("a canary deploy at zero started the live function: %d desired, %d running", d, r)
		}
		if d, r := groupCount(t, canaryJob); d != 0 || r != 0 {
			t.Fatalf("a canary deploy at zero started the canary: %d desired, %d running", d, r)
		}
		coldAnswers(t, preview, body)
		// The split: half to the canary, half to v2, each scaled from
		// zero on its own share.
		if counts := tally(t, url, 20); counts[body] != 10 || counts["v2"] != 10 {
			t.Errorf("the live URL under a 50%% split at zero answered %v, want 10 each", counts)
		}
		return res
	}

	// Canary at zero, aborted: v2 alone answers, the canary job stops.
	startCanary("v3", "1s")
	if _, err := env.client.Abort(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("abort: %v", err)
	}
	onlyBody(t, url, "v2")
	canaryJobStopped(t, canaryJob)
	eventually(t, 30*time.Second, "the preview without a canary", func() error {
		status, body, err := getWithin(t, preview, 10*time.Second)
		if err != nil || status != http.StatusNotFound || !strings.Contains(body, proxy.ErrorNoFunction) {
			return fmt.Errorf("%d %q %v, want 404 %s", status, body, err, proxy.ErrorNoFunction)
		}
		return nil
	})
	atZero(t, job)

	// Canary at zero, promoted: v4 live (the 30 s window then holds its
	// container for the last part).
	v4 := startCanary("v4", "30s")
	if _, err := env.client.Promote(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	onlyBody(t, url, "v4")
	canaryJobStopped(t, canaryJob)
	if h := history(t, app); h.App.LiveVersion != v4.Version || h.App.Canary != nil {
		t.Fatalf("after the promotion: live version %d, canary %+v; want %d and none", h.App.LiveVersion, h.App.Canary, v4.Version)
	}

	// One container up: a canary of Nomad's, whose preview and split
	// answer, and whose abort leaves v4 alone.
	v5 := deploy(t, "wren.hcl", zeroRolloutSpec(app, "v5", canary, "30s"), api.DeployBody{})
	if v5.Canary == nil || v5.Canary.Canaries != 1 || v5.Canary.CanaryJob != "" {
		t.Fatalf("version %d with a container running is not a canary of one: %+v", v5.Version, v5.Canary)
	}
	if counts := tally(t, preview, 10); counts["v5"] != 10 {
		t.Errorf("preview answered %v, want v5 alone", counts)
	}
	if counts := tally(t, url, 40); counts["v4"] == 0 || counts["v5"] == 0 {
		t.Errorf("the live URL under a 50%% split answered %v, want both", counts)
	}
	if _, err := env.client.Abort(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("abort: %v", err)
	}
	onlyBody(t, url, "v4")
}

// mixedSpec is an app of a web function at zero (web, back to zero after
// window idle) and one that runs a container (api), both answering body.
func mixedSpec(app, body, window string) string {
	js := func(b string) string {
		return strconv.Quote(fmt.Sprintf(`require("http").createServer((q, s) => s.end(%s)).listen(process.env.PORT, process.env.HOST);`, strconv.Quote(b)))
	}
	return fmt.Sprintf(`app %q {
  workspace = "e2e"
  deploy {
    strategy = "canary"
    traffic  = 50
  }
  function "web" {
    command          = "node"
    args             = ["-e", %s]
    min_containers   = 0
    max_containers   = 2
    scaledown_window = %q
    resources {
      memory = 64
    }
    web {
      rate_limit = 0
    }
  }
  function "api" {
    command = "node"
    args    = ["-e", %s]
    resources {
      memory = 64
    }
    web {
      rate_limit = 0
    }
  }
}
`, app, js("web "+body), window, js("api "+body))
}

// A canary version that changes a function at zero and one that runs a
// container is a canary of both: Nomad's canary of api beside its live
// container, a canary job of web (which starts nothing) while the app's
// job keeps web's live version; each live URL splits, each preview
// answers the canary. Abort leaves the live version alone on both; a
// promotion makes the new one live on both and stops the canary job.
func TestMixedCanary(t *testing.T) {
	const app, job, webService = "finch", "e2e--finch", "e2e--finch-web"
	const canaryJob = job + "--canary"
	purgeWithSettings(t, job, webService)
	purgeWithSettings(t, canaryJob, webService+"--canary")
	v1 := deploy(t, "finch.hcl", mixedSpec(app, "v1", "1s"), api.DeployBody{})
	urls := map[string]string{}
	for _, f := range v1.Functions {
		urls[f.Name] = f.URL
	}
	preview := func(fn string) string {
		return strings.Replace(urls[fn], "--finch-"+fn+".", "--finch-"+fn+"--canary.", 1)
	}
	onlyBody(t, urls["api"], "api v1")
	coldAnswers(t, urls["web"], "web v1")
	atZero(t, job)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	startCanary := func(body string) *orchestrator.DeployResult {
		t.Helper()
		res := deploy(t, "finch.hcl", mixedSpec(app, body, "1s"), api.DeployBody{})
		st := res.Canary
		if st == nil || st.DeploymentID == "" || st.CanaryJob != canaryJob || !slices.Equal(st.JobFunctions, []string{"web"}) {
			t.Fatalf("a mixed canary: %+v, want Nomad's canaries and canary job %s of web", st, canaryJob)
		}
		// Nomad scales none of the app job's groups while its canaries
		// are undecided: the live web holds one container meanwhile.
		if d, _ := groupCount(t, job); d != 1 {
			t.Fatalf("the live web under a mixed canary: %d desired, want 1", d)
		}
		if d, r := groupCount(t, canaryJob); d != 0 || r != 0 {
			t.Fatalf("a mixed canary started the canary web: %d desired, %d running", d, r)
		}
		coldAnswers(t, preview("web"), "web "+body)
		if counts := tally(t, preview("api"), 10); counts["api "+body] != 10 {
			t.Errorf("api's preview answered %v, want the canary alone", counts)
		}
		if counts := tally(t, urls["web"], 20); counts["web "+body] != 10 || counts["web v1"] != 10 {
			t.Errorf("web's live URL under a 50%% split answered %v, want 10 each", counts)
		}
		if counts := tally(t, urls["api"], 40); counts["api "+body] == 0 || counts["api v1"] == 0 {
			t.Errorf("api's live URL under a 50%% split answered %v, want both", counts)
		}
		return res
	}

	startCanary("v2")
	if _, err := env.client.Abort(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("abort: %v", err)
	}
	onlyBody(t, urls["web"], "web v1")
	onlyBody(t, urls["api"], "api v1")
	canaryJobStopped(t, canaryJob)
	// The canary settled, the live web's container goes after its window.
	atZero(t, job)

	v3 := startCanary("v3")
	if _, err := env.client.Promote(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	onlyBody(t, urls["web"], "web v3")
	onlyBody(t, urls["api"], "api v3")
	canaryJobStopped(t, canaryJob)
	if h := history(t, app); h.App.LiveVersion != v3.Version || h.App.Canary != nil {
		t.Fatalf("after the promotion: live version %d, canary %+v; want %d and none", h.App.LiveVersion, h.App.Canary, v3.Version)
	}
}
