package autoscaler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// A scale of a group with an update block opens a Nomad deployment (the
// scale is a new job version, and the running containers are updated in
// place to it), and Nomad refuses the next scale until that deployment
// ends: a second or two after its containers pass their checks, the time
// its client and deployment watcher take to batch the verdict. A load
// step right after a scale-down (or a cold start) would wait that long
// for its container. When the deployment is one a scale opened and every
// container of it passes its checks in Consul, the autoscaler gives Nomad
// that verdict at once (Deployments().SetAllocHealth), which is what
// Nomad concludes itself with health_check = "checks" and
// min_healthy_time = 0, and scales.

// settleable decides whether the autoscaler may end dep early: it returns
// the allocations to mark healthy, or "" and why not. versions are the
// job's versions (any order); passing holds the IDs of the allocations
// whose service passes its checks in Consul.
func settleable(dep *nomad.Deployment, versions []*nomad.Job, allocs []*nomad.AllocationListStub, passing map[string]bool) ([]string, string) {
	if dep == nil || dep.Status != nomad.DeploymentStatusRunning {
		return nil, "no running deployment"
	}
	var this, before *nomad.Job
	for _, v := range versions {
		if v == nil || v.Version == nil {
			continue
		}
		switch n := *v.Version; {
		case n == dep.JobVersion:
			this = v
		case n < dep.JobVersion && (before == nil || n > *before.Version):
			before = v
		}
	}
	if this == nil || before == nil {
		return nil, "the deployment's job version or the one before is unknown"
	}
	if !onlyCounts(before, this) {
		return nil, "a deploy's deployment, not a scale's"
	}
	ready := map[string]int{}
	var mark []string
	for _, a := range allocs {
		if a.DesiredStatus != nomad.AllocDesiredStatusRun || a.ClientStatus != nomad.AllocClientStatusRunning {
			continue
		}
		if !passing[a.ID] {
			return nil, "a container of the deployment does not pass its checks yet"
		}
		ready[a.TaskGroup]++
		if a.DeploymentStatus == nil || a.DeploymentStatus.Healthy == nil {
			mark = append(mark, a.ID)
		}
	}
	for name, st := range dep.TaskGroups {
		if st.DesiredCanaries > 0 {
			return nil, "a canary deployment"
		}
		if ready[name] < st.DesiredTotal {
			return nil, "the deployment's containers are not all running yet"
		}
	}
	if len(mark) == 0 {
		return nil, "Nomad has every verdict already"
	}
	return mark, ""
}

// allocOfService is the allocation ID in the ID Nomad gives a group
// service's Consul registration ("_nomad-task-<alloc>-group-..."), or "".
func allocOfService(id string) string {
	rest, ok := strings.CutPrefix(id, "_nomad-task-")
	if !ok || len(rest) < 36 {
		return ""
	}
	return rest[:36]
}

// onlyCounts reports whether job versions a and b differ in nothing but
// their groups' counts (and Nomad's bookkeeping of a version): what a
// scale changes.
func onlyCounts(a, b *nomad.Job) bool {
	x, errA := comparable(a)
	y, errB := comparable(b)
	return errA == nil && errB == nil && bytes.Equal(x, y)
}

// comparable is job as JSON without the fields a scale or Nomad's
// bookkeeping change.
func comparable(job *nomad.Job) ([]byte, error) {
	b, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for _, k := range []string{"Version", "SubmitTime", "Stable", "Status", "StatusDescription", "CreateIndex", "ModifyIndex", "JobModifyIndex", "VersionTag"} {
		delete(m, k)
	}
	if groups, ok := m["TaskGroups"].([]any); ok {
		for _, g := range groups {
			if g, ok := g.(map[string]any); ok {
				delete(g, "Count")
			}
		}
	}
	return json.Marshal(m) // map keys sorted: same job, same bytes
}

// registrationPending decides whether a scale must wait because a deploy
// registered the job's latest version and Nomad has not opened that
// version's deployment yet: Nomad refuses a scale while a deployment runs,
// but not in the moment between a registration and its evaluation, and a
// scale then makes a version of its own that the deploy did not register
// (it follows the wrong deployment, or none). versions are the job's
// versions (any order), dep its latest deployment (nil: none), now the
// clock. It returns "" (scale) or why not.
//
// No deployment is to come when the latest version differs from the
// deployment's only in counts (it is a scale: a scale-down opens none)
// or runs no container (Nomad opens none for a count of zero). A version
// whose predecessor Nomad no longer keeps is waited for only within
// registrationGrace of its submission.
func registrationPending(versions []*nomad.Job, dep *nomad.Deployment, now time.Time) string {
	var latest, deployed *nomad.Job
	for _, v := range versions {
		if v == nil || v.Version == nil {
			continue
		}
		if latest == nil || *v.Version > *latest.Version {
			latest = v
		}
		if dep != nil && *v.Version == dep.JobVersion {
			deployed = v
		}
	}
	switch {
	case latest == nil:
		return ""
	case dep != nil && dep.JobVersion >= *latest.Version:
		return ""
	case totalCount(latest) == 0:
		return ""
	case deployed != nil && onlyCounts(deployed, latest):
		return ""
	case deployed == nil && (latest.SubmitTime == nil || now.Sub(time.Unix(0, *latest.SubmitTime)) > registrationGrace):
		return ""
	}
	return fmt.Sprintf("version %d was registered and Nomad has not started its deployment yet", *latest.Version)
}

// registrationGrace bounds how long a version without a known predecessor
// holds scaling back (see registrationPending): Nomad opens a deployment
// within moments of a registration.
const registrationGrace = 30 * time.Second

// totalCount is the sum of job's group counts.
func totalCount(job *nomad.Job) int {
	n := 0
	for _, tg := range job.TaskGroups {
		if tg.Count != nil {
			n += *tg.Count
		}
	}
	return n
}
