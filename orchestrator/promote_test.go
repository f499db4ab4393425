package orchestrator

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// A promotion of one canary in front of two containers: Nomad replaces
// the two old containers with one more of the new version. The split is
// removed as soon as the old containers are gone from Consul and the
// proxy, without waiting for the replacement, and caravan tells Nomad the
// replacement is healthy once it passes its checks in Consul.
func TestPromotionRemovesTheSplitBeforeTheReplacementIsHealthy(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	one := func(arg string) []byte {
		return []byte(strings.Replace(string(birdsSpec("canary", arg)), "canaries = 5", "canaries = 1", 1))
	}
	if res := h.mustDeploy(one("v2")); res.Canary == nil || res.Canary.Canaries != 1 {
		t.Fatalf("canary = %+v", res.Canary)
	}
	placed := make(chan string, 1)
	h.nomad.onPromote = func(dep *nomad.Deployment) {
		// Promoted, one of two healthy: Nomad starts the replacement.
		dep.Status, dep.StatusDescription = nomad.DeploymentStatusRunning, "Deployment is running"
		placed <- h.nomad.addAlloc(dep.JobID, "web", dep.ID, nomad.AllocClientStatusRunning).ID
		go h.consul.deregister(birdsService, func(in fakeInstance) bool { return strings.Contains(in.ID, "old") })
	}
	splitGoneFirst := make(chan bool, 1)
	go func() {
		id := <-placed
		// The replacement passes its checks only once the split is gone
		// (or the test gives up waiting): a promotion that waits for
		// Nomad's verdict before it removes the split waits here.
		deadline := time.Now().Add(3 * time.Second)
		for len(h.consul.keys()) > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		splitGoneFirst <- len(h.consul.keys()) == 0
		h.consul.register(birdsService, fakeInstance{Instance: Instance{ID: "_nomad-task-" + id, Address: "127.0.0.1", Port: 20100}, passing: true})
	}()

	if _, err := h.o.Promote(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "birds"}}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	if !<-splitGoneFirst {
		t.Error("the split stayed until the replacement was healthy")
	}
	if n := h.nomad.count("health "); n != 1 {
		t.Errorf("SetAllocHealth calls = %d, want 1 (the replacement's)", n)
	}
	if dep := h.nomad.latest(t, "dev--birds"); dep.TaskGroups["web"].HealthyAllocs != 2 {
		t.Errorf("deployment = %+v", dep.TaskGroups["web"])
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
		t.Errorf("history = %v", got)
	}
	if keys := h.consul.keys(); len(keys) != 0 {
		t.Errorf("split left in Consul: %v", keys)
	}
}

func TestUnsettled(t *testing.T) {
	running := map[string]*nomad.TaskState{"web": {State: "running"}}
	alloc := func(id, group, client string, healthy *bool, tasks map[string]*nomad.TaskState) *nomad.AllocationListStub {
		a := &nomad.AllocationListStub{ID: id, TaskGroup: group, DesiredStatus: nomad.AllocDesiredStatusRun, ClientStatus: client, TaskStates: tasks}
		if healthy != nil {
			a.DeploymentStatus = &nomad.AllocDeploymentStatus{Healthy: healthy}
		}
		return a
	}
	stopping := alloc("a5", "web", nomad.AllocClientStatusRunning, nil, running)
	stopping.DesiredStatus = nomad.AllocDesiredStatusStop
	allocs := []*nomad.AllocationListStub{
		alloc("a1", "web", nomad.AllocClientStatusRunning, nil, running),                                                // passes: settle
		alloc("a2", "web", nomad.AllocClientStatusRunning, ptrTo(true), running),                                        // Nomad's verdict is in
		alloc("a3", "web", nomad.AllocClientStatusRunning, nil, running),                                                // not passing in Consul
		alloc("a4", "web", nomad.AllocClientStatusPending, nil, map[string]*nomad.TaskState{"web": {State: "pending"}}), // not running
		stopping, // being stopped
		alloc("a6", "api", nomad.AllocClientStatusRunning, nil, running),          // another function
		alloc("a7", "web", nomad.AllocClientStatusRunning, ptrTo(false), running), // unhealthy: Nomad's
		alloc("a8", "web", nomad.AllocClientStatusRunning, nil, map[string]*nomad.TaskState{"web": {State: "running"}, "log": {State: "dead"}}),
	}
	var passing []Instance
	for _, id := range []string{"a1", "a2", "a4", "a5", "a6", "a7", "a8"} {
		passing = append(passing, Instance{ID: "_nomad-task-" + id + "-group-web-web-http"})
	}
	if got := unsettled(allocs, "web", passing); !slices.Equal(got, []string{"a1"}) {
		t.Errorf("unsettled = %v, want [a1]", got)
	}
}
