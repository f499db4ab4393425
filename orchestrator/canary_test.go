package orchestrator

import (
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

func TestAwaitingPromotion(t *testing.T) {
	dep := func(desc string, groups ...*nomad.DeploymentState) *nomad.Deployment {
		d := &nomad.Deployment{StatusDescription: desc, TaskGroups: map[string]*nomad.DeploymentState{}}
		for i, g := range groups {
			d.TaskGroups[string(rune('a'+i))] = g
		}
		return d
	}
	healthy := &nomad.DeploymentState{DesiredCanaries: 2, HealthyAllocs: 2}
	for _, c := range []struct {
		name string
		dep  *nomad.Deployment
		want bool
	}{
		{"canaries healthy, manual promotion", dep(needsPromotion, healthy), true},
		{"a group without canaries does not count", dep(needsPromotion, healthy, &nomad.DeploymentState{DesiredTotal: 1}), true},
		{"one canary still starting", dep(needsPromotion, &nomad.DeploymentState{DesiredCanaries: 2, HealthyAllocs: 1}), false},
		{"rolling promotes on its own", dep("Deployment is running pending automatic promotion", healthy), false},
		{"already promoted", dep(needsPromotion, &nomad.DeploymentState{DesiredCanaries: 2, HealthyAllocs: 2, Promoted: true}), false},
		{"no canaries at all", dep(needsPromotion, &nomad.DeploymentState{DesiredTotal: 2}), false},
	} {
		if got := awaitingPromotion(c.dep); got != c.want {
			t.Errorf("%s: awaitingPromotion = %v, want %v", c.name, got, c.want)
		}
	}
}
