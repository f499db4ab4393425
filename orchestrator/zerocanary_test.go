package orchestrator

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/autoscale"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

// zeroApp is an app of an autoscaled web function (min 0) and a fixed
// worker, with strategy.
func zeroApp(t *testing.T, strategy, arg string) *spec.App {
	t.Helper()
	app, diags := spec.Parse(zeroBirdsSpec(strategy, arg), "birds.hcl")
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return app
}

func renderedZero(t *testing.T, app *spec.App) *jobs.Rendered {
	t.Helper()
	r, err := jobs.Render(app, proxiedRouter)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func withCount(job *nomad.Job, n int) *nomad.Job {
	j := copyJob(job)
	for _, tg := range j.TaskGroups {
		tg.Count = ptr(n)
	}
	j.Stop = ptr(false)
	return j
}

func TestZeroCanaryFunctions(t *testing.T) {
	v1 := renderedZero(t, zeroApp(t, "canary", "v1"))
	for _, tc := range []struct {
		name     string
		strategy string
		arg      string
		running  int  // the live group's count
		current  bool // a live job
		want     []string
	}{
		{"changed at zero", "canary", "v2", 0, true, []string{"web"}},
		{"changed, running", "canary", "v2", 1, true, nil},
		{"unchanged at zero", "canary", "v1", 0, true, nil},
		{"blue-green at zero", "blue-green", "v2", 0, true, nil},
		{"rolling at zero", "rolling", "v2", 0, true, nil},
		{"no live job", "canary", "v2", 0, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := zeroApp(t, tc.strategy, tc.arg)
			r := renderedZero(t, app)
			var current *nomad.Job
			if tc.current {
				current = withCount(v1.Job, tc.running)
			}
			carryCounts(r.Job, current, app, r.Routes)
			if got := zeroCanaryFunctions(app, r.Job, current, r.Routes); !slices.Equal(got, tc.want) {
				t.Errorf("zeroCanaryFunctions = %v, want %v", got, tc.want)
			}
		})
	}
	// A stopped live job runs nothing to keep live.
	app := zeroApp(t, "canary", "v2")
	r := renderedZero(t, app)
	stoppedJob := withCount(v1.Job, 0)
	stoppedJob.Stop = ptr(true)
	if got := zeroCanaryFunctions(app, r.Job, stoppedJob, r.Routes); got != nil {
		t.Errorf("with the live job stopped: %v, want nil", got)
	}
}

func TestReadyPromotion(t *testing.T) {
	for _, tc := range []struct {
		name           string
		live, canaries int
		canaryStopped  bool
		want           int
	}{
		{"both at zero", 0, 0, false, 0},
		{"the canary serves more", 0, 2, false, 2},
		{"the live one serves more", 3, 1, false, 3},
		{"beyond max_containers", 0, 9, false, 4},
		{"a stopped canary job", 0, 2, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := zeroApp(t, "canary", "v2")
			r := renderedZero(t, app)
			current := withCount(renderedZero(t, zeroApp(t, "canary", "v1")).Job, tc.live)
			cj, err := jobs.RenderCanary(app, proxiedRouter, []string{"web"})
			if err != nil {
				t.Fatal(err)
			}
			cj = withCount(cj, tc.canaries)
			cj.Stop = ptr(tc.canaryStopped)
			readyPromotion(r.Job, current, cj, app, r.Routes, []string{"web"})
			tg := r.Job.TaskGroups[0]
			if *tg.Count != tc.want || *tg.Update.Canary != tc.want || *tg.Update.AutoPromote != (tc.want > 0) {
				t.Errorf("count %d, update canary %d auto_promote %v; want %d, %d, %v",
					*tg.Count, *tg.Update.Canary, *tg.Update.AutoPromote, tc.want, tc.want, tc.want > 0)
			}
		})
	}
}

// canaryKV is the value of key in the fake Consul's KV.
func (h *harness) canaryKV(key string) string {
	h.consul.mu.Lock()
	defer h.consul.mu.Unlock()
	return h.consul.kv[key]
}

// previewFunction is the Caravan-Function the birds' preview routers
// set, read from the KV.
func (h *harness) previewFunction() string {
	for _, k := range h.consul.keys() {
		if strings.Contains(k, "/middlewares/"+birdsService+"--canary-function") && strings.HasSuffix(k, "/"+router.HeaderFunction) {
			return h.canaryKV(k)
		}
	}
	return ""
}

const birdsCanaryJob, birdsCanaryService = "dev--birds--canary", birdsService + "--canary"

// A canary of an autoscaled function at zero runs as a job of its own,
// whose function the preview names and the split sends its share to; the
// app's job keeps the live version. Promote registers the app's job with
// it and stops the canary job; abort stops the canary job and puts the
// live routes back.
func TestCanaryAtZeroRunsAsAJobOfItsOwn(t *testing.T) {
	for _, promote := range []bool{true, false} {
		t.Run(map[bool]string{true: "promote", false: "abort"}[promote], func(t *testing.T) {
			h := newHarnessFor(t, proxiedRouter)
			h.mustDeploy(zeroBirdsSpec("canary", "v1"))
			live := h.routeKeys()
			liveKV := h.consul.snapshot(live)
			liveHash := h.nomad.jobs["dev--birds"].TaskGroups[0].Meta[jobs.MetaGroupHash]
			if f := h.previewFunction(); f != birdsService {
				t.Fatalf("the preview names %q before any canary, want the function %q", f, birdsService)
			}

			res := h.mustDeploy(zeroBirdsSpec("canary", "v2"))
			if res.Canary == nil || res.Canary.CanaryJob != birdsCanaryJob || res.Canary.Traffic != 10 {
				t.Fatalf("canary = %+v, want one in job %s at 10%%", res.Canary, birdsCanaryJob)
			}
			if slices.ContainsFunc(res.Warnings, func(d Diagnostic) bool { return strings.Contains(d.Summary, "at zero") }) {
				t.Errorf("a canary at zero warned that it went live: %+v", res.Warnings)
			}
			if got := h.nomad.jobs["dev--birds"].TaskGroups[0].Meta[jobs.MetaGroupHash]; got != liveHash {
				t.Errorf("the app's job changed under a canary at zero: group hash %s, want %s", got, liveHash)
			}
			cj := h.nomad.jobs[birdsCanaryJob]
			if cj == nil || *cj.TaskGroups[0].Count != 0 || cj.TaskGroups[0].Services[0].Name != birdsCanaryService {
				t.Fatalf("canary job %+v, want one at zero serving %s", cj, birdsCanaryService)
			}
			if got, want := h.splitHeader(), proxy.SplitFunctionHeader(10, birdsCanaryService); got != want {
				t.Errorf("split header = %q, want %q", got, want)
			}
			if f := h.previewFunction(); f != birdsCanaryService {
				t.Errorf("the preview names %q, want the canary function %q", f, birdsCanaryService)
			}
			var rec autoscale.Record
			if err := json.Unmarshal([]byte(h.canaryKV(proxy.SettingsKVPrefix+birdsCanaryService)), &rec); err != nil || rec.Job != birdsCanaryJob || rec.Group != "web" || rec.MinContainers != 0 {
				t.Fatalf("canary function's record %+v (%v), want job %s group web from zero", rec, err, birdsCanaryJob)
			}
			if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:canary"}) {
				t.Errorf("history = %v", got)
			}
			// Undecided, it refuses other deploys.
			if _, err := h.deploy(zeroBirdsSpec("canary", "v3")); err == nil {
				t.Error("a deploy during a canary at zero was not refused")
			}

			h.settleBirds(promote)
			h.canaryJobGone("settling")
			if f := h.previewFunction(); f != birdsService {
				t.Errorf("the preview names %q after settling, want the function %q", f, birdsService)
			}
			hash := h.nomad.jobs["dev--birds"].TaskGroups[0].Meta[jobs.MetaGroupHash]
			if promote {
				if hash == liveHash {
					t.Error("the promoted version is not the app's job's")
				}
				if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
					t.Errorf("history = %v", got)
				}
				if u := h.nomad.jobs["dev--birds"].TaskGroups[0].Update; *u.AutoPromote || *u.Canary != 0 {
					t.Errorf("promoted at zero with update canary %d auto_promote %v, want 0 and false", *u.Canary, *u.AutoPromote)
				}
				return
			}
			if hash != liveHash {
				t.Error("an abort changed the app's job")
			}
			if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:aborted"}) {
				t.Errorf("history = %v", got)
			}
			if got := h.consul.snapshot(live); !maps.Equal(got, liveKV) {
				t.Errorf("route values after the abort differ from the live version's")
			}
		})
	}
}

// A canary at zero whose canary job Nomad no longer runs is aborted on
// the second check that finds it so; one whose job runs is left alone.
func TestWatchAbortsACanaryAtZeroWhoseJobStopped(t *testing.T) {
	h := newHarnessFor(t, proxiedRouter)
	h.mustDeploy(zeroBirdsSpec("canary", "v1"))
	h.mustDeploy(zeroBirdsSpec("canary", "v2"))
	sick := map[string]int{}
	ctx := context.Background()
	h.o.watchCanary(ctx, h.record("dev--birds"), sick)
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:canary"}) {
		t.Fatalf("a running canary job: history = %v", got)
	}
	h.nomad.mu.Lock()
	h.nomad.jobs[birdsCanaryJob].Stop = ptr(true)
	h.nomad.mu.Unlock()
	for range sickChecks {
		h.o.watchCanary(ctx, h.record("dev--birds"), sick)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:aborted"}) {
		t.Errorf("a stopped canary job: history = %v, want the canary aborted", got)
	}
	if got := h.splitHeader(); got != "" {
		t.Errorf("split header after the automatic abort = %q", got)
	}
}

// A server that stops in the middle of a canary at zero, its canary job
// registered and the split published but the canary not yet recorded,
// leaves the version pending. The next server's resume fails the version
// and takes back everything the canary started: the canary job stops, its
// function's record goes, the split goes, and the live version's routes
// are back as they were.
func TestResumeStopsTheCanaryJobOfAnInterruptedCanaryAtZero(t *testing.T) {
	h := newHarnessFor(t, proxiedRouter)
	h.mustDeploy(zeroBirdsSpec("canary", "v1"))
	live := h.routeKeys()
	liveKV := h.consul.snapshot(live)
	h.mustDeploy(zeroBirdsSpec("canary", "v2"))
	if h.nomad.jobs[birdsCanaryJob] == nil || h.splitHeader() == "" {
		t.Fatal("the canary at zero did not start")
	}
	// As if the server had died before recording the canary: the version
	// pending, no canary state.
	h.resumeFailsPending("dev--birds", 2)
	if cj := h.nomad.jobs[birdsCanaryJob]; cj == nil || !*cj.Stop {
		t.Errorf("the canary job runs on after the resume: %+v", cj)
	}
	if got := h.canaryKV(proxy.SettingsKVPrefix + birdsCanaryService); got != "" {
		t.Errorf("the canary function's record is left: %s", got)
	}
	if got := h.splitHeader(); got != "" {
		t.Errorf("split header after the resume = %q, want none", got)
	}
	if f := h.previewFunction(); f != birdsService {
		t.Errorf("the preview names %q after the resume, want the function %q", f, birdsService)
	}
	if got := h.consul.snapshot(live); !maps.Equal(got, liveKV) {
		t.Errorf("route values after the resume differ from the live version's")
	}
}
