package autoscaler

import (
	"context"
	"testing"
	"time"

	"github.com/caravanhq/caravan/autoscale"
	"github.com/caravanhq/caravan/proxy"
	nomad "github.com/hashicorp/nomad/api"
)

func version(n uint64, count int, meta string) *nomad.Job {
	return &nomad.Job{ID: ptr("job"), Version: &n, SubmitTime: ptr(int64(n) * 1000),
		Stable: ptr(n%2 == 0), JobModifyIndex: ptr(n * 10),
		TaskGroups: []*nomad.TaskGroup{{Name: ptr("web"), Count: &count,
			Meta: map[string]string{"caravan.group_hash": meta}}}}
}

func alloc(id string, running bool, healthy *bool) *nomad.AllocationListStub {
	a := &nomad.AllocationListStub{ID: id, TaskGroup: "web", DesiredStatus: nomad.AllocDesiredStatusRun, ClientStatus: nomad.AllocClientStatusRunning}
	if !running {
		a.ClientStatus = nomad.AllocClientStatusPending
	}
	if healthy != nil {
		a.DeploymentStatus = &nomad.AllocDeploymentStatus{Healthy: healthy}
	}
	return a
}

func TestSettleable(t *testing.T) {
	dep := func(v uint64, desired, canaries int) *nomad.Deployment {
		return &nomad.Deployment{ID: "d", JobVersion: v, Status: nomad.DeploymentStatusRunning,
			TaskGroups: map[string]*nomad.DeploymentState{"web": {DesiredTotal: desired, DesiredCanaries: canaries}}}
	}
	scaled := []*nomad.Job{version(3, 2, "h1"), version(4, 1, "h1"), version(2, 2, "h0")}
	both := map[string]bool{"a1": true, "a2": true}
	yes := true
	for _, c := range []struct {
		name     string
		dep      *nomad.Deployment
		versions []*nomad.Job
		allocs   []*nomad.AllocationListStub
		passing  map[string]bool
		want     []string
	}{
		{"a scale-down's deployment, its container passing", dep(4, 1, 0), scaled,
			[]*nomad.AllocationListStub{alloc("a1", true, nil)}, both, []string{"a1"}},
		{"a scale-up's, every container passing; one has its verdict", dep(5, 2, 0), append(scaled, version(5, 2, "h1")),
			[]*nomad.AllocationListStub{alloc("a1", true, &yes), alloc("a2", true, nil)}, both, []string{"a2"}},
		{"a scale-up's, the new container still starting", dep(5, 2, 0), append(scaled, version(5, 2, "h1")),
			[]*nomad.AllocationListStub{alloc("a1", true, nil), alloc("a2", false, nil)}, both, nil},
		{"a scale-up's, the new container running but not passing", dep(5, 2, 0), append(scaled, version(5, 2, "h1")),
			[]*nomad.AllocationListStub{alloc("a1", true, nil), alloc("a2", true, nil)}, map[string]bool{"a1": true}, nil},
		{"fewer running than desired", dep(5, 2, 0), append(scaled, version(5, 2, "h1")),
			[]*nomad.AllocationListStub{alloc("a1", true, nil)}, both, nil},
		{"a deploy's deployment: the group changed", dep(3, 2, 0), scaled,
			[]*nomad.AllocationListStub{alloc("a1", true, nil), alloc("a2", true, nil)}, both, nil},
		{"a canary's", dep(4, 1, 1), scaled, []*nomad.AllocationListStub{alloc("a1", true, nil)}, both, nil},
		{"the version before is gone", dep(2, 2, 0), scaled[2:], []*nomad.AllocationListStub{alloc("a1", true, nil)}, both, nil},
		{"every verdict given already", dep(4, 1, 0), scaled, []*nomad.AllocationListStub{alloc("a1", true, &yes)}, both, nil},
		{"no deployment", nil, scaled, nil, both, nil},
	} {
		got, why := settleable(c.dep, c.versions, c.allocs, c.passing)
		if len(got) != len(c.want) || (len(got) > 0 && got[0] != c.want[0]) {
			t.Errorf("%s: %v (%s), want %v", c.name, got, why, c.want)
		}
		if got == nil && why == "" {
			t.Errorf("%s: no reason given", c.name)
		}
	}
}

func TestAllocOfService(t *testing.T) {
	for id, want := range map[string]string{
		"_nomad-task-200cc5ed-bc9e-a022-c379-d35e8fd3df81-group-web-e2e--queued-web-http": "200cc5ed-bc9e-a022-c379-d35e8fd3df81",
		"_nomad-task-short": "",
		"caravan-proxy-1":   "",
	} {
		if got := allocOfService(id); got != want {
			t.Errorf("allocOfService(%q) = %q, want %q", id, got, want)
		}
	}
}

// A blocked scale whose deployment the backend settles goes through in
// the same round, and asks for another round soon.
func TestTickSettlesAScalesDeployment(t *testing.T) {
	cfg := autoscale.Config{MaxContainers: 4, TargetInputs: 1, ScaledownWindow: 10 * time.Second}
	f := &fake{fns: []Function{{Service: "svc", Job: "job", Group: "web", Config: cfg}},
		proxies: map[string]*proxy.Report{"a": load("svc", 1, 1)}, counts: map[string]int{"job/web": 1}, blocked: true, settles: true}
	s := &Scaler{Backend: f}
	if _, err := s.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.counts["job/web"] != 2 || f.settled != 1 || !s.again {
		t.Fatalf("count %d, settled %d, again %v; want 2, 1, true", f.counts["job/web"], f.settled, s.again)
	}
	// A deploy's deployment is not settled: the scale waits.
	f.blocked, f.settles, s.again = true, false, false
	f.proxies["a"] = load("svc", 2, 1)
	if _, err := s.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.counts["job/web"] != 2 || s.again {
		t.Fatalf("count %d, again %v; want 2 (blocked) and no hurry", f.counts["job/web"], s.again)
	}
}

// A scale waits while a deploy's registered version has no deployment yet,
// and only then.
func TestRegistrationPending(t *testing.T) {
	dep := func(v uint64) *nomad.Deployment { return &nomad.Deployment{ID: "d", JobVersion: v} }
	now := time.Unix(0, 5000) // version n was submitted at n*1000 ns
	for _, c := range []struct {
		name     string
		versions []*nomad.Job
		dep      *nomad.Deployment
		now      time.Time
		wait     bool
	}{
		{"the latest version has its deployment", []*nomad.Job{version(2, 1, "h0"), version(3, 1, "h1")}, dep(3), now, false},
		{"a deploy's version without a deployment yet", []*nomad.Job{version(2, 1, "h0"), version(3, 1, "h1")}, dep(2), now, true},
		{"a scale-down since the deployment (it opens none)", []*nomad.Job{version(2, 2, "h0"), version(3, 1, "h0")}, dep(2), now, false},
		{"a scale-down, then a deploy's version", []*nomad.Job{version(2, 2, "h0"), version(3, 1, "h0"), version(4, 1, "h1")}, dep(2), now, true},
		{"a deploy's version at zero (Nomad opens none)", []*nomad.Job{version(2, 1, "h0"), version(3, 0, "h1")}, dep(2), now, false},
		{"a new job, not evaluated yet", []*nomad.Job{version(0, 1, "h0")}, nil, now, true},
		{"a new job at zero", []*nomad.Job{version(0, 0, "h0")}, nil, now, false},
		{"a job without a deployment, long registered", []*nomad.Job{version(0, 1, "h0")}, nil, now.Add(time.Minute), false},
		{"the deployment's version no longer kept, recent", []*nomad.Job{version(4, 1, "h1")}, dep(1), now, true},
		{"the deployment's version no longer kept, long ago", []*nomad.Job{version(4, 1, "h1")}, dep(1), now.Add(time.Minute), false},
		{"no versions", nil, nil, now, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			why := registrationPending(c.versions, c.dep, c.now)
			if (why != "") != c.wait {
				t.Errorf("registrationPending = %q, want waiting %v", why, c.wait)
			}
		})
	}
}
