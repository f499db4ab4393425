package orchestrator

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

func TestTransitions(t *testing.T) {
	all := []VersionStatus{StatusPending, StatusCanary, StatusLive, StatusSuperseded, StatusFailed, StatusAborted}
	allowed := map[[2]VersionStatus]bool{
		{StatusPending, StatusLive}: true, {StatusPending, StatusFailed}: true, {StatusPending, StatusCanary}: true,
		{StatusCanary, StatusLive}: true, {StatusCanary, StatusFailed}: true, {StatusCanary, StatusAborted}: true,
		{StatusLive, StatusSuperseded}: true,
	}
	for _, from := range all {
		for _, to := range all {
			v := &VersionRecord{Version: 3, Status: from}
			err := transition(v, to)
			want := allowed[[2]VersionStatus{from, to}]
			if (err == nil) != want {
				t.Errorf("%s -> %s: err = %v, want allowed = %v", from, to, err, want)
			}
			var te *TransitionError
			switch {
			case want && v.Status != to:
				t.Errorf("%s -> %s: status is %s", from, to, v.Status)
			case !want && (v.Status != from || !errors.As(err, &te) || te.From != from || te.To != to):
				t.Errorf("%s -> %s refused: status %s, err %v", from, to, v.Status, err)
			}
		}
	}
	if (&TransitionError{Version: 2, From: StatusAborted, To: StatusLive}).Error() != "version 2 is aborted and cannot become live" {
		t.Error("TransitionError message changed")
	}
}

func TestEffective(t *testing.T) {
	canary := &spec.App{Name: "a", Deploy: &spec.Deploy{Strategy: spec.StrategyCanary, Canaries: ptrTo(2)}}
	for _, c := range []struct {
		name     string
		parsed   *spec.App
		strategy string
		serve    bool
		want     string
	}{
		{"the spec's", canary, "", false, spec.StrategyCanary},
		{"no deploy block rolls", &spec.App{Name: "a"}, "", false, spec.StrategyRolling},
		{"the request overrides", canary, spec.StrategyRecreate, false, spec.StrategyRecreate},
		{"override without a deploy block", &spec.App{Name: "a"}, spec.StrategyBlueGreen, false, spec.StrategyBlueGreen},
		{"a serve copy of a canary rolls", canary, "", true, spec.StrategyRolling},
		{"a serve copy of a blue-green override rolls", canary, spec.StrategyBlueGreen, true, spec.StrategyRolling},
		{"a serve copy keeps recreate", canary, spec.StrategyRecreate, true, spec.StrategyRecreate},
	} {
		before := deploy0(c.parsed)
		app := effective(c.parsed, c.strategy, c.serve)
		if got := app.DeployStrategy(); got != c.want || app.Serve != c.serve {
			t.Errorf("%s: strategy %s serve %v, want %s %v", c.name, got, app.Serve, c.want, c.serve)
		}
		if deploy0(c.parsed) != before || c.parsed.Serve {
			t.Errorf("%s: the parsed spec was changed", c.name)
		}
	}
	if app := effective(canary, "", false); app.Deploy.Canaries == nil || *app.Deploy.Canaries != 2 {
		t.Error("effective lost the canary settings")
	}
}

// deploy0 is a's deploy block or its zero value, for comparisons.
func deploy0(a *spec.App) spec.Deploy {
	if a.Deploy == nil {
		return spec.Deploy{}
	}
	return *a.Deploy
}

// rendered renders src's app (as the effective app of a deploy).
func rendered(t *testing.T, src []byte) (*spec.App, *jobs.Rendered) {
	t.Helper()
	app := effective(mustParse(t, src), "", false)
	r, err := jobs.Render(app, testRouter)
	if err != nil {
		t.Fatal(err)
	}
	return app, r
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	app, r := rendered(t, shopSpec("hi"))
	_, changed := rendered(t, shopSpec("hello"))
	running := r.Job
	live := &AppRecord{JobID: "dev--shop", LiveVersion: 3, LatestVersion: 4, Generation: 1, Hosts: []string{"old.example.com"}}
	hashes := r.FunctionHashes()
	for _, c := range []struct {
		name      string
		kind      VersionKind
		rendered  *jobs.Rendered
		rec       *AppRecord
		current   *nomad.Job
		old       map[string]string
		noop      bool
		change    Change
		version   int
		rollovers int
	}{
		{"a new app", KindDeploy, r, &AppRecord{JobID: "dev--shop", Generation: 1}, nil, map[string]string{}, false, Created, 1, 0},
		{"the same spec is a no-op", KindDeploy, r, live, running, hashes, true, Unchanged, 0, 0},
		{"a changed spec", KindDeploy, changed, live, running, hashes, false, Updated, 5, 0},
		{"a stopped job is not a no-op", KindDeploy, r, live, withStop(running), hashes, false, Unchanged, 5, 0},
		{"a record with no live version is not a no-op", KindDeploy, r, &AppRecord{JobID: "dev--shop", LatestVersion: 1, Generation: 1},
			running, hashes, false, Unchanged, 2, 0},
		{"a rollover replaces the unchanged", KindRollover, r, live, running, hashes, false, Updated, 5, 1},
		{"a rollback replaces the unchanged", KindRollback, r, live, running, hashes, false, Updated, 5, 0},
	} {
		p := decide(change{kind: c.kind, app: app, req: DeployRequest{Spec: []byte("src"), Tag: "t1"}}, ci, c.rendered, c.rec, c.current, c.old, now)
		if p.Noop != c.noop || p.Functions[0].Change != c.change {
			t.Errorf("%s: noop %v change %s, want %v %s", c.name, p.Noop, p.Functions[0].Change, c.noop, c.change)
			continue
		}
		if p.Record.Rollovers != c.rollovers {
			t.Errorf("%s: rollovers %d, want %d", c.name, p.Record.Rollovers, c.rollovers)
		}
		if c.noop {
			if p.Version != nil {
				t.Errorf("%s: a no-op recorded a version", c.name)
			}
			continue
		}
		v := p.Version
		if v.Version != c.version || p.Record.LatestVersion != c.version || v.Status != StatusPending || v.Kind != c.kind ||
			v.Who != "ci" || v.WhoID != ci.TokenID || v.Tag != "t1" || v.Spec != "src" || !v.StartedAt.Equal(now) || v.Strategy != "rolling" {
			t.Errorf("%s: version %+v", c.name, v)
		}
		if !slices.Equal(p.Hosts, []string{"dev--shop-web.caravan.test"}) || !slices.Equal(p.Claim, p.Hosts) {
			t.Errorf("%s: hosts %v claim %v", c.name, p.Hosts, p.Claim)
		}
	}
	// The record passed in is never changed.
	if live.LatestVersion != 4 || live.Rollovers != 0 || len(live.Hosts) != 1 {
		t.Errorf("decide changed its input: %+v", live)
	}
	// Until the new version is live, the app holds old and new hosts.
	p := decide(change{kind: KindDeploy, app: app}, ci, changed, live, running, hashes, now)
	if !slices.Equal(p.Record.Hosts, []string{"dev--shop-web.caravan.test", "old.example.com"}) {
		t.Errorf("hosts while rolling out: %v", p.Record.Hosts)
	}
}

func withStop(j *nomad.Job) *nomad.Job {
	c := copyJob(j)
	c.Stop = ptrTo(true)
	return c
}

func TestFunctionResults(t *testing.T) {
	app, r := rendered(t, []byte(calc))
	now := r.FunctionHashes()
	old := map[string]string{"web": "other", "nightly": now["nightly"], "gone": "x"}
	got := functionResults(app, r, old)
	want := []FunctionResult{
		{Name: "web", Change: Updated, Containers: 1, URL: "https://dev--calc-web.caravan.test"},
		{Name: "nightly", Change: Unchanged, Schedule: "0 3 * * *"},
		{Name: "sum", Change: Created, Callable: true},
		{Name: "gone", Change: Removed},
	}
	if len(got) != len(want) {
		t.Fatalf("results = %+v", got)
	}
	for i := range want {
		if g := got[i]; g.Name != want[i].Name || g.Change != want[i].Change || g.Containers != want[i].Containers ||
			g.URL != want[i].URL || g.Schedule != want[i].Schedule || g.Callable != want[i].Callable {
			t.Errorf("result %d = %+v, want %+v", i, g, want[i])
		}
	}
	if len(old) != 3 {
		t.Error("functionResults changed the running hashes it was given")
	}
}

func TestRollbackTarget(t *testing.T) {
	rec := &AppRecord{App: "shop", LiveVersion: 5, LatestVersion: 6}
	versions := []*VersionRecord{
		{Version: 1, Status: StatusSuperseded}, {Version: 2, Status: StatusFailed}, {Version: 3, Status: StatusSuperseded},
		{Version: 4, Status: StatusAborted}, {Version: 5, Status: StatusLive}, {Version: 6, Status: StatusCanary},
	}
	for _, c := range []struct {
		want, got int
		err       string
	}{
		{0, 3, ""}, // the last one live before the live one
		{1, 1, ""},
		{5, 5, ""},
		{2, 0, "version 2 never went live (failed)"},
		{4, 0, "version 4 never went live (aborted)"},
		{6, 0, "version 6 never went live (canary)"},
		{9, 0, "it has no version 9 (latest is 6)"},
	} {
		v, err := rollbackTarget(rec, versions, c.want)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("rollback to %d: err = %v, want %q", c.want, err, c.err)
		case c.err == "" && (err != nil || v.Version != c.got):
			t.Errorf("rollback to %d: %+v, %v; want version %d", c.want, v, err, c.got)
		}
	}
	var nf *NotFoundError
	if _, err := rollbackTarget(&AppRecord{LiveVersion: 1}, versions[:1], 0); !errors.As(err, &nf) {
		t.Errorf("nothing earlier: err = %v", err)
	}
	var ce *ConflictError
	if _, err := rollbackTarget(rec, versions, 2); !errors.As(err, &ce) {
		t.Errorf("a version that never went live: err = %T, want *ConflictError (409)", err)
	}
}

func TestSettle(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	rec := &AppRecord{JobID: "j", State: StateDeployed, LiveVersion: 1, Hosts: []string{"a", "b"}}
	live := &VersionRecord{Version: 1, Status: StatusLive, Hosts: []string{"a", "b"}}
	pending := &VersionRecord{Version: 2, Status: StatusPending, Hosts: []string{"b", "c"}}

	out, err := settle(rec, pending, live, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Versions) != 2 || out.Versions[0].Status != StatusSuperseded || out.Versions[1].Status != StatusLive ||
		!out.Versions[1].FinishedAt.Equal(now) {
		t.Errorf("versions = %+v", out.Versions)
	}
	if r := out.Record; r.LiveVersion != 2 || r.State != StateDeployed || !slices.Equal(r.Hosts, []string{"b", "c"}) {
		t.Errorf("record = %+v", r)
	}
	if !slices.Equal(out.Release, []string{"a"}) {
		t.Errorf("release = %v", out.Release)
	}
	if rec.LiveVersion != 1 || pending.Status != StatusPending || live.Status != StatusLive {
		t.Error("settle changed its inputs")
	}

	out, err = settle(rec, pending, live, errors.New("boom"), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Versions) != 1 || out.Versions[0].Status != StatusFailed || out.Versions[0].Error != "boom" ||
		out.Record.State != StateFailed || out.Record.LiveVersion != 1 || len(out.Release) != 0 {
		t.Errorf("failed: %+v, %+v", out.Versions[0], out.Record)
	}

	// A canary becomes live the same way; a settled version cannot settle again.
	if out, err := settle(rec, &VersionRecord{Version: 2, Status: StatusCanary}, live, nil, now); err != nil || out.Record.LiveVersion != 2 {
		t.Errorf("canary: %+v, %v", out, err)
	}
	var te *TransitionError
	if _, err := settle(rec, &VersionRecord{Version: 2, Status: StatusAborted}, live, nil, now); !errors.As(err, &te) {
		t.Errorf("an aborted version went live: %v", err)
	}
	// A first version supersedes nothing.
	if out, _ := settle(&AppRecord{}, pending, nil, nil, now); len(out.Versions) != 1 {
		t.Errorf("first version: %+v", out.Versions)
	}
}

func TestCanaryDecisions(t *testing.T) {
	dep := &nomad.Deployment{TaskGroups: map[string]*nomad.DeploymentState{
		"web": {DesiredCanaries: 2}, "api": {DesiredCanaries: 1}, "worker": {DesiredCanaries: 5}}}
	if n := canaryCount(dep, []string{"web", "api"}); n != 2 {
		t.Errorf("canaryCount = %d, want 2 (only the split functions count)", n)
	}
	for _, c := range []struct {
		promote, promoted bool
		want              settlement
	}{
		{true, true, finishPromotion}, {true, false, promoteCanary}, {false, false, abortCanary}, {false, true, abortCanary},
	} {
		if got := howToSettle(c.promote, c.promoted); got != c.want {
			t.Errorf("howToSettle(%v, %v) = %v, want %v", c.promote, c.promoted, got, c.want)
		}
	}
	if settledStatus(true) != StatusFailed || settledStatus(false) != StatusAborted {
		t.Error("settledStatus")
	}

	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	manual := &CanaryState{}
	due := &CanaryState{PromoteAt: now.Add(-time.Second)}
	later := &CanaryState{PromoteAt: now.Add(time.Hour)}
	for _, c := range []struct {
		name              string
		st                *CanaryState
		promoted, healthy bool
		sick              int
		want              watchAction
		wantSick          int
	}{
		{"promoted in Nomad", manual, true, false, 1, watchFinish, 0},
		{"promote_after passed", due, false, true, 0, watchPromote, 0},
		{"promote_after passed, even if sick", due, false, false, 1, watchPromote, 0},
		{"healthy, waiting", later, false, true, 1, watchNothing, 0},
		{"sick once", manual, false, false, 0, watchNothing, 1},
		{"sick twice", manual, false, false, 1, watchAbort, 0},
	} {
		got, sick := canaryWatch(c.st, now, c.promoted, c.healthy, c.sick)
		if got != c.want || sick != c.wantSick {
			t.Errorf("%s: canaryWatch = %v, %d; want %v, %d", c.name, got, sick, c.want, c.wantSick)
		}
	}
}

func TestHowToResume(t *testing.T) {
	job := &nomad.Job{}
	for _, c := range []struct {
		job  *nomad.Job
		runs bool
		want resumeAction
		why  string
	}{
		{nil, false, resumeFail, "before the job reached Nomad"},
		{job, false, resumeFail, "Nomad now runs another version"},
		{job, true, resumeFollow, ""},
	} {
		got, why := howToResume(c.job, c.runs)
		if got != c.want || !strings.Contains(why, c.why) {
			t.Errorf("howToResume(%v, %v) = %v %q", c.job != nil, c.runs, got, why)
		}
	}
}

func TestDeploymentProgress(t *testing.T) {
	waiting := &nomad.Deployment{Status: nomad.DeploymentStatusRunning, StatusDescription: needsPromotion,
		TaskGroups: map[string]*nomad.DeploymentState{"web": {DesiredCanaries: 1, HealthyAllocs: 1}}}
	for _, c := range []struct {
		dep   *nomad.Deployment
		until bool
		want  progress
	}{
		{&nomad.Deployment{Status: nomad.DeploymentStatusSuccessful}, false, deploymentDone},
		{&nomad.Deployment{Status: nomad.DeploymentStatusFailed}, true, deploymentFailed},
		{&nomad.Deployment{Status: nomad.DeploymentStatusCancelled}, true, deploymentFailed},
		{&nomad.Deployment{Status: nomad.DeploymentStatusRunning}, true, deploymentOngoing},
		{waiting, true, deploymentDone},
		{waiting, false, deploymentOngoing},
		{&nomad.Deployment{Status: nomad.DeploymentStatusPaused}, true, deploymentOngoing},
		// Every container healthy: done before Nomad says successful.
		{&nomad.Deployment{Status: nomad.DeploymentStatusRunning, TaskGroups: map[string]*nomad.DeploymentState{
			"web": {DesiredTotal: 2, HealthyAllocs: 2}, "api": {DesiredTotal: 1, HealthyAllocs: 1}}}, false, deploymentDone},
		{&nomad.Deployment{Status: nomad.DeploymentStatusRunning, TaskGroups: map[string]*nomad.DeploymentState{
			"web": {DesiredTotal: 2, HealthyAllocs: 2}, "api": {DesiredTotal: 1, HealthyAllocs: 0}}}, false, deploymentOngoing},
		// Healthy canaries of a rolling update, before Nomad promotes them.
		{&nomad.Deployment{Status: nomad.DeploymentStatusRunning, TaskGroups: map[string]*nomad.DeploymentState{
			"web": {DesiredTotal: 2, DesiredCanaries: 2, HealthyAllocs: 2}}}, true, deploymentOngoing},
		{&nomad.Deployment{Status: nomad.DeploymentStatusRunning, TaskGroups: map[string]*nomad.DeploymentState{
			"web": {DesiredTotal: 2, DesiredCanaries: 2, HealthyAllocs: 2, Promoted: true}}}, true, deploymentDone},
		// A promoted canary whose replacements are not healthy yet.
		{&nomad.Deployment{Status: nomad.DeploymentStatusRunning, TaskGroups: map[string]*nomad.DeploymentState{
			"web": {DesiredTotal: 2, DesiredCanaries: 1, HealthyAllocs: 1, Promoted: true}}}, false, deploymentOngoing},
	} {
		if got := deploymentProgress(c.dep, c.until); got != c.want {
			t.Errorf("%s (until promotion %v) = %v, want %v", c.dep.Status, c.until, got, c.want)
		}
	}
}

func TestExplainDeployment(t *testing.T) {
	healthy := &nomad.AllocDeploymentStatus{Healthy: ptrTo(true)}
	failed := &nomad.AllocationListStub{ID: "failed-alloc", TaskGroup: "api", ClientStatus: nomad.AllocClientStatusFailed,
		TaskStates: map[string]*nomad.TaskState{"api": {Failed: true, Restarts: 2, Events: []*nomad.TaskEvent{
			{Type: nomad.TaskStarted}, {Type: nomad.TaskTerminated, DisplayMessage: "Exit Code: 1"},
			{Type: nomad.TaskTerminated, DisplayMessage: "Exit Code: 1"}, {Type: nomad.TaskTerminated, DisplayMessage: "Exit Code: 2"},
			{Type: nomad.TaskNotRestarting, DisplayMessage: "Exceeded allowed attempts 2"}}}}}
	unhealthy := &nomad.AllocationListStub{ID: "unhealthy-alloc", TaskGroup: "web", ClientStatus: nomad.AllocClientStatusRunning,
		TaskStates: map[string]*nomad.TaskState{"web": {Events: []*nomad.TaskEvent{{Type: "Alloc Unhealthy", DisplayMessage: "Task not running for min_healthy_time"}}}}}
	fine := &nomad.AllocationListStub{ID: "fine", TaskGroup: "web", ClientStatus: nomad.AllocClientStatusRunning, DeploymentStatus: healthy}
	dep := &nomad.Deployment{StatusDescription: "Failed due to unhealthy allocations", TaskGroups: map[string]*nomad.DeploymentState{
		"web": {DesiredTotal: 2, HealthyAllocs: 2}, "api": {DesiredTotal: 1, HealthyAllocs: 0}}}
	for _, c := range []struct {
		name            string
		allocs          []*nomad.AllocationListStub
		function, cause string
		alloc           string
	}{
		{"a failed allocation first", []*nomad.AllocationListStub{fine, unhealthy, failed}, "api",
			"task api restarted 2 times: Terminated: Exit Code: 1; Terminated: Exit Code: 2; Not Restarting: Exceeded allowed attempts 2", "failed-alloc"},
		{"then an unhealthy one", []*nomad.AllocationListStub{fine, unhealthy}, "web",
			"task web: Alloc Unhealthy: Task not running for min_healthy_time", "unhealthy-alloc"},
		{"else the group short of healthy containers", []*nomad.AllocationListStub{fine}, "api",
			"0 of 1 containers healthy (Failed due to unhealthy allocations)", ""},
	} {
		re := explainDeployment(dep, c.allocs, 7)
		if re.Function != c.function || re.Cause != c.cause || re.AllocID != c.alloc || re.Version != 7 {
			t.Errorf("%s: %+v", c.name, re)
		}
	}
	if got := (&RolloutError{Version: 7, Function: "api", Cause: "x", AllocID: "0123456789ab"}).Error(); got !=
		`version 7 failed: function "api": x (allocation 01234567; `+"`nomad alloc status 01234567`"+` has more)` {
		t.Errorf("RolloutError = %q", got)
	}
}

func TestPlacement(t *testing.T) {
	failed := map[string]*nomad.AllocationMetric{
		"web": {NodesEvaluated: 2, NodesInPool: 3, ConstraintFiltered: map[string]int{"${device.model} = H100": 2},
			ClassFiltered: map[string]int{"gpu": 1}, DimensionExhausted: map[string]int{"devices: nvidia/gpu": 1, "cpu": 2}},
		"api": nil,
	}
	g, cause := firstUnplaceable(failed, map[string]string{"api": "2 nvidia/gpu of model H100"})
	if g != "api" || cause != "cannot be placed: no node has 2 nvidia/gpu of model H100; no node fits" {
		t.Errorf("firstUnplaceable = %q, %q", g, cause)
	}
	if got := describePlacement(failed["web"]); got != "2 of 3 nodes evaluated; filtered by constraint: ${device.model} = H100 (2); "+
		"filtered by class: gpu (1); exhausted: cpu (2), devices: nvidia/gpu (1)" {
		t.Errorf("describePlacement = %q", got)
	}
	if g, _ := firstUnplaceable(nil, nil); g != "" {
		t.Error("nothing failed, yet a group is named")
	}
	app := mustParse(t, []byte(`app "g" {
  workspace = "dev"
  function "train" {
    image = "trainer:1"
    resources {
      gpu = ["H100", "A100"]
    }
  }
  function "any" {
    image = "trainer:1"
    resources {
      gpu = "any"
    }
  }
  function "cpu" {
    image = "trainer:1"
  }
}
`))
	if got := needs(app); len(got) != 2 || got["train"] != "1 nvidia/gpu of model H100 or A100" || got["any"] != "1 nvidia/gpu of any model" {
		t.Errorf("needs = %v", got)
	}
}

func TestFlattenDiff(t *testing.T) {
	d := &nomad.JobDiff{
		Fields: []*nomad.FieldDiff{{Type: "Edited", Name: "Meta[" + jobs.MetaVersion + "]", Old: "1", New: "2"},
			{Type: "None", Name: "Priority"}},
		Objects: []*nomad.ObjectDiff{{Type: "Added", Name: "Update", Fields: []*nomad.FieldDiff{{Type: "Added", Name: "Canary", New: "1"}}}},
		TaskGroups: []*nomad.TaskGroupDiff{
			{Type: "Added", Name: "api"},
			{Type: "Deleted", Name: "old"},
			{Type: "None", Name: "same"},
			{Type: "Edited", Name: "web", Fields: []*nomad.FieldDiff{{Type: "Edited", Name: "Count", Old: "1", New: "3",
				Annotations: []string{"forces create"}}},
				Tasks: []*nomad.TaskDiff{{Type: "Edited", Name: "web", Fields: []*nomad.FieldDiff{
					{Type: "Edited", Name: "Env[GREETING]", Old: "hi", New: "hello"},
					{Type: "Deleted", Name: "Env[OLD]", Old: "x"}}}}},
		},
	}
	want := []string{
		`+ Update > Canary: "1"`,
		`+ group "api"`,
		`- group "old"`,
		`~ group "web" > Count: "1" => "3" (forces create)`,
		`~ group "web" > task "web" > Env[GREETING]: "hi" => "hello"`,
		`- group "web" > task "web" > Env[OLD]: "x"`,
	}
	if got := flattenDiff(d); !slices.Equal(got, want) {
		t.Errorf("flattenDiff =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if flattenDiff(nil) != nil {
		t.Error("flattenDiff(nil)")
	}
}

func TestCheckInput(t *testing.T) {
	for _, c := range []struct {
		in, want string
		err      any
	}{
		{"", "null", nil},
		{"  \n", "null", nil},
		{`{"numbers": [1, 2]}`, `{"numbers": [1, 2]}`, nil},
		{`{"broken"`, "", &BadRequestError{}},
		{`"` + strings.Repeat("x", jobs.PayloadLimit-2) + `"`, "", nil},
		{`"` + strings.Repeat("x", jobs.PayloadLimit-1) + `"`, "", &InputTooLargeError{}},
	} {
		got, err := CheckInput([]byte(c.in))
		switch want := c.err.(type) {
		case nil:
			if err != nil || (c.want != "" && string(got) != c.want) {
				t.Errorf("CheckInput(%.20q) = %.20q, %v", c.in, got, err)
			}
		case *BadRequestError:
			if !errors.As(err, &want) {
				t.Errorf("CheckInput(%.20q): err = %v, want *BadRequestError", c.in, err)
			}
		case *InputTooLargeError:
			if !errors.As(err, &want) || want.Size != jobs.PayloadLimit+1 || want.Limit != jobs.PayloadLimit {
				t.Errorf("CheckInput(%d bytes): err = %v", len(c.in), err)
			}
		}
	}
}

func TestSplitHelpers(t *testing.T) {
	// Routers last, so Traefik never sees a router before its services.
	ops := setOps(map[string]string{"t/http/routers/r/rule": "Host", "t/http/services/s/x": "1", "t/http/middlewares/m/y": "2"})
	var keys []string
	for _, op := range ops {
		keys = append(keys, op.Key)
	}
	if !slices.Equal(keys, []string{"t/http/middlewares/m/y", "t/http/services/s/x", "t/http/routers/r/rule"}) {
		t.Errorf("order = %v", keys)
	}
	if d := deleteOps([]string{"a", "b"}); len(d) != 2 || !d[0].Delete || d[1].Key != "b" {
		t.Errorf("deleteOps = %+v", d)
	}
	allocs := []*nomad.AllocationListStub{{ID: "aaaa"}, {ID: "bbbb"}}
	ins := []Instance{{ID: "_nomad-task-aaaa-web"}, {ID: "_nomad-task-cccc-web"}, {ID: "_nomad-task-bbbb-web"}}
	if n := oldInstances(ins, allocs); n != 1 {
		t.Errorf("oldInstances = %d, want 1", n)
	}
	if got := serverURLs([]Instance{{Address: "10.0.0.2", Port: 80}, {Address: "10.0.0.1", Port: 8080}}); !slices.Equal(got,
		[]string{"http://10.0.0.1:8080", "http://10.0.0.2:80"}) {
		t.Errorf("serverURLs = %v", got)
	}
	if !promotedIn(&nomad.Deployment{TaskGroups: map[string]*nomad.DeploymentState{"a": {}, "b": {Promoted: true}}}) ||
		promotedIn(&nomad.Deployment{TaskGroups: map[string]*nomad.DeploymentState{"a": {}}}) {
		t.Error("promotedIn")
	}
	_, r := rendered(t, birdsSpec("canary", "x"))
	dep := &nomad.Deployment{TaskGroups: map[string]*nomad.DeploymentState{"web": {DesiredCanaries: 1}}}
	if got := splitRoutes(r, dep); len(got) != 1 || got[0].Function != "web" {
		t.Errorf("splitRoutes = %+v", got)
	}
	if got := splitRoutes(r, &nomad.Deployment{TaskGroups: map[string]*nomad.DeploymentState{"web": {}}}); len(got) != 0 {
		t.Errorf("a function without canaries got a split: %+v", got)
	}
}

// An autoscaled function's deploy result says the range it scales in, not
// the one container Count gives a function with min_containers = 0.
func TestFunctionResultsOfAnAutoscaledFunction(t *testing.T) {
	app := zeroApp(t, "rolling", "v1")
	got := map[string]FunctionResult{}
	for _, fr := range functionResults(app, renderedZero(t, app), nil) {
		got[fr.Name] = fr
	}
	if web := got["web"]; web.Containers != 0 || web.MaxContainers != 4 {
		t.Errorf("web = %d..%d containers, want 0..4", web.Containers, web.MaxContainers)
	}
	for name, fr := range got {
		if name != "web" && fr.MaxContainers != 0 {
			t.Errorf("%s: MaxContainers = %d, want 0 for a function that does not scale", name, fr.MaxContainers)
		}
	}
}
