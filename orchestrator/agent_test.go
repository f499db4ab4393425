package orchestrator

import (
	"testing"

	"github.com/caravanhq/caravan/agent"
	nomad "github.com/hashicorp/nomad/api"
)

func TestAllocMayUseAgent(t *testing.T) {
	job := func(id string, withAgent bool) *nomad.Job {
		tk := &nomad.Task{Name: "web"}
		if withAgent {
			tk.Artifacts = []*nomad.TaskArtifact{agent.Artifact("http://127.0.0.1:7474", id)}
		}
		name := "web"
		return &nomad.Job{ID: &id, TaskGroups: []*nomad.TaskGroup{{Name: &name, Tasks: []*nomad.Task{tk}}}}
	}
	alloc := func(jobID, status string, j *nomad.Job) *nomad.Allocation {
		return &nomad.Allocation{ID: "a1", JobID: jobID, TaskGroup: "web", ClientStatus: status, Job: j}
	}
	for _, tc := range []struct {
		name  string
		a     *nomad.Allocation
		allow bool
	}{
		{"running", alloc("acme--shop", "running", job("acme--shop", true)), true},
		{"pending", alloc("acme--shop", "pending", job("acme--shop", true)), true},
		{"a dispatched run", alloc("acme--shop/dispatch-1", "running", job("acme--shop", true)), true},
		// A stopped allocation gets nothing, a worker's NATS credential
		// renewal neither: its credential dies with its lifetime.
		{"stopped", alloc("acme--shop", "complete", job("acme--shop", true)), false},
		{"failed", alloc("acme--shop", "failed", job("acme--shop", true)), false},
		{"lost", alloc("acme--shop", "lost", job("acme--shop", true)), false},
		{"another job", alloc("acme--other", "running", job("acme--other", true)), false},
		{"a job sharing a prefix", alloc("acme--shopx", "running", job("acme--shop", true)), false},
		{"no agent in its group", alloc("acme--shop", "running", job("acme--shop", false)), false},
		{"no job", alloc("acme--shop", "running", nil), false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why := allocMayUseAgent(tc.a, "acme--shop")
			if (why == "") != tc.allow {
				t.Errorf("allocMayUseAgent = %q, want allowed %v", why, tc.allow)
			}
		})
	}
}
