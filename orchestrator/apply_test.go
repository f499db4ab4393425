package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"github.com/caravanhq/caravan/bundlestore"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

// harness is an Orchestrator wired to the fakes.
type harness struct {
	t      *testing.T
	nomad  *fakeNomad
	consul *fakeConsul
	store  *memStore
	prober *fakeProber
	proxy  *fakeProxy
	dns    *fakeResolver
	o      *Orchestrator
}

var testRouter = router.Config{Domain: "caravan.test", EntryPoint: "websecure", CertResolver: "caravan", KVRoot: "traefik",
	AuthURL: "http://127.0.0.1:7474/v1/auth/proxy"}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessFor(t, testRouter)
}

// newHarnessFor is newHarness with routes rendered under rc.
func newHarnessFor(t *testing.T, rc router.Config) *harness {
	t.Helper()
	h := &harness{t: t, nomad: newFakeNomad(), consul: newFakeConsul(), store: newMemStore(), prober: &fakeProber{fail: map[string]error{}}}
	h.proxy = &fakeProxy{consul: h.consul, root: testRouter.KVRoot}
	h.dns = &fakeResolver{txt: map[string][]string{}}
	// Workspace dev's tests serve names under example.com: an operator
	// assigned it.
	h.store.domains["example.com"] = DomainBinding{Domain: "example.com", Workspace: "dev", Method: "assigned"}
	o, err := New(Config{Nomad: h.nomad, Consul: h.consul, Store: h.store, Router: rc, Prober: h.prober, Proxy: h.proxy, Resolver: h.dns,
		Policy: mustPolicy(t, harnessPolicy), Bundles: &bundlestore.Local{Dir: t.TempDir()}, BundleSpool: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h.o = o
	return h
}

// ci may act on workspace dev.
var ci = Caller{Name: "ci", TokenID: "c1d2e3f4a5b6c7d8", Workspace: "dev"}

// shop is an app with a web function whose greeting is %s.
const shop = `app "shop" {
  workspace = "dev"
  function "web" {
    command = "node"
    args    = ["server.js", "%s"]
    web {}
  }
}
`

func shopSpec(greeting string) []byte { return fmt.Appendf(nil, shop, greeting) }

func (h *harness) deploy(src []byte) (*DeployResult, error) {
	h.t.Helper()
	return h.o.Deploy(context.Background(), ci, DeployRequest{Spec: src, Filename: "app.hcl"})
}

func (h *harness) mustDeploy(src []byte) *DeployResult {
	h.t.Helper()
	res, err := h.deploy(src)
	if err != nil {
		h.t.Fatalf("deploy: %v", err)
	}
	return res
}

func (h *harness) record(jobID string) *AppRecord {
	h.t.Helper()
	rec, _, _ := h.store.App(context.Background(), jobID)
	if rec == nil {
		h.t.Fatalf("no record of %s", jobID)
	}
	return rec
}

// statuses lists "version:status" of every version of jobID's current
// history.
func (h *harness) statuses(jobID string) []string {
	h.t.Helper()
	rec := h.record(jobID)
	vs, _ := h.store.Versions(context.Background(), jobID, rec.Generation)
	var out []string
	for _, v := range vs {
		out = append(out, fmt.Sprintf("%d:%s", v.Version, v.Status))
	}
	return out
}

func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no nomad", Config{Consul: h.consul, Store: h.store, Router: testRouter}, "Nomad"},
		{"no consul (the library example once did this)", Config{Nomad: h.nomad, Store: h.store, Router: testRouter}, "Consul"},
		{"no store", Config{Nomad: h.nomad, Consul: h.consul, Router: testRouter}, "Store"},
		{"no domain", Config{Nomad: h.nomad, Consul: h.consul, Store: h.store}, "Router.Domain"},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New = %v, want an error naming %s", c.name, err, c.want)
		}
	}
}

func TestDeployNewAppGoesLive(t *testing.T) {
	h := newHarness(t)
	res := h.mustDeploy(shopSpec("hi"))
	if !res.Changed || res.Version != 1 || res.JobID != "dev--shop" || res.Kind != KindDeploy {
		t.Fatalf("result = %+v", res)
	}
	if len(res.Functions) != 1 || res.Functions[0].Change != Created || res.Functions[0].URL != "https://dev--shop-web.caravan.test" {
		t.Errorf("functions = %+v", res.Functions)
	}
	rec := h.record("dev--shop")
	if rec.State != StateDeployed || rec.LiveVersion != 1 || rec.LatestVersion != 1 || rec.Generation != 1 {
		t.Errorf("record = %+v", rec)
	}
	if got := h.statuses("dev--shop"); !slices.Equal(got, []string{"1:live"}) {
		t.Errorf("history = %v", got)
	}
	if got := h.store.heldHosts("dev--shop"); !slices.Equal(got, []string{"dev--shop-web.caravan.test"}) {
		t.Errorf("hosts = %v", got)
	}
	if got := h.nomad.calls; !slices.Equal(got, []string{"plan dev--shop", "register dev--shop"}) {
		t.Errorf("Nomad calls = %v", got)
	}
	// A new app has no previous containers to wait out.
	if !slices.Equal(h.prober.probes, []string{"dev--shop-web.caravan.test 0s"}) {
		t.Errorf("probes = %v", h.prober.probes)
	}
}

func TestDeployUnchangedIsANoop(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	res := h.mustDeploy(shopSpec("hi"))
	if res.Changed || res.Version != 1 || res.Functions[0].Change != Unchanged {
		t.Errorf("second deploy = %+v", res)
	}
	if n := h.nomad.count("register"); n != 1 {
		t.Errorf("registered %d times, want once", n)
	}
	// A strategy override is how to roll out, not what runs.
	res, err := h.o.Deploy(context.Background(), ci, DeployRequest{Spec: shopSpec("hi"), Filename: "app.hcl", Strategy: "recreate"})
	if err != nil || res.Changed {
		t.Errorf("deploy --strategy recreate of the same spec = %+v, %v; want a no-op", res, err)
	}
}

func TestDeployChangeSupersedesTheLiveVersion(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	res := h.mustDeploy(shopSpec("hello"))
	if !res.Changed || res.Version != 2 || res.Functions[0].Change != Updated {
		t.Fatalf("result = %+v", res)
	}
	if got := h.statuses("dev--shop"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
		t.Errorf("history = %v", got)
	}
	// With Traefik's API to watch, an update waits out no window.
	if got := h.prober.probes[len(h.prober.probes)-1]; got != "dev--shop-web.caravan.test 0s" {
		t.Errorf("last probe = %q", got)
	}
}

const shopService = "dev--shop-web"

// liveShop deploys version 1 of shop, its container registered in Consul,
// and makes Nomad register each container it places for a later version,
// the previous ones leaving Consul a moment after.
func (h *harness) liveShop() {
	h.t.Helper()
	h.mustDeploy(shopSpec("hi"))
	h.consul.register(shopService, fakeInstance{Instance: Instance{ID: "_nomad-task-old0", Address: "127.0.0.1", Port: 10000}, passing: true})
	h.nomad.onPlaced = func(allocs []*nomad.Allocation) {
		for i, a := range allocs {
			h.consul.register(shopService, fakeInstance{Instance: Instance{ID: "_nomad-task-" + a.ID, Address: "127.0.0.1", Port: 20000 + i}, passing: true})
		}
		go h.consul.deregister(shopService, func(in fakeInstance) bool { return strings.Contains(in.ID, "old") })
	}
}

func TestUpdateWaitsForTraefikToDropTheOldContainers(t *testing.T) {
	h := newHarness(t)
	h.liveShop()
	// Traefik lists the old container for 5 more questions.
	h.proxy.lag = 5
	var askedAtProbe int
	var inConsulAtProbe []Instance
	h.prober.onProbe = func(router.Route) {
		h.proxy.mu.Lock()
		askedAtProbe = h.proxy.asked
		h.proxy.mu.Unlock()
		inConsulAtProbe, _, _ = h.consul.Instances(context.Background(), shopService, "", false, 0)
	}
	h.mustDeploy(shopSpec("hello"))
	if askedAtProbe <= 5 {
		t.Errorf("the probe came after %d questions to Traefik: before it dropped the old container", askedAtProbe)
	}
	if len(inConsulAtProbe) != 1 || strings.Contains(inConsulAtProbe[0].ID, "old") {
		t.Errorf("Consul held %v at the probe, want the new container alone", inConsulAtProbe)
	}
	// Once Traefik lists the new containers alone, one answer is enough.
	if got := h.prober.probes[len(h.prober.probes)-1]; got != "dev--shop-web.caravan.test 0s" {
		t.Errorf("last probe = %q, want no stable window", got)
	}
}

func TestUpdateThatTraefikNeverSeesIsReverted(t *testing.T) {
	h := newHarness(t)
	h.liveShop()
	h.proxy.lag = 1 << 30
	old := SplitDeadline
	SplitDeadline = 200 * time.Millisecond
	defer func() { SplitDeadline = old }()
	_, err := h.deploy(shopSpec("hello"))
	var re *RolloutError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "did not leave the proxy") {
		t.Fatalf("err = %v, want a *RolloutError saying the old containers did not leave the proxy", err)
	}
	if h.nomad.count("revert") != 1 {
		t.Errorf("Nomad calls = %v, want a revert", h.nomad.calls)
	}
}

func TestUpdateWithoutAProxyWaitsTheStableWindow(t *testing.T) {
	h := newHarness(t)
	h.o.proxy = nil
	h.liveShop()
	h.mustDeploy(shopSpec("hello"))
	if got := h.prober.probes[len(h.prober.probes)-1]; got != "dev--shop-web.caravan.test "+StableProbe.String() {
		t.Errorf("last probe = %q, want the stable window", got)
	}
}

func TestDeployRefusesAnotherWorkspace(t *testing.T) {
	h := newHarness(t)
	_, err := h.o.Deploy(context.Background(), Caller{Name: "evil", Workspace: "evil"}, DeployRequest{Spec: shopSpec("hi")})
	var fe *ForbiddenError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want *ForbiddenError", err)
	}
	if len(h.nomad.calls) != 0 {
		t.Errorf("Nomad was called: %v", h.nomad.calls)
	}
}

func TestDeployBadSpecAndStrategy(t *testing.T) {
	h := newHarness(t)
	var de *DiagnosticsError
	if _, err := h.deploy([]byte(`app "x" {`)); !errors.As(err, &de) {
		t.Errorf("broken spec: err = %v, want *DiagnosticsError", err)
	}
	var be *BadRequestError
	if _, err := h.o.Deploy(context.Background(), ci, DeployRequest{Spec: shopSpec("hi"), Strategy: "yolo"}); !errors.As(err, &be) {
		t.Errorf("unknown strategy: err = %v, want *BadRequestError", err)
	}
}

// twoDomains serves a.example.com and z.example.com.
const twoDomains = `app "shop" {
  workspace = "dev"
  function "web" {
    command = "node"
    web {
      custom_domains = ["a.example.com", "z.example.com"]
    }
  }
}
`

func TestRefusedDeployReleasesTheHostsItClaimed(t *testing.T) {
	h := newHarness(t)
	other := HostOwner{JobID: "other--app", Workspace: "other", App: "app"}
	h.store.claim("z.example.com", other)
	_, err := h.deploy([]byte(twoDomains))
	var taken *HostTakenError
	if !errors.As(err, &taken) || taken.Host != "z.example.com" {
		t.Fatalf("err = %v, want z.example.com taken", err)
	}
	if got := h.store.heldHosts("dev--shop"); len(got) != 0 {
		t.Errorf("after a refused deploy the app still holds %v", got)
	}
	if rec, _, _ := h.store.App(context.Background(), "dev--shop"); rec != nil {
		t.Errorf("a refused deploy handed out a version: %+v", rec)
	}
}

// TestEnvironmentCannotReachAnotherWorkspacesApp: workspace acme with
// environment prod and workspace acme-prod share hostnames but not job IDs
// or records: the second deploy is refused by the hostname claim, and
// nothing of the first's changes.
func TestEnvironmentCannotReachAnotherWorkspacesApp(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	first := Caller{Name: "prod-ci", Workspace: "acme-prod"}
	res, err := h.o.Deploy(ctx, first, DeployRequest{Spec: []byte(strings.ReplaceAll(shop, `"dev"`, `"acme-prod"`)), Filename: "app.hcl"})
	if err != nil {
		t.Fatal(err)
	}
	before := h.statuses(res.JobID)
	job, _ := h.nomad.Job(ctx, res.JobID)
	registered := *job.JobModifyIndex

	second := Caller{Name: "acme-ci", Workspace: "acme"}
	src := strings.ReplaceAll(shop, `workspace = "dev"`, "workspace = \"acme\"\n  environment = \"prod\"")
	_, err = h.o.Deploy(ctx, second, DeployRequest{Spec: fmt.Appendf(nil, src, "mine now"), Filename: "app.hcl"})
	var taken *HostTakenError
	if !errors.As(err, &taken) || taken.Host != "acme-prod--shop-web.caravan.test" {
		t.Fatalf("second deploy: %v, want acme-prod--shop-web.caravan.test taken", err)
	}
	if got := h.statuses(res.JobID); !slices.Equal(got, before) {
		t.Errorf("the first app's history went from %v to %v", before, got)
	}
	if rec := h.record(res.JobID); rec.Workspace != "acme-prod" || rec.Environment != "" {
		t.Errorf("the first app's record is %+v", rec)
	}
	if job, _ := h.nomad.Job(ctx, res.JobID); *job.JobModifyIndex != registered {
		t.Error("the second deploy registered the first app's job")
	}
	if rec, _, _ := h.store.App(ctx, "acme.prod--shop"); rec != nil {
		t.Errorf("a refused deploy left a record: %+v", rec)
	}
	// Each resolves to its own, by workspace and environment.
	if _, err := h.o.History(ctx, second, AppRef{App: "shop", Workspace: "acme", Environment: "prod"}); err == nil {
		t.Error("workspace acme sees an app in environment prod it never deployed")
	}
	if hist, err := h.o.History(ctx, first, AppRef{App: "shop", Workspace: "acme-prod"}); err != nil || hist.App.JobID != res.JobID {
		t.Errorf("history of acme-prod's app: %v %v", hist, err)
	}
}

func TestUnplaceableVersionNeverReachesNomad(t *testing.T) {
	h := newHarness(t)
	h.nomad.planFailed = map[string]*nomad.AllocationMetric{"web": {NodesEvaluated: 1, NodesInPool: 1,
		DimensionExhausted: map[string]int{"memory": 1}}}
	_, err := h.deploy(shopSpec("hi"))
	var re *RolloutError
	if !errors.As(err, &re) || re.Function != "web" || !strings.Contains(re.Cause, "exhausted: memory (1)") {
		t.Fatalf("err = %v", err)
	}
	if h.nomad.count("register") != 0 {
		t.Error("registered an unplaceable version")
	}
	if got := h.statuses("dev--shop"); !slices.Equal(got, []string{"1:failed"}) {
		t.Errorf("history = %v", got)
	}
	if rec := h.record("dev--shop"); rec.State != StateFailed || rec.LiveVersion != 0 {
		t.Errorf("record = %+v", rec)
	}
}

func TestFailedDeploymentNamesTheFunctionAndKeepsTheLiveVersion(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	h.nomad.onRegister = func(job *nomad.Job, dep *nomad.Deployment) {
		dep.Status, dep.StatusDescription = nomad.DeploymentStatusFailed, "Failed due to unhealthy allocations"
		dep.TaskGroups["web"].HealthyAllocs = 0
		a := h.nomad.addAlloc(*job.ID, "web", dep.ID, nomad.AllocClientStatusFailed)
		a.TaskStates["web"].Failed = true
		a.TaskStates["web"].Events = []*nomad.TaskEvent{{Type: nomad.TaskTerminated, DisplayMessage: "Exit Code: 1"},
			{Type: nomad.TaskNotRestarting, DisplayMessage: "Exceeded allowed attempts 0"}}
	}
	_, err := h.deploy(shopSpec("crash"))
	var re *RolloutError
	if !errors.As(err, &re) || re.Function != "web" || re.Version != 2 || re.AllocID == "" ||
		re.Cause != "task web: Terminated: Exit Code: 1; Not Restarting: Exceeded allowed attempts 0" {
		t.Fatalf("err = %#v", err)
	}
	if got := h.statuses("dev--shop"); !slices.Equal(got, []string{"1:live", "2:failed"}) {
		t.Errorf("history = %v", got)
	}
	if rec := h.record("dev--shop"); rec.State != StateFailed || rec.LiveVersion != 1 {
		t.Errorf("record = %+v", rec)
	}
}

func TestVersionThatDoesNotAnswerIsReverted(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	h.prober.fail["web"] = errors.New("status 502 Bad Gateway")
	_, err := h.deploy(shopSpec("broken"))
	var re *RolloutError
	if !errors.As(err, &re) || !strings.Contains(re.Cause, "does not answer through the proxy") || !strings.Contains(re.Cause, "reverted to version 1") {
		t.Fatalf("err = %v", err)
	}
	if h.nomad.count("revert dev--shop 0") != 1 {
		t.Errorf("Nomad calls = %v, want a revert to job version 0", h.nomad.calls)
	}
}

func TestClientLeavingBeforeAnyWriteChangesNothing(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.o.Deploy(ctx, ci, DeployRequest{Spec: shopSpec("hi")}); err == nil {
		t.Fatal("deploy with a cancelled context succeeded")
	}
	if rec, _, _ := h.store.App(context.Background(), "dev--shop"); rec != nil {
		t.Errorf("a version was handed out: %+v", rec)
	}
}

// startDeploy deploys src in the background with a deployment that runs
// until the test changes it; it returns the deployment's ID once Nomad
// has it, and the deploy's outcome.
func (h *harness) startDeploy(ctx context.Context, src []byte) (depID string, done <-chan error) {
	started, out := make(chan string, 1), make(chan error, 1)
	h.nomad.onRegister = func(job *nomad.Job, dep *nomad.Deployment) {
		dep.Status = nomad.DeploymentStatusRunning
		for _, st := range dep.TaskGroups {
			st.HealthyAllocs = 0 // not yet (see allHealthy)
		}
		started <- dep.ID
	}
	go func() {
		_, err := h.o.Deploy(ctx, ci, DeployRequest{Spec: src})
		out <- err
	}()
	depID = <-started
	h.nomad.onRegister = nil
	return depID, out
}

func TestRolloutBelongsToTheServerNotTheClient(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	// The client leaves while the deployment runs.
	ctx, cancel := context.WithCancel(context.Background())
	depID, done := h.startDeploy(ctx, shopSpec("hello"))
	cancel()
	h.nomad.setDeployment(depID, func(d *nomad.Deployment) { d.Status = nomad.DeploymentStatusSuccessful })
	if err := <-done; err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if got := h.statuses("dev--shop"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
		t.Errorf("history = %v", got)
	}
}

func TestLostLockStopsTheRolloutAndTheNextHolderSettlesIt(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	depID, done := h.startDeploy(context.Background(), shopSpec("hello"))
	h.store.loseLock("dev--shop")
	if err := <-done; !errors.Is(err, ErrLockLost) {
		t.Fatalf("deploy after losing the lock = %v, want ErrLockLost", err)
	}
	// It wrote nothing after losing the lock: version 2 is still pending,
	// and Nomad's deployment was left alone.
	if got := h.statuses("dev--shop"); !slices.Equal(got, []string{"1:live", "2:pending"}) {
		t.Errorf("history = %v", got)
	}
	if h.nomad.count("fail") != 0 {
		t.Errorf("the rollout failed the deployment after losing its lock: %v", h.nomad.calls)
	}
	// The next change settles version 2 first, from what Nomad did.
	h.nomad.setDeployment(depID, func(d *nomad.Deployment) { d.Status = nomad.DeploymentStatusSuccessful })
	res := h.mustDeploy(shopSpec("howdy"))
	if res.Version != 3 {
		t.Errorf("next version = %d, want 3", res.Version)
	}
	if got := h.statuses("dev--shop"); !slices.Equal(got, []string{"1:superseded", "2:superseded", "3:live"}) {
		t.Errorf("history = %v", got)
	}
}

func TestRolloverReplacesEveryContainer(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	res, err := h.o.Rollover(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "shop"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindRollover || res.Version != 2 || res.Functions[0].Change != Updated {
		t.Errorf("result = %+v", res)
	}
	job, _ := h.nomad.Job(context.Background(), "dev--shop")
	if got := job.TaskGroups[0].Tasks[0].Env[EnvRollover]; got != "1" {
		t.Errorf("%s = %q, want 1", EnvRollover, got)
	}
	// The rolled-over app is unchanged to a deploy of the same spec.
	if res := h.mustDeploy(shopSpec("hi")); res.Changed {
		t.Errorf("deploy after a rollover changed it: %+v", res)
	}
}

func TestRollbackDeploysAnEarlierSpecAsANewVersion(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("one"))
	h.mustDeploy(shopSpec("two"))
	res, err := h.o.Rollback(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "shop", Workspace: "dev"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindRollback || res.Version != 3 {
		t.Errorf("result = %+v", res)
	}
	job, _ := h.nomad.Job(context.Background(), "dev--shop")
	if args := job.TaskGroups[0].Tasks[0].Config["args"]; !strings.Contains(fmt.Sprint(args), "one") {
		t.Errorf("rolled back job runs %v", args)
	}
	v, _ := h.store.Version(context.Background(), "dev--shop", 1, 3)
	if v.RollbackOf != 1 {
		t.Errorf("rollback_of = %d", v.RollbackOf)
	}
	if _, err := h.o.Rollback(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "shop"}, Version: 9}); err == nil {
		t.Error("rollback to a version that does not exist succeeded")
	}
}

func TestStopPurgesAndReleases(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	rec, err := h.o.Stop(context.Background(), ci, AppRef{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != StateStopped || rec.StoppedBy != "ci" || rec.StoppedByID != ci.TokenID || rec.LiveVersion != 0 {
		t.Errorf("record = %+v", rec)
	}
	if job, _ := h.nomad.Job(context.Background(), "dev--shop"); job != nil {
		t.Error("job still registered")
	}
	if got := h.store.heldHosts("dev--shop"); len(got) != 0 {
		t.Errorf("hosts still held: %v", got)
	}
	// Deploying the name again starts a new history.
	res := h.mustDeploy(shopSpec("hi"))
	if res.Version != 1 || h.record("dev--shop").Generation != 2 {
		t.Errorf("redeploy after stop = %+v", res)
	}
}

func TestStopReturnsOnceItsURLsAnswer404(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	h.mustDeploy(shopSpec("hello"))
	h.prober.probes = nil
	if _, err := h.o.Stop(context.Background(), ci, AppRef{App: "shop"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.prober.probes, []string{"gone dev--shop-web.caravan.test"}) {
		t.Errorf("probes = %v, want the URL seen gone", h.prober.probes)
	}
}

func TestStopWhoseVersionsCannotBeReadStillStops(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	h.store.versionErr = map[string]error{"dev--shop": errors.New("consul is down")}
	if _, err := h.o.Stop(context.Background(), ci, AppRef{App: "shop"}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if rec := h.record("dev--shop"); rec.State != StateStopped {
		t.Errorf("record = %+v", rec)
	}
}

func TestStopWhoseURLsStillAnswerSaysWhich(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	h.prober.served = map[string]bool{"web": true}
	old := GoneDeadline
	GoneDeadline = 100 * time.Millisecond
	defer func() { GoneDeadline = old }()
	_, err := h.o.Stop(context.Background(), ci, AppRef{App: "shop"})
	var ue *UnavailableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "https://dev--shop-web.caravan.test") {
		t.Fatalf("err = %v, want an *UnavailableError naming the URL that still answers", err)
	}
	// The app is stopped all the same.
	if rec := h.record("dev--shop"); rec.State != StateStopped {
		t.Errorf("record = %+v", rec)
	}
}

func TestReadsOfOneApp(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	h.mustDeploy(shopSpec("hello"))
	u, err := h.o.URL(context.Background(), ci, AppRef{App: "shop"}, "web")
	if err != nil || u != "https://dev--shop-web.caravan.test" {
		t.Errorf("URL = %q, %v", u, err)
	}
	if _, err := h.o.URL(context.Background(), ci, AppRef{App: "shop"}, "nope"); err == nil {
		t.Error("URL of a missing function succeeded")
	}
	hist, err := h.o.History(context.Background(), ci, AppRef{App: "shop"})
	if err != nil || len(hist.Versions) != 2 || hist.Versions[0].Spec != "" {
		t.Errorf("History = %+v, %v (specs must be left out)", hist, err)
	}
	apps, err := h.o.Apps(context.Background(), ci)
	if err != nil || len(apps) != 1 || apps[0].Version != 2 || len(apps[0].Functions) != 1 || apps[0].Functions[0].Running == 0 {
		t.Errorf("Apps = %+v, %v", apps, err)
	}
	if apps, _ := h.o.Apps(context.Background(), Caller{Name: "x", Workspace: "other"}); len(apps) != 0 {
		t.Errorf("another workspace sees %+v", apps)
	}
	var nf *NotFoundError
	if _, err := h.o.History(context.Background(), Caller{Name: "x", Workspace: "other"}, AppRef{App: "shop"}); !errors.As(err, &nf) {
		t.Errorf("another workspace's History = %v, want not found", err)
	}
	if _, err := h.o.History(context.Background(), Caller{Name: "x", Workspace: "other"}, AppRef{App: "shop", Workspace: "dev"}); !errors.As(err, &nf) {
		t.Errorf("another workspace's History by workspace = %v, want not found", err)
	}
}

func TestPlanChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	p, err := h.o.Plan(context.Background(), ci, DeployRequest{Spec: shopSpec("hi")})
	if err != nil || p.Changed {
		t.Fatalf("plan of the live spec = %+v, %v", p, err)
	}
	p, err = h.o.Plan(context.Background(), ci, DeployRequest{Spec: []byte(twoDomains)})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Changed || p.Version != 2 || p.LiveVersion != 1 || len(p.Diff) == 0 {
		t.Errorf("plan = %+v", p)
	}
	if !slices.Equal(p.HostsAdded, []string{"a.example.com", "z.example.com"}) {
		t.Errorf("hosts added = %v", p.HostsAdded)
	}
	if h.nomad.count("register") != 1 {
		t.Error("plan registered a job")
	}
	if rec := h.record("dev--shop"); rec.LatestVersion != 1 {
		t.Errorf("plan handed out a version: %+v", rec)
	}
}

func TestPlanNamesProblems(t *testing.T) {
	h := newHarness(t)
	h.store.claim("z.example.com", HostOwner{JobID: "other--x", Workspace: "other", App: "x"})
	h.nomad.planFailed = map[string]*nomad.AllocationMetric{"web": {NodesEvaluated: 2, NodesInPool: 2,
		ConstraintFiltered: map[string]int{"${attr.kernel.name} = linux": 2}}}
	p, err := h.o.Plan(context.Background(), ci, DeployRequest{Spec: []byte(twoDomains)})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Problems) != 2 || !strings.Contains(p.Problems[0], "cannot be placed") || !strings.Contains(p.Problems[1], "z.example.com") {
		t.Errorf("problems = %q", p.Problems)
	}
	if !slices.Equal(p.Certificates, []string{"a.example.com", "dev--shop-web.caravan.test"}) {
		t.Errorf("certificates = %v", p.Certificates)
	}
	// With a DNS-01 resolver the platform's wildcard serves the generated
	// hostname: only the custom domain needs a certificate of its own.
	h.o.router.DNSCertResolver = "caravan-dns"
	p, err = h.o.Plan(context.Background(), ci, DeployRequest{Spec: []byte(twoDomains)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Certificates, []string{"a.example.com"}) {
		t.Errorf("with the wildcard, certificates = %v, want the custom domain alone", p.Certificates)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustParse(t *testing.T, src []byte) *spec.App {
	t.Helper()
	app, diags := spec.Parse(src, "app.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return app
}
