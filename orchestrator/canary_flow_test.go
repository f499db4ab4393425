package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/jobs"
	nomad "github.com/hashicorp/nomad/api"
)

func init() {
	// The fakes apply a split at once.
	SplitSettle = 0
}

// birds is an app of two containers whose strategy is %s; a canary asks
// for 5 canaries, which Nomad clamps to the count.
const birds = `app "birds" {
  workspace = "dev"
  deploy {
    %s
  }
  function "web" {
    command        = "node"
    args           = ["%s"]
    min_containers = 2
    web {}
  }
}
`

func birdsSpec(strategy, arg string) []byte {
	deploy := fmt.Sprintf("strategy = %q", strategy)
	if strategy == "canary" {
		deploy += "\n    canaries = 5\n    traffic = 10"
	}
	return fmt.Appendf(nil, birds, deploy, arg)
}

const birdsService = "dev--birds-web"

// canaryNomad makes Nomad start canaries as the job's update block asks,
// healthy and waiting for a promotion, registered in Consul with the
// canary tag; on promotion the previous containers leave Consul.
func (h *harness) canaryNomad() {
	h.nomad.onRegister = func(job *nomad.Job, dep *nomad.Deployment) {
		tg := job.TaskGroups[0]
		n := *tg.Update.Canary
		dep.Status, dep.StatusDescription = nomad.DeploymentStatusRunning, needsPromotion
		dep.TaskGroups[*tg.Name] = &nomad.DeploymentState{DesiredCanaries: n, DesiredTotal: *tg.Count, HealthyAllocs: n}
		*tg.Count = 0 // Register places the canaries below, not a full set
		for i := range n {
			a := h.nomad.addAlloc(*job.ID, *tg.Name, dep.ID, nomad.AllocClientStatusRunning)
			a.DeploymentStatus = &nomad.AllocDeploymentStatus{Healthy: ptrTo(true), Canary: true}
			h.consul.register(birdsService, fakeInstance{Instance: Instance{ID: "_nomad-task-" + a.ID, Address: "127.0.0.1", Port: 20000 + i},
				tags: []string{jobs.CanaryTag}, passing: true})
		}
	}
	h.nomad.onPromote = func(dep *nomad.Deployment) {
		// The old containers stop: they leave Consul.
		go h.consul.deregister(birdsService, func(in fakeInstance) bool { return !slices.Contains(in.tags, jobs.CanaryTag) })
	}
}

// liveBirds deploys version 1 of birds and registers its containers in
// Consul.
func (h *harness) liveBirds(strategy string) {
	h.t.Helper()
	h.mustDeploy(birdsSpec(strategy, "v1"))
	for i := range 2 {
		h.consul.register(birdsService, fakeInstance{Instance: Instance{ID: fmt.Sprintf("_nomad-task-old%d", i), Address: "127.0.0.1", Port: 10000 + i}, passing: true})
	}
	h.canaryNomad()
}

func TestCanaryTakesItsShareAndIsPromoted(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	res := h.mustDeploy(birdsSpec("canary", "v2"))
	st := res.Canary
	if st == nil {
		t.Fatalf("result has no canary: %+v", res)
	}
	if st.Version != 2 || st.Traffic != 10 || !slices.Equal(st.Functions, []string{"web"}) ||
		st.Previews["web"] != "https://dev--birds-web--canary.caravan.test" {
		t.Errorf("canary = %+v", st)
	}
	// Nomad got min(canaries, count) = 2; that is what is recorded.
	if st.Canaries != 2 {
		t.Errorf("canaries = %d, want 2 (5 clamped to the function's 2 containers)", st.Canaries)
	}
	if len(st.Keys) == 0 || !slices.Equal(st.Keys, h.consul.keys()) {
		t.Errorf("split keys = %v, in Consul %v", st.Keys, h.consul.keys())
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:canary"}) {
		t.Errorf("history = %v", got)
	}
	rec := h.record("dev--birds")
	if rec.Canary == nil || rec.LiveVersion != 1 {
		t.Errorf("record = %+v", rec)
	}
	// The canary's preview was probed before traffic moved.
	if !slices.Contains(h.prober.probes, "dev--birds-web--canary.caravan.test 0s") {
		t.Errorf("probes = %v", h.prober.probes)
	}

	// While it is undecided, other changes wait.
	var cp *CanaryPendingError
	if _, err := h.deploy(birdsSpec("canary", "v3")); !errors.As(err, &cp) || cp.Version != 2 {
		t.Errorf("deploy during a canary = %v, want *CanaryPendingError", err)
	}

	pres, err := h.o.Promote(context.Background(), Caller{Name: "alice", TokenID: "a11ce", Workspace: "dev"}, ChangeRequest{AppRef: AppRef{App: "birds"}})
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	if pres.Version != 2 {
		t.Errorf("promote result = %+v", pres)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
		t.Errorf("history = %v", got)
	}
	if keys := h.consul.keys(); len(keys) != 0 {
		t.Errorf("split left in Consul: %v", keys)
	}
	rec = h.record("dev--birds")
	if rec.Canary != nil || rec.LiveVersion != 2 {
		t.Errorf("record = %+v", rec)
	}
	v, _ := h.store.Version(context.Background(), "dev--birds", 1, 2)
	if n := len(v.Events); n != 2 || v.Events[1].What != "promoted" || v.Events[1].Who != "alice" || v.Events[1].WhoID != "a11ce" {
		t.Errorf("events = %+v", v.Events)
	}
	if _, err := h.o.Promote(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "birds"}}); err == nil {
		t.Error("a second promotion succeeded")
	}
}

func TestCanaryAbortHandsTrafficBack(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	res := h.mustDeploy(birdsSpec("canary", "v2"))
	if _, err := h.o.Abort(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "birds"}}); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if keys := h.consul.keys(); len(keys) != 0 {
		t.Errorf("split left in Consul: %v", keys)
	}
	if h.nomad.count("fail "+res.Canary.DeploymentID) != 1 {
		t.Errorf("Nomad calls = %v, want the canary deployment failed", h.nomad.calls)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:aborted"}) {
		t.Errorf("history = %v", got)
	}
	if rec := h.record("dev--birds"); rec.Canary != nil || rec.LiveVersion != 1 {
		t.Errorf("record = %+v", rec)
	}
	// An aborted version cannot be rolled back to.
	if _, err := h.o.Rollback(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "birds"}, Version: 2}); err == nil {
		t.Error("rollback to an aborted version succeeded")
	}
}

func TestCanaryWhosePreviewNeverAnswersIsDiscarded(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	h.prober.fail["web"] = errors.New("status 404")
	_, err := h.deploy(birdsSpec("canary", "v2"))
	var re *RolloutError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want *RolloutError", err)
	}
	if len(h.consul.keys()) != 0 || h.nomad.count("fail") != 1 {
		t.Errorf("keys %v, Nomad calls %v: want no split and the deployment failed", h.consul.keys(), h.nomad.calls)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:failed"}) {
		t.Errorf("history = %v", got)
	}
}

func TestCanarySplitThatConsulRefusesIsDiscarded(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	h.consul.writeErr = errors.New("Permission denied")
	if _, err := h.deploy(birdsSpec("canary", "v2")); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Fatalf("err = %v", err)
	}
	if h.nomad.count("fail") != 1 {
		t.Errorf("Nomad calls = %v, want the canaries failed", h.nomad.calls)
	}
}

func TestBlueGreenSwitchesAtOnce(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("blue-green")
	res := h.mustDeploy(birdsSpec("blue-green", "v2"))
	if res.Canary != nil || res.Version != 2 {
		t.Fatalf("result = %+v", res)
	}
	if h.nomad.count("promote") != 1 {
		t.Errorf("Nomad calls = %v", h.nomad.calls)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
		t.Errorf("history = %v", got)
	}
	if keys := h.consul.keys(); len(keys) != 0 {
		t.Errorf("split left in Consul: %v", keys)
	}
	// Every canary took the whole switch: the split had 2 servers at 100%.
	if h.consul.txns < 2 {
		t.Errorf("%d KV transactions, want the split published and removed", h.consul.txns)
	}
}

func TestServeCopyOfACanaryAppRolls(t *testing.T) {
	h := newHarness(t)
	req := DeployRequest{Spec: birdsSpec("canary", "v1"), Serve: true}
	if _, err := h.o.Deploy(context.Background(), ci, req); err != nil {
		t.Fatal(err)
	}
	h.canaryNomad()
	req.Spec = birdsSpec("canary", "v2")
	h.nomad.onRegister = nil
	res, err := h.o.Deploy(context.Background(), ci, req)
	if err != nil || res.Canary != nil || res.JobID != "dev--birds"+jobs.ServeSuffix {
		t.Fatalf("serve redeploy = %+v, %v", res, err)
	}
	v, _ := h.store.Version(context.Background(), res.JobID, 1, 2)
	if v.Strategy != "rolling" {
		t.Errorf("serve copy rolled out with %q", v.Strategy)
	}
}

func TestWatchPromotesAfterPromoteAfter(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	h.mustDeploy(birdsSpec("canary", "v2"))
	rec := h.record("dev--birds")
	rec.Canary.PromoteAt = time.Now().Add(-time.Minute)
	h.o.watchCanary(context.Background(), rec, map[string]int{})
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
		t.Errorf("history = %v", got)
	}
	v, _ := h.store.Version(context.Background(), "dev--birds", 1, 2)
	if ev := v.Events[len(v.Events)-1]; ev.Who != "auto-promote" {
		t.Errorf("last event = %+v", ev)
	}
}

func TestWatchAbortsASickCanaryOnTheSecondCheck(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	h.mustDeploy(birdsSpec("canary", "v2"))
	h.consul.deregister(birdsService, func(in fakeInstance) bool { return slices.Contains(in.tags, jobs.CanaryTag) })
	sick := map[string]int{}
	rec := h.record("dev--birds")
	h.o.watchCanary(context.Background(), rec, sick)
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:canary"}) {
		t.Fatalf("after one sick check: history = %v", got)
	}
	h.o.watchCanary(context.Background(), rec, sick)
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:aborted"}) {
		t.Errorf("after two sick checks: history = %v", got)
	}
	if len(sick) != 0 {
		t.Errorf("sick counts left: %v", sick)
	}
}

func TestWatchFinishesAPromotionNomadDid(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	res := h.mustDeploy(birdsSpec("canary", "v2"))
	// A server promoted in Nomad and stopped before recording it.
	_ = h.nomad.PromoteDeployment(context.Background(), res.Canary.DeploymentID)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.o.WatchCanaries(ctx, time.Millisecond)
	waitFor(t, "the promotion to be recorded", func() bool {
		rec, _, _ := h.store.App(context.Background(), "dev--birds")
		return rec.LiveVersion == 2 && rec.Canary == nil
	})
	if keys := h.consul.keys(); len(keys) != 0 {
		t.Errorf("split left in Consul: %v", keys)
	}
	if n := h.nomad.count("promote"); n != 1 {
		t.Errorf("promoted %d times", n)
	}
}

func TestStopDuringACanaryAbortsIt(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	h.mustDeploy(birdsSpec("canary", "v2"))
	if _, err := h.o.Stop(context.Background(), ci, AppRef{App: "birds"}); err != nil {
		t.Fatal(err)
	}
	if keys := h.consul.keys(); len(keys) != 0 {
		t.Errorf("split left in Consul: %v", keys)
	}
	v, _ := h.store.Version(context.Background(), "dev--birds", 1, 2)
	if v.Status != StatusAborted {
		t.Errorf("canary version is %s", v.Status)
	}
	// The canary's preview URL is waited for too.
	if !slices.Contains(h.prober.probes, "gone dev--birds-web--canary.caravan.test") || !slices.Contains(h.prober.probes, "gone dev--birds-web.caravan.test") {
		t.Errorf("probes = %v, want the URL and the preview seen gone", h.prober.probes)
	}
}

func TestResumeSettlesWhatAStoppedServerLeft(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	depID, done := h.startDeploy(context.Background(), shopSpec("hello"))
	h.store.loseLock("dev--shop") // as if the server died
	<-done
	h.nomad.setDeployment(depID, func(d *nomad.Deployment) { d.Status = nomad.DeploymentStatusSuccessful })
	if err := h.o.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := h.statuses("dev--shop"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
		t.Errorf("history = %v", got)
	}
	// Nothing was registered again.
	if n := h.nomad.count("register"); n != 2 {
		t.Errorf("registered %d times, want 2", n)
	}
}

func TestResumeRevertsACanaryThatNeverTookTraffic(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	// The server stopped between Nomad's healthy canaries and the split:
	// the version is pending in the store, and a split was half written.
	rec := h.record("dev--birds")
	rec.LatestVersion = 2
	_ = h.store.PutApp(context.Background(), rec, h.store.index["dev--birds"])
	_ = h.store.PutVersion(context.Background(), "dev--birds", 1, &VersionRecord{Version: 2, Status: StatusPending, Kind: KindDeploy,
		Strategy: "canary", Spec: string(birdsSpec("canary", "v2")), Filename: "app.hcl"})
	job := copyJob(h.nomad.jobs["dev--birds"])
	parsed := mustParse(t, birdsSpec("canary", "v2"))
	rendered, _ := jobs.Render(parsed, testRouter)
	job.TaskGroups = rendered.Job.TaskGroups
	if _, err := h.nomad.Register(context.Background(), job, 0); err != nil {
		t.Fatal(err)
	}
	h.consul.kv["traefik/http/routers/dev--birds-web-split/rule"] = "Host(`x`)"
	if err := h.o.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:failed"}) {
		t.Errorf("history = %v", got)
	}
	if h.nomad.count("fail") != 1 {
		t.Errorf("Nomad calls = %v, want the canaries failed", h.nomad.calls)
	}
}

func TestSplitsWaitForTheProxy(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	h.proxy.lag = 5
	h.mustDeploy(birdsSpec("canary", "v2"))
	if h.proxy.asked <= 5 {
		t.Errorf("the proxy was asked %d times: the split did not wait for it", h.proxy.asked)
	}
	// Promotion: the 100% split, the old containers gone from Traefik's
	// service, the split's removal — each seen before the next step.
	h.proxy.lag, h.proxy.asked = 3, 0
	if _, err := h.o.Promote(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "birds"}}); err != nil {
		t.Fatal(err)
	}
	if h.proxy.asked < 3+3 {
		t.Errorf("the proxy was asked %d times during the promotion", h.proxy.asked)
	}
}

func TestSplitThatTheProxyNeverServesFailsTheCanary(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	h.proxy.lag = 1 << 30
	old := SplitDeadline
	SplitDeadline = 200 * time.Millisecond
	defer func() { SplitDeadline = old }()
	_, err := h.deploy(birdsSpec("canary", "v2"))
	if err == nil || !strings.Contains(err.Error(), "the proxy did not apply the traffic split") {
		t.Fatalf("err = %v", err)
	}
	if len(h.consul.keys()) != 0 || h.nomad.count("fail") != 1 {
		t.Errorf("keys %v, calls %v: want the split removed and the canaries failed", h.consul.keys(), h.nomad.calls)
	}
}

func TestSplitRouters(t *testing.T) {
	got := splitRouters("traefik", []string{"traefik/http/routers/a-split/rule", "traefik/http/routers/a-split/service",
		"traefik/http/services/a-next/x", "other/http/routers/b/rule"})
	if !slices.Equal(got, []string{"a-split@consul"}) {
		t.Errorf("splitRouters = %v", got)
	}
}

func TestResumeThatFailsWaitsForWhatItStarted(t *testing.T) {
	h := newHarness(t)
	// Two apps: "a" with a pending version, "b" whose history cannot be read.
	for _, id := range []string{"dev--a", "dev--b"} {
		_ = h.store.PutApp(context.Background(), &AppRecord{JobID: id, App: id[5:], Workspace: "dev", Generation: 1, LatestVersion: 1,
			State: StateDeployed}, 0)
	}
	_ = h.store.PutVersion(context.Background(), "dev--a", 1, &VersionRecord{Version: 1, Status: StatusPending, Spec: string(shopSpec("x")), Filename: "app.hcl"})
	h.store.versionErr = map[string]error{"dev--b": errors.New("consul is down")}
	// Hold a's lock, so its resume waits.
	_, unlock, _ := h.store.Lock(context.Background(), "dev--a")
	done := make(chan error, 1)
	go func() { done <- h.o.Resume(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Resume returned (%v) while a resume it started was still waiting: that goroutine would leak", err)
	case <-time.After(50 * time.Millisecond):
	}
	unlock()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "consul is down") {
		t.Errorf("Resume = %v", err)
	}
	v, _ := h.store.Version(context.Background(), "dev--a", 1, 1)
	if v.Status != StatusFailed {
		t.Errorf("a's version is %s, want failed (its job never reached Nomad)", v.Status)
	}
}

// promoteWithFailingRemoval promotes birds' canary while Consul refuses
// every KV write from the moment Nomad promotes: the new version is live,
// and its traffic split cannot be removed.
func (h *harness) promoteWithFailingRemoval() []string {
	h.t.Helper()
	h.liveBirds("canary")
	h.mustDeploy(birdsSpec("canary", "v2"))
	promoted := h.nomad.onPromote
	h.nomad.onPromote = func(dep *nomad.Deployment) {
		promoted(dep)
		h.consul.mu.Lock()
		h.consul.writeErr = errors.New("Permission denied")
		h.consul.mu.Unlock()
	}
	if _, err := h.o.Promote(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "birds"}}); err != nil {
		h.t.Fatalf("promote: %v (the version is live once Nomad promoted it)", err)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
		h.t.Errorf("history = %v", got)
	}
	left := h.consul.keys()
	if len(left) == 0 {
		h.t.Fatal("the split was removed although Consul refused the write")
	}
	return left
}

func (h *harness) consulWrites(err error) {
	h.consul.mu.Lock()
	defer h.consul.mu.Unlock()
	h.consul.writeErr = err
}

// TestSplitLeftByAFailedRemovalIsRetried: a split whose removal failed
// after the promotion is recorded, and caravan server's watch loop removes
// it once Consul takes writes again.
func TestSplitLeftByAFailedRemovalIsRetried(t *testing.T) {
	h := newHarness(t)
	h.promoteWithFailingRemoval()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.o.WatchCanaries(ctx, 5*time.Millisecond)
	h.consulWrites(nil)
	waitFor(t, "the stale split is removed", func() bool { return len(h.consul.keys()) == 0 })
	waitFor(t, "the record forgets it", func() bool {
		rec, _, _ := h.store.App(context.Background(), "dev--birds")
		return rec != nil && len(rec.StaleSplits) == 0
	})
}

// TestStaleSplitIsRemovedBeforeTheNextVersion: a split left behind ranks
// above the app's routers, so it would outrank the next version's: a
// deploy removes it first, and is refused while it cannot.
func TestStaleSplitIsRemovedBeforeTheNextVersion(t *testing.T) {
	h := newHarness(t)
	h.promoteWithFailingRemoval()
	registered := h.nomad.count("register")
	_, err := h.deploy(birdsSpec("canary", "v3"))
	var ue *UnavailableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "traffic split") {
		t.Fatalf("deploy with a stale split Consul keeps refusing to remove: %v, want *UnavailableError naming the split", err)
	}
	if n := h.nomad.count("register"); n != registered {
		t.Fatalf("the refused deploy registered a job (%d registrations, were %d)", n, registered)
	}
	h.consulWrites(nil)
	res := h.mustDeploy(birdsSpec("canary", "v3"))
	if res.Canary == nil || !slices.Equal(h.consul.keys(), res.Canary.Keys) {
		t.Errorf("keys in Consul %v, want v3's split alone %v", h.consul.keys(), res.Canary)
	}
	if rec := h.record("dev--birds"); len(rec.StaleSplits) != 0 {
		t.Errorf("record still lists stale splits %v", rec.StaleSplits)
	}
}
