package orchestrator

import (
	"errors"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

func TestLookupDeployment(t *testing.T) {
	reg := registration{JobID: "dev--shop", Version: 3, SpecIndex: 40, Expects: true}
	atRest := reg
	atRest.Expects = false
	noIndex := reg
	noIndex.SpecIndex = 0
	dep := func(version, specIndex uint64) *nomad.Deployment {
		return &nomad.Deployment{JobID: "dev--shop", JobVersion: version, JobSpecModifyIndex: specIndex}
	}
	for _, c := range []struct {
		name string
		reg  registration
		dep  *nomad.Deployment
		want lookup
	}{
		{"the version's own", reg, dep(3, 40), lookupFollow},
		{"none yet", reg, nil, lookupWait},
		{"the previous version's: the version's is still to come", reg, dep(2, 31), lookupWait},
		{"another job's", reg, &nomad.Deployment{JobID: "dev--other", JobVersion: 3, JobSpecModifyIndex: 40}, lookupWait},
		{"a later version's came first", reg, dep(4, 52), lookupSuperseded},
		{"the index tells, not the number (the job was purged and registered again)", reg, dep(3, 12), lookupWait},
		{"groups at zero: Nomad opens none", atRest, dep(2, 31), lookupNone},
		{"groups at zero, no deployment ever", atRest, nil, lookupNone},
		{"groups at zero, and yet one for the version", atRest, dep(3, 40), lookupFollow},
		{"no index known: the number tells", noIndex, dep(3, 0), lookupFollow},
		{"no index known, an older number", noIndex, dep(2, 0), lookupWait},
		{"no index known, a later number", noIndex, dep(4, 0), lookupSuperseded},
	} {
		if got := lookupDeployment(c.reg, c.dep); got != c.want {
			t.Errorf("%s: lookupDeployment = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestExpectsDeployment(t *testing.T) {
	update := &nomad.UpdateStrategy{MaxParallel: ptr(1)}
	group := func(count int, u *nomad.UpdateStrategy) *nomad.TaskGroup {
		return &nomad.TaskGroup{Name: ptr("g"), Count: ptr(count), Update: u}
	}
	for _, c := range []struct {
		name string
		job  *nomad.Job
		want bool
	}{
		{"a group that runs, with an update block", &nomad.Job{TaskGroups: []*nomad.TaskGroup{group(2, update)}}, true},
		{"every group at zero", &nomad.Job{TaskGroups: []*nomad.TaskGroup{group(0, update), group(0, update)}}, false},
		{"one at zero, one running", &nomad.Job{TaskGroups: []*nomad.TaskGroup{group(0, update), group(1, update)}}, true},
		{"the job's update block", &nomad.Job{Update: update, TaskGroups: []*nomad.TaskGroup{group(1, nil)}}, true},
		{"no update block", &nomad.Job{TaskGroups: []*nomad.TaskGroup{group(1, nil)}}, false},
		{"an empty update block", &nomad.Job{TaskGroups: []*nomad.TaskGroup{group(1, &nomad.UpdateStrategy{MaxParallel: ptr(0)})}}, false},
		{"a batch job", &nomad.Job{Type: ptr(nomad.JobTypeBatch), TaskGroups: []*nomad.TaskGroup{group(1, update)}}, false},
	} {
		if got := expectsDeployment(c.job); got != c.want {
			t.Errorf("%s: expectsDeployment = %v, want %v", c.name, got, c.want)
		}
	}
}

// A version for which Nomad opens no deployment is not called live: the
// job's latest deployment is the previous version's, and its success
// says nothing of this one.
func TestDeployFailsWithoutItsDeployment(t *testing.T) {
	defer func(d time.Duration) { DeploymentWait = d }(DeploymentWait)
	DeploymentWait = 300 * time.Millisecond
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	h.nomad.noDeployment = true
	_, err := h.deploy(shopSpec("hello"))
	var missing *DeploymentMissingError
	if !errors.As(err, &missing) {
		t.Fatalf("deploy = %v, want a *DeploymentMissingError", err)
	}
	if missing.JobVersion != 1 || missing.Latest == nil || *missing.Latest != 0 || missing.Version != 2 {
		t.Errorf("error = %+v", missing)
	}
	if got := h.record("dev--shop"); got.LiveVersion != 1 {
		t.Errorf("live version = %d, want 1", got.LiveVersion)
	}
}

// A version registered again in Nomad right after caravan registered it
// (its number no longer the job's) is still followed through its own
// deployment, named by the evaluation: that one fails, and so does the
// deploy.
func TestDeployFollowsTheEvaluationsDeployment(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	h.nomad.onRegister = func(job *nomad.Job, dep *nomad.Deployment) {
		dep.Status, dep.StatusDescription = nomad.DeploymentStatusFailed, "Failed due to unhealthy allocations"
	}
	h.nomad.afterRegister = func(f *fakeNomad, job *nomad.Job) { f.bumpVersion(*job.ID) }
	_, err := h.deploy(shopSpec("hello"))
	var re *RolloutError
	if !errors.As(err, &re) {
		t.Fatalf("deploy = %v, want the failed deployment's *RolloutError", err)
	}
	if got := h.record("dev--shop"); got.LiveVersion != 1 {
		t.Errorf("live version = %d, want 1", got.LiveVersion)
	}
}
