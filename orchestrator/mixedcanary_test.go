package orchestrator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

// mixedBirds is an app of an autoscaled web function at zero (web) and
// one that runs two containers (api), both changed by arg.
func mixedBirdsSpec(arg string) []byte {
	return fmt.Appendf(nil, `app "birds" {
  workspace = "dev"
  deploy {
    strategy = "canary"
    canaries = 5
    traffic  = 10
  }
  function "web" {
    command        = "node"
    args           = ["%s"]
    min_containers = 0
    max_containers = 4
    web {}
  }
  function "api" {
    command        = "node"
    args           = ["%s"]
    min_containers = 2
    web {}
  }
}
`, arg, arg)
}

const birdsAPIService = "dev--birds-api"

// mixedNomad makes Nomad place canaries of the app job's groups a version
// changes that run containers, healthy and waiting for a promotion, in
// Consul with the canary tag; on promotion the previous ones leave.
func (h *harness) mixedNomad() {
	h.nomad.onRegister = func(job *nomad.Job, dep *nomad.Deployment) {
		history := h.nomad.history[*job.ID]
		if *job.ID != "dev--birds" || len(history) < 2 {
			return
		}
		prev := jobs.FunctionHashes(history[len(history)-2], nil)
		for _, tg := range job.TaskGroups {
			if tg.Update == nil || *tg.Update.Canary == 0 || *tg.Count == 0 || prev[*tg.Name] == tg.Meta[jobs.MetaGroupHash] {
				continue
			}
			n := min(*tg.Update.Canary, *tg.Count)
			dep.Status, dep.StatusDescription = nomad.DeploymentStatusRunning, needsPromotion
			dep.TaskGroups[*tg.Name] = &nomad.DeploymentState{DesiredCanaries: n, DesiredTotal: *tg.Count, HealthyAllocs: n}
			*tg.Count = 0 // the canaries below, not a full set
			for i := range n {
				a := h.nomad.addAlloc(*job.ID, *tg.Name, dep.ID, nomad.AllocClientStatusRunning)
				a.DeploymentStatus = &nomad.AllocDeploymentStatus{Healthy: ptrTo(true), Canary: true}
				h.consul.register("dev--birds-"+*tg.Name, fakeInstance{Instance: Instance{ID: "_nomad-task-" + a.ID, Address: "127.0.0.1", Port: 20000 + i},
					tags: []string{jobs.CanaryTag}, passing: true})
			}
		}
	}
	h.nomad.onPromote = func(dep *nomad.Deployment) {
		go h.consul.deregister(birdsAPIService, func(in fakeInstance) bool { return !slices.Contains(in.tags, jobs.CanaryTag) })
	}
}

// A canary version that changes a function at zero and one that runs
// containers is a canary of both: Nomad's canaries of the running one
// beside its live containers, a canary job of the one at zero, the app's
// job keeping the latter's live version. A promotion promotes Nomad's
// first, then registers the app's job with the version at zero and stops
// the canary job; an abort takes both back.
func TestMixedCanaryIsACanaryOfEveryFunction(t *testing.T) {
	for _, promote := range []bool{true, false} {
		t.Run(map[bool]string{true: "promote", false: "abort"}[promote], func(t *testing.T) {
			h := newHarnessFor(t, proxiedRouter)
			h.mustDeploy(mixedBirdsSpec("v1"))
			for i := range 2 {
				h.consul.register(birdsAPIService, fakeInstance{Instance: Instance{ID: fmt.Sprintf("_nomad-task-old%d", i), Address: "127.0.0.1", Port: 10000 + i}, passing: true})
			}
			h.mixedNomad()
			liveHashes := jobs.FunctionHashes(h.nomad.jobs["dev--birds"], nil)

			res := h.mustDeploy(mixedBirdsSpec("v2"))
			st := res.Canary
			if st == nil || st.DeploymentID == "" || st.CanaryJob != birdsCanaryJob {
				t.Fatalf("canary = %+v, want Nomad's deployment and canary job %s", st, birdsCanaryJob)
			}
			if !slices.Equal(st.Functions, []string{"api", "web"}) || !slices.Equal(st.JobFunctions, []string{"web"}) || st.Canaries != 2 {
				t.Errorf("functions %v, in the canary job %v, canaries %d; want [api web], [web], 2", st.Functions, st.JobFunctions, st.Canaries)
			}
			if st.Previews["web"] == "" || st.Previews["api"] == "" {
				t.Errorf("previews = %v, want both functions'", st.Previews)
			}
			if slices.ContainsFunc(res.Warnings, func(d Diagnostic) bool { return strings.Contains(d.Summary, "at zero") }) {
				t.Errorf("a mixed canary warned that its function at zero went live: %+v", res.Warnings)
			}
			hashes := jobs.FunctionHashes(h.nomad.jobs["dev--birds"], nil)
			if hashes["web"] != liveHashes["web"] || hashes["api"] == liveHashes["api"] {
				t.Errorf("the app's job runs web %s (live %s) and api %s (live %s): want web's live group, api's new one",
					hashes["web"], liveHashes["web"], hashes["api"], liveHashes["api"])
			}
			if n := groupCounts(h.nomad.jobs["dev--birds"])["web"]; n != 1 {
				t.Errorf("the live web runs %d containers under the canary, want 1 (Nomad scales nothing until it is settled)", n)
			}
			if cj := h.nomad.jobs[birdsCanaryJob]; cj == nil || len(cj.TaskGroups) != 1 || *cj.TaskGroups[0].Name != "web" || *cj.TaskGroups[0].Count != 0 {
				t.Fatalf("canary job %+v, want web alone at zero", cj)
			}
			if f := h.previewFunction(); f != birdsCanaryService {
				t.Errorf("web's preview names %q, want the canary function %q", f, birdsCanaryService)
			}
			if !slices.ContainsFunc(st.Keys, func(k string) bool { return strings.Contains(k, "birds-api") }) ||
				!slices.ContainsFunc(st.Keys, func(k string) bool { return strings.Contains(k, "birds-web") }) {
				t.Errorf("split keys %v, want both functions' splits", st.Keys)
			}
			if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:canary"}) {
				t.Errorf("history = %v", got)
			}

			h.settleBirds(promote)
			for _, k := range h.consul.keys() {
				if slices.Contains(st.Keys, k) {
					t.Errorf("split key left in Consul KV after settling: %s", k)
				}
			}
			h.canaryJobGone("settling")
			hashes = jobs.FunctionHashes(h.nomad.jobs["dev--birds"], nil)
			if promote {
				if h.nomad.count("promote "+st.DeploymentID) != 1 {
					t.Errorf("Nomad calls = %v, want deployment %s promoted", h.nomad.calls, st.DeploymentID)
				}
				if hashes["web"] == liveHashes["web"] || hashes["api"] == liveHashes["api"] {
					t.Errorf("after the promotion the app's job runs %v, the live version's %v: want the new version of both", hashes, liveHashes)
				}
				if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
					t.Errorf("history = %v", got)
				}
				return
			}
			if h.nomad.count("fail "+st.DeploymentID) != 1 {
				t.Errorf("Nomad calls = %v, want deployment %s failed", h.nomad.calls, st.DeploymentID)
			}
			if hashes["web"] != liveHashes["web"] {
				t.Errorf("an abort changed web in the app's job")
			}
			if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:aborted"}) {
				t.Errorf("history = %v", got)
			}
		})
	}
}

// canaryParts splits a canary's functions, routes and split keys between
// its canary job and Nomad's deployment.
func TestCanaryParts(t *testing.T) {
	app, diags := spec.Parse(mixedBirdsSpec("v2"), "birds.hcl")
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	routes := renderedZero(t, app).Routes
	keyOf := map[string]string{} // function → one of its split keys
	for _, r := range routes {
		keyOf[r.Function] = router.SplitPrefixes("traefik", r)[0] + "service"
	}
	for _, tc := range []struct {
		name     string
		st       CanaryState
		job, dep []string // functions of each part (nil: no such part)
	}{
		{"Nomad's", CanaryState{DeploymentID: "d", Functions: []string{"api", "web"}}, nil, []string{"api", "web"}},
		{"at zero", CanaryState{CanaryJob: "c", Functions: []string{"web"}}, []string{"web"}, nil},
		{"mixed", CanaryState{DeploymentID: "d", CanaryJob: "c", Functions: []string{"api", "web"}, JobFunctions: []string{"web"}}, []string{"web"}, []string{"api"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var own []router.Route
			for _, r := range routes {
				if slices.Contains(tc.st.Functions, r.Function) {
					own = append(own, r)
					tc.st.Keys = append(tc.st.Keys, keyOf[r.Function])
				}
			}
			job, dep := canaryParts("traefik", &tc.st, own)
			if (job == nil) != (tc.job == nil) || (dep == nil) != (tc.dep == nil) {
				t.Fatalf("parts: canary job's %v, Nomad's %v; want %v and %v", job, dep, tc.job, tc.dep)
			}
			check := func(what string, p *canaryPart, want []string) {
				var fns, wantKeys []string
				for _, r := range p.routes {
					fns = append(fns, r.Function)
				}
				for _, f := range want {
					wantKeys = append(wantKeys, keyOf[f])
				}
				slices.Sort(fns)
				slices.Sort(wantKeys)
				got := slices.Sorted(slices.Values(p.state.Keys))
				if !slices.Equal(p.state.Functions, want) || !slices.Equal(fns, want) || !slices.Equal(got, wantKeys) {
					t.Errorf("%s part: functions %v, routes %v, keys %v; want %v and keys %v", what, p.state.Functions, fns, p.state.Keys, want, wantKeys)
				}
			}
			if job != nil {
				check("canary job's", job, tc.job)
				if job.state.DeploymentID != "" {
					t.Errorf("the canary job's part names deployment %s", job.state.DeploymentID)
				}
			}
			if dep != nil {
				check("Nomad's", dep, tc.dep)
				if dep.state.CanaryJob != "" {
					t.Errorf("Nomad's part names canary job %s", dep.state.CanaryJob)
				}
			}
		})
	}
}

// A server that stops in the middle of a mixed canary, before recording
// it, leaves its version pending with Nomad's canaries waiting for a
// promotion and its canary job running. The next server's resume fails
// the version and takes back both: Nomad's deployment failed, the canary
// job stopped, the splits removed.
func TestResumeTakesBackAnInterruptedMixedCanary(t *testing.T) {
	h := newHarnessFor(t, proxiedRouter)
	h.mustDeploy(mixedBirdsSpec("v1"))
	for i := range 2 {
		h.consul.register(birdsAPIService, fakeInstance{Instance: Instance{ID: fmt.Sprintf("_nomad-task-old%d", i), Address: "127.0.0.1", Port: 10000 + i}, passing: true})
	}
	h.mixedNomad()
	st := h.mustDeploy(mixedBirdsSpec("v2")).Canary
	if st == nil || st.DeploymentID == "" || h.nomad.jobs[birdsCanaryJob] == nil {
		t.Fatalf("the mixed canary did not start: %+v", st)
	}
	h.resumeFailsPending("dev--birds", 2)
	if h.nomad.count("fail "+st.DeploymentID) != 1 {
		t.Errorf("Nomad calls = %v, want deployment %s failed", h.nomad.calls, st.DeploymentID)
	}
	if cj := h.nomad.jobs[birdsCanaryJob]; cj == nil || !*cj.Stop {
		t.Errorf("the canary job runs on after the resume: %+v", cj)
	}
	for _, k := range h.consul.keys() {
		if slices.Contains(st.Keys, k) {
			t.Errorf("split key left in Consul KV after the resume: %s", k)
		}
	}
}

// A mixed canary is healthy while Nomad's canaries pass and its canary
// job runs (its function at zero has no container to check); it is
// aborted once Nomad's canaries leave Consul.
func TestWatchChecksBothPartsOfAMixedCanary(t *testing.T) {
	h := newHarnessFor(t, proxiedRouter)
	h.mustDeploy(mixedBirdsSpec("v1"))
	h.mixedNomad()
	h.mustDeploy(mixedBirdsSpec("v2"))
	sick := map[string]int{}
	ctx := context.Background()
	for range sickChecks + 1 {
		h.o.watchCanary(ctx, h.record("dev--birds"), sick)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:canary"}) {
		t.Fatalf("a healthy mixed canary: history = %v", got)
	}
	h.consul.deregister(birdsAPIService, func(fakeInstance) bool { return true })
	for range sickChecks {
		h.o.watchCanary(ctx, h.record("dev--birds"), sick)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:aborted"}) {
		t.Errorf("Nomad's canaries gone: history = %v, want the canary aborted", got)
	}
	if cj := h.nomad.jobs[birdsCanaryJob]; cj == nil || !*cj.Stop {
		t.Errorf("the canary job runs on after the automatic abort: %+v", cj)
	}
}

// While Nomad's canaries hold a job's deployment open, Nomad scales none
// of its groups: a canary version that changes a function running
// containers gives every autoscaled function at zero one container.
func TestHoldWarm(t *testing.T) {
	parse := func(src []byte) *spec.App {
		app, diags := spec.Parse(src, "birds.hcl")
		if diags.HasErrors() {
			t.Fatal(diags.Error())
		}
		return app
	}
	live := withCount(renderedZero(t, parse(mixedBirdsSpec("v1"))).Job, 0)
	for _, tg := range live.TaskGroups {
		if *tg.Name == "api" {
			tg.Count = ptr(2)
		}
	}
	onlyWeb := strings.Replace(string(mixedBirdsSpec("v1")), `args           = ["v1"]
    min_containers = 0`, `args           = ["v2"]
    min_containers = 0`, 1)
	for _, tc := range []struct {
		name string
		src  []byte
		want []string
	}{
		{"a running function changed", mixedBirdsSpec("v2"), []string{"web"}},
		{"only the function at zero changed", []byte(onlyWeb), nil},
		{"nothing changed", mixedBirdsSpec("v1"), nil},
		{"rolling", []byte(strings.Replace(string(mixedBirdsSpec("v2")), "strategy = \"canary\"\n    canaries = 5\n    traffic  = 10", `strategy = "rolling"`, 1)), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := parse(tc.src)
			r := renderedZero(t, app)
			carryCounts(r.Job, live, app, r.Routes)
			for _, tg := range r.Job.TaskGroups {
				if *tg.Name == "api" {
					tg.Count = ptr(2)
				}
			}
			got := holdWarm(app, r.Job, live)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("holdWarm = %v, want %v", got, tc.want)
			}
			if counts := groupCounts(r.Job); tc.want != nil && counts["web"] != 1 {
				t.Errorf("web's count %d, want 1", counts["web"])
			}
		})
	}
}

// resumeFailsPending records job's version as a server that stopped in
// the middle of its canary's deploy leaves it (pending, no canary
// recorded), resumes, and checks the resume failed it.
func (h *harness) resumeFailsPending(job string, version int) {
	h.t.Helper()
	ctx := context.Background()
	rec := h.record(job)
	rec.Canary = nil
	if err := h.store.PutApp(ctx, rec, h.store.index[job]); err != nil {
		h.t.Fatal(err)
	}
	v, _ := h.store.Version(ctx, job, rec.Generation, version)
	v.Status = StatusPending
	if err := h.store.PutVersion(ctx, job, rec.Generation, v); err != nil {
		h.t.Fatal(err)
	}
	if err := h.o.Resume(ctx); err != nil {
		h.t.Fatal(err)
	}
	if got := h.statuses(job); len(got) < version || got[version-1] != fmt.Sprintf("%d:failed", version) {
		h.t.Errorf("history after the resume = %v, want version %d failed", got, version)
	}
}

// canaryJobGone fails the test unless, after what, no split header is
// left, the birds' canary job is stopped and its function's record gone.
func (h *harness) canaryJobGone(what string) {
	h.t.Helper()
	if got := h.splitHeader(); got != "" {
		h.t.Errorf("split header after %s = %q, want none", what, got)
	}
	if cj := h.nomad.jobs[birdsCanaryJob]; cj == nil || !*cj.Stop {
		h.t.Errorf("the canary job runs on after %s: %+v", what, cj)
	}
	if got := h.canaryKV(proxy.SettingsKVPrefix + birdsCanaryService); got != "" {
		h.t.Errorf("the canary function's record is left after %s: %s", what, got)
	}
}

// settleBirds promotes the birds' canary, or aborts it.
func (h *harness) settleBirds(promote bool) {
	h.t.Helper()
	ref := ChangeRequest{AppRef: AppRef{App: "birds"}}
	var err error
	if promote {
		_, err = h.o.Promote(context.Background(), ci, ref)
	} else {
		_, err = h.o.Abort(context.Background(), ci, ref)
	}
	if err != nil {
		h.t.Fatalf("settle: %v", err)
	}
}

// A canary version whose running functions Nomad updates in place (no
// canary of them: they are live at once) goes live, its functions at zero
// too, with the warning that they had nothing to split: no canary job is
// left holding a version the app's job already runs in part.
func TestMixedCanaryWithoutNomadsCanariesGoesLive(t *testing.T) {
	h := newHarnessFor(t, proxiedRouter)
	h.mustDeploy(mixedBirdsSpec("v1"))
	liveHashes := jobs.FunctionHashes(h.nomad.jobs["dev--birds"], nil)
	res := h.mustDeploy(mixedBirdsSpec("v2"))
	if res.Canary != nil {
		t.Fatalf("canary = %+v, want the version live", res.Canary)
	}
	if !slices.ContainsFunc(res.Warnings, func(d Diagnostic) bool { return strings.Contains(d.Summary, "at zero") }) {
		t.Errorf("warnings = %+v, want web's at-zero warning", res.Warnings)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
		t.Errorf("history = %v", got)
	}
	hashes := jobs.FunctionHashes(h.nomad.jobs["dev--birds"], nil)
	if hashes["web"] == liveHashes["web"] || hashes["api"] == liveHashes["api"] {
		t.Errorf("the app's job runs %v, the previous version's %v: want the new version of both", hashes, liveHashes)
	}
	if cj := h.nomad.jobs[birdsCanaryJob]; cj != nil {
		t.Errorf("a canary job was registered: %+v", cj)
	}
	if f := h.previewFunction(); f != birdsService {
		t.Errorf("web's preview names %q, want the function %q", f, birdsService)
	}
}
