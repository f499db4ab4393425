package orchestrator

import (
	"context"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// newShopNomad makes Nomad's deployment of the next registration run
// until the test settles it, and registers its containers in Consul
// (passing their checks when passing); it returns the deployment's ID,
// once registered.
func (h *harness) newShopNomad(passing bool) <-chan string {
	started := make(chan string, 1)
	h.nomad.onRegister = func(job *nomad.Job, dep *nomad.Deployment) {
		dep.Status = nomad.DeploymentStatusRunning
		dep.TaskGroups["web"].HealthyAllocs = 0
		started <- dep.ID
	}
	h.nomad.onPlaced = func(allocs []*nomad.Allocation) {
		for i, a := range allocs {
			h.consul.register(shopService, fakeInstance{Instance: Instance{ID: "_nomad-task-" + a.ID, Address: "127.0.0.1", Port: 20000 + i}, passing: passing})
		}
	}
	return started
}

func TestNewAppIsLiveOnceItServesWithoutWaitingForNomadsVerdict(t *testing.T) {
	h := newHarness(t)
	h.newShopNomad(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.o.Deploy(ctx, ci, DeployRequest{Spec: shopSpec("hi"), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if res.Version != 1 || h.record("dev--shop").LiveVersion != 1 {
		t.Errorf("result = %+v, record = %+v", res, h.record("dev--shop"))
	}
	// Nomad's deployment goes on, untouched.
	if dep := h.nomad.latest(t, "dev--shop"); dep.Status != nomad.DeploymentStatusRunning {
		t.Errorf("deployment status = %s, want running", dep.Status)
	}
	for _, c := range h.nomad.calls {
		if len(c) > 5 && c[:5] == "fail " {
			t.Errorf("Nomad calls = %v: the deployment of an app that serves was failed", h.nomad.calls)
		}
	}
}

func TestNewAppWaitsForItsChecksOrNomadsVerdict(t *testing.T) {
	h := newHarness(t)
	started := h.newShopNomad(false) // running, but its check does not pass yet
	// A container of a job purged a moment ago, still registered under the
	// same name, is not this version's.
	h.consul.register(shopService, fakeInstance{Instance: Instance{ID: "_nomad-task-purged0", Address: "127.0.0.1", Port: 10000}, passing: true})
	done := make(chan error, 1)
	go func() {
		_, err := h.o.Deploy(context.Background(), ci, DeployRequest{Spec: shopSpec("hi"), Timeout: 10 * time.Second})
		done <- err
	}()
	depID := <-started
	select {
	case err := <-done:
		t.Fatalf("deploy returned (%v) before its container passed its checks", err)
	case <-time.After(100 * time.Millisecond):
	}
	// Nomad's verdict suffices too.
	h.nomad.setDeployment(depID, func(d *nomad.Deployment) {
		d.Status = nomad.DeploymentStatusSuccessful
		d.TaskGroups["web"].HealthyAllocs = 1
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("deploy: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("deploy did not return after Nomad's deployment succeeded")
	}
}

func TestAllRunning(t *testing.T) {
	stub := func(group, client, desired string) *nomad.AllocationListStub {
		return &nomad.AllocationListStub{TaskGroup: group, ClientStatus: client, DesiredStatus: desired}
	}
	run, stop := nomad.AllocDesiredStatusRun, nomad.AllocDesiredStatusStop
	for _, tc := range []struct {
		name   string
		allocs []*nomad.AllocationListStub
		want   map[string]int
		ok     bool
	}{
		{"none yet", nil, map[string]int{"web": 1}, false},
		{"pending", []*nomad.AllocationListStub{stub("web", "pending", run)}, map[string]int{"web": 1}, false},
		{"running", []*nomad.AllocationListStub{stub("web", "running", run)}, map[string]int{"web": 1}, true},
		{"one of two", []*nomad.AllocationListStub{stub("web", "running", run)}, map[string]int{"web": 2}, false},
		{"a stopping one does not count", []*nomad.AllocationListStub{stub("web", "running", stop)}, map[string]int{"web": 1}, false},
		{"every group", []*nomad.AllocationListStub{stub("web", "running", run), stub("worker", "failed", run)},
			map[string]int{"web": 1, "worker": 1}, false},
		{"no groups", nil, map[string]int{}, true},
	} {
		if _, got := allRunning(tc.allocs, tc.want); got != tc.ok {
			t.Errorf("%s: allRunning = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

func TestNextVersionWaitsForNomadsVerdictOnTheLiveOne(t *testing.T) {
	h := newHarness(t)
	// Version 1 went live on its containers' health, before Nomad's
	// verdict.
	h.nomad.onRegister = func(job *nomad.Job, dep *nomad.Deployment) { dep.Status = nomad.DeploymentStatusRunning }
	h.mustDeploy(shopSpec("hi"))
	h.nomad.onRegister = nil
	dep := h.nomad.latest(t, "dev--shop")
	done := make(chan error, 1)
	go func() {
		_, err := h.o.Deploy(context.Background(), ci, DeployRequest{Spec: shopSpec("hello"), Timeout: 10 * time.Second})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("version 2 deployed (%v) while Nomad's deployment of version 1 ran", err)
	case <-time.After(100 * time.Millisecond):
	}
	if n := h.nomad.count("register dev--shop"); n != 1 {
		t.Fatalf("%d registrations before Nomad's verdict on version 1, want 1", n)
	}
	h.nomad.setDeployment(dep.ID, func(d *nomad.Deployment) { d.Status = nomad.DeploymentStatusSuccessful })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("deploy: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("version 2 did not deploy after Nomad's verdict on version 1")
	}
}
