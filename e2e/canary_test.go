package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
)

// rolloutSpec is a web function answering body, min containers, with the
// given deploy block body (e.g. `strategy = "canary"`); with sickFile set,
// it answers 500 to everything once that file exists.
func rolloutSpec(app, body string, containers int, deployBlock string, sickFile string) string {
	js := fmt.Sprintf(`require("http").createServer((q, s) => s.end(%s)).listen(process.env.PORT, process.env.HOST);`, strconv.Quote(body))
	if sickFile != "" {
		js = fmt.Sprintf(`require("http").createServer((q, s) => {
  if (require("fs").existsSync(%s)) s.statusCode = 500;
  s.end(%s);
}).listen(process.env.PORT, process.env.HOST);`, strconv.Quote(sickFile), strconv.Quote(body))
	}
	return fmt.Sprintf(`app %q {
  workspace = "e2e"
  deploy {
    %s
  }
  function "web" {
    command        = "node"
    args           = ["-e", %s]
    min_containers = %d
    resources {
      memory = 64
    }
    web {
      health_path = "/health"
      rate_limit  = 0
    }
  }
}
`, app, deployBlock, strconv.Quote(js), containers)
}

// tally sends n GETs to url one after another and counts the bodies; any
// error or non-200 answer fails the test.
func tally(t *testing.T, url string, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		status, body, err := get(t, url)
		if err != nil || status != 200 {
			t.Fatalf("GET %s: %d %q %v", url, status, body, err)
		}
		counts[body]++
	}
	return counts
}

// onlyBody waits until 50 GETs of url in a row answer 200 with body.
func onlyBody(t *testing.T, url, body string) {
	t.Helper()
	eventually(t, 30*time.Second, "only "+body+" answers", func() error {
		for i := range 50 {
			status, got, err := get(t, url)
			if err != nil || status != 200 || got != body {
				return fmt.Errorf("request %d: %d %q %v", i+1, status, got, err)
			}
		}
		return nil
	})
}

func versionRecord(t *testing.T, app string, n int) *orchestrator.VersionRecord {
	t.Helper()
	for _, v := range history(t, app).Versions {
		if v.Version == n {
			return v
		}
	}
	t.Fatalf("app %s has no version %d", app, n)
	return nil
}

func hasEvent(v *orchestrator.VersionRecord, prefix string) bool {
	for _, e := range v.Events {
		if strings.HasPrefix(e.What, prefix) {
			return true
		}
	}
	return false
}

// runningAllocs counts the running allocations of job whose caravan
// version (job meta, through the job version) is any.
func runningAllocs(t *testing.T, jobID string) int {
	t.Helper()
	allocs, _, err := env.nomad.Jobs().Allocations(jobID, false, nsq(jobID))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range allocs {
		if a.ClientStatus == "running" && a.DesiredStatus == "run" {
			n++
		}
	}
	return n
}

func TestCanarySplitAbortAndPromote(t *testing.T) {
	const app, job = "bird", "e2e--bird"
	purge(t, job)
	canary := `strategy = "canary"
    traffic  = 10`
	v1 := deploy(t, "bird.hcl", rolloutSpec(app, "v1", 2, canary, ""), api.DeployBody{})
	url := v1.Functions[0].URL
	if v1.Canary != nil {
		t.Fatal("a first version has nothing to be a canary of")
	}
	answers(t, url, "v1")

	v2 := deploy(t, "bird.hcl", rolloutSpec(app, "v2", 2, canary, ""), api.DeployBody{})
	if v2.Canary == nil || v2.Canary.Traffic != 10 {
		t.Fatalf("version 2 is not a canary at 10%%: %+v", v2.Canary)
	}
	preview := v2.Canary.Previews["web"]
	if preview != strings.Replace(url, "--bird-web.", "--bird-web--canary.", 1) {
		t.Fatalf("preview URL %q for %q", preview, url)
	}
	answers(t, preview, "v2")

	counts := tally(t, url, 1000)
	share := float64(counts["v2"]) / 10
	t.Logf("canary share over 1000 requests at traffic = 10: %.1f%% (%v)", share, counts)
	if counts["v1"]+counts["v2"] != 1000 || share < 7 || share > 13 {
		t.Errorf("canary took %.1f%% of 1000 requests (%v), want 10%% give or take 3", share, counts)
	}
	if v := versionRecord(t, app, 2); v.Status != orchestrator.StatusCanary || !hasEvent(v, "canary: ") {
		t.Errorf("version 2 in history: status %q, events %+v", v.Status, v.Events)
	}
	if h := history(t, app); h.App.LiveVersion != 1 {
		t.Errorf("live version %d while the canary runs, want 1", h.App.LiveVersion)
	}

	// No other change while the canary decides.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := env.client.DeployBody(ctx, api.DeployBody{Filename: "bird.hcl", Spec: rolloutSpec(app, "v3", 2, canary, "")})
	var apiErr *api.APIError
	if !errors.As(err, &apiErr) || apiErr.Kind != "canary_pending" || !strings.Contains(err.Error(), "caravan app promote bird") {
		t.Fatalf("deploy during a canary: %v, want a canary_pending error naming promote", err)
	}

	// Abort: everything back on v1, canaries gone.
	if _, err := env.client.Abort(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("abort: %v", err)
	}
	onlyBody(t, url, "v1")
	eventually(t, 30*time.Second, "canaries gone", func() error {
		if n := runningAllocs(t, job); n != 2 {
			return fmt.Errorf("%d running containers", n)
		}
		return nil
	})
	if v := versionRecord(t, app, 2); v.Status != orchestrator.StatusAborted || !hasEvent(v, "aborted") {
		t.Errorf("version 2 after abort: status %q, events %+v", v.Status, v.Events)
	}

	// A new canary, promoted: v4 takes everything and v1's containers go.
	v3 := deploy(t, "bird.hcl", rolloutSpec(app, "v3", 2, canary, ""), api.DeployBody{})
	if v3.Canary == nil {
		t.Fatalf("version %d is not a canary", v3.Version)
	}
	res, err := env.client.Promote(ctx, app, api.ChangeBody{Workspace: "e2e"})
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	t.Logf("promotion took %s", res.Duration.Round(time.Millisecond))
	onlyBody(t, url, "v3")
	eventually(t, 30*time.Second, "2 containers after promote", func() error {
		if n := runningAllocs(t, job); n != 2 {
			return fmt.Errorf("%d running containers", n)
		}
		return nil
	})
	requirePromoted(t, app, v3.Version, preview)
}

func TestCanaryPromotedAfterHealthyPeriod(t *testing.T) {
	const app, job = "finch", "e2e--finch"
	purge(t, job)
	canary := `strategy      = "canary"
    promote_after = "3s"`
	v1 := deploy(t, "finch.hcl", rolloutSpec(app, "v1", 1, canary, ""), api.DeployBody{})
	v2 := deploy(t, "finch.hcl", rolloutSpec(app, "v2", 1, canary, ""), api.DeployBody{})
	if v2.Canary == nil || v2.Canary.PromoteAt.IsZero() {
		t.Fatalf("version 2 is not a canary with a promotion time: %+v", v2.Canary)
	}
	eventually(t, 90*time.Second, "promoted on its own", func() error {
		if v := versionRecord(t, app, 2); v.Status != orchestrator.StatusLive {
			return fmt.Errorf("status %q", v.Status)
		}
		return nil
	})
	if v := versionRecord(t, app, 2); !hasEvent(v, "promoted after 3s") || v.Events[len(v.Events)-1].Who != "auto-promote" {
		t.Errorf("events %+v", v.Events)
	}
	answers(t, v1.Functions[0].URL, "v2")
}

func TestCanaryThatFailsIsReverted(t *testing.T) {
	const app, job = "crow", "e2e--crow"
	purge(t, job)
	canary := `strategy = "canary"
    traffic  = 50`
	v1 := deploy(t, "crow.hcl", rolloutSpec(app, "v1", 1, canary, ""), api.DeployBody{})
	url := v1.Functions[0].URL

	// A canary that never starts is refused and reverted by Nomad.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	crash := strings.Replace(rolloutSpec(app, "v2", 1, canary, ""), `args           = ["-e", `, `args           = ["-e", "process.exit(3)", `, 1)
	if _, err := env.client.DeployBody(ctx, api.DeployBody{Filename: "crow.hcl", Spec: crash}); err == nil {
		t.Fatal("a crashing canary deployed")
	}
	onlyBody(t, url, "v1")

	// A canary that passes, takes traffic, then fails (500 to everything)
	// is aborted by caravan on its own; v1 keeps answering.
	sick := filepath.Join(t.TempDir(), "sick")
	v3 := deploy(t, "crow.hcl", rolloutSpec(app, "v3", 1, canary, sick), api.DeployBody{})
	if v3.Canary == nil {
		t.Fatalf("version %d is not a canary", v3.Version)
	}
	if counts := tally(t, url, 100); counts["v3"] == 0 {
		t.Fatalf("the canary takes no traffic: %v", counts)
	}
	if err := os.WriteFile(sick, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the sick canary aborted", func() error {
		if v := versionRecord(t, app, v3.Version); v.Status != orchestrator.StatusAborted {
			return fmt.Errorf("status %q", v.Status)
		}
		return nil
	})
	if v := versionRecord(t, app, v3.Version); !hasEvent(v, "aborted automatically") {
		t.Errorf("events %+v", v.Events)
	}
	onlyBody(t, url, "v1")
}

// sample is one request of blueGreenLoad.
type sample struct {
	start, end time.Time
	body       string
	err        string
}

func TestBlueGreenSwitchesInOneStepWithoutFailures(t *testing.T) {
	const app, job = "jay", "e2e--jay"
	purge(t, job)
	bg := `strategy = "blue-green"`
	v1 := deploy(t, "jay.hcl", rolloutSpec(app, "blue", 2, bg, ""), api.DeployBody{})
	url := v1.Functions[0].URL
	answers(t, url, "blue")

	stop := sampleLoad(url, 4)
	res := deploy(t, "jay.hcl", rolloutSpec(app, "green", 2, bg, ""), api.DeployBody{})
	time.Sleep(2 * time.Second)
	samples := stop()
	if res.Canary != nil {
		t.Fatal("a blue-green version must be live when deploy returns")
	}

	requireOneStepSwitch(t, "blue-green switch", samples, res.Duration)
	if n := runningAllocs(t, job); n != 2 {
		t.Errorf("%d running containers after the switch, want 2 (blue drained and stopped)", n)
	}
	onlyBody(t, url, "green")
}

// sampleLoad sends GETs to url from workers goroutines, each every 20ms,
// until the returned stop is called; stop returns every request's sample.
func sampleLoad(url string, workers int) (stop func() []sample) {
	var mu sync.Mutex
	var samples []sample
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
				}
				s := sample{start: time.Now()}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				req, _ := newGet(ctx, url)
				resp, err := env.https.Do(req)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					s.body = string(b)
					if resp.StatusCode != 200 {
						s.err = resp.Status
					}
				} else {
					s.err = err.Error()
				}
				cancel()
				s.end = time.Now()
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
		}()
	}
	return func() []sample {
		close(done)
		wg.Wait()
		return samples
	}
}

// switchStats counts failed samples, and those answered by the old body
// though they started after the new body first answered (-1 when it never
// did).
// requirePromoted fails t unless version is app's live version, recorded
// as promoted, and its preview hostname answers 404 (soon).
func requirePromoted(t *testing.T, app string, version int, preview string) {
	t.Helper()
	if h := history(t, app); h.App.LiveVersion != version {
		t.Errorf("live version %d after promote, want %d", h.App.LiveVersion, version)
	}
	if v := versionRecord(t, app, version); v.Status != orchestrator.StatusLive || !hasEvent(v, "promoted") {
		t.Errorf("version %d after promote: status %q, events %+v", version, v.Status, v.Events)
	}
	eventually(t, 30*time.Second, "preview gone after promotion", func() error {
		if status, _, _ := get(t, preview); status != 404 {
			return fmt.Errorf("preview answers %d, want 404", status)
		}
		return nil
	})
}

// requireOneStepSwitch fails t unless every request across a blue/green
// switch from "blue" to "green" answered, and none reached blue after
// green first answered.
func requireOneStepSwitch(t *testing.T, what string, samples []sample, took time.Duration) {
	t.Helper()
	failed, blueAfter, errs := switchStats(samples, "blue", "green")
	t.Logf("%s: %d requests, %d failed, %d answered by blue after green first answered (deploy %s)",
		what, len(samples), failed, blueAfter, took.Round(time.Millisecond))
	if failed != 0 {
		t.Errorf("%d of %d requests failed across the switch: %v", failed, len(samples), errs[:min(len(errs), 5)])
	}
	if blueAfter != 0 {
		t.Errorf("the switch was not one step: %d requests reached blue after green answered", blueAfter)
	}
}

func switchStats(samples []sample, old, new string) (failed, oldAfter int, errs []string) {
	var firstNew time.Time
	for _, s := range samples {
		if s.err != "" {
			failed++
			errs = append(errs, s.err)
		}
		if s.body == new && (firstNew.IsZero() || s.end.Before(firstNew)) {
			firstNew = s.end
		}
	}
	if firstNew.IsZero() {
		return failed, -1, errs
	}
	for _, s := range samples {
		if s.body == old && s.start.After(firstNew) {
			oldAfter++
		}
	}
	return failed, oldAfter, errs
}

// A canary of an app whose other web function did not change splits the
// changed function's traffic alone.
func TestCanaryOfOneFunction(t *testing.T) {
	const app, job = "duo", "e2e--duo"
	purge(t, job)
	canary := `strategy = "canary"
    traffic  = 50`
	v1 := deploy(t, "duo.hcl", twoWeb(app, "a1", "b1", canary), api.DeployBody{})
	before := runningByGroup(t, job)
	v2 := deploy(t, "duo.hcl", twoWeb(app, "a2", "b1", canary), api.DeployBody{})
	if v2.Canary == nil || !slices.Equal(v2.Canary.Functions, []string{"a"}) {
		t.Fatalf("canary %+v, want a split of function a alone", v2.Canary)
	}
	if counts := tally(t, v1.Functions[0].URL, 100); counts["a2"] < 30 || counts["a2"] > 70 {
		t.Errorf("a at traffic = 50: %v", counts)
	}
	if counts := tally(t, v1.Functions[1].URL, 20); counts["b1"] != 20 {
		t.Errorf("b: %v", counts)
	}
	if _, err := env.client.Promote(context.Background(), app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	onlyBody(t, v1.Functions[0].URL, "a2")
	if after := runningByGroup(t, job); !slices.Equal(before["b"], after["b"]) {
		t.Errorf("b's containers were replaced by a canary of a: %v, then %v", before["b"], after["b"])
	}
}
