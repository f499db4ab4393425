package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// watchRollout follows Nomad's evaluation of registered job (its ID,
// groups and counts as registered) and then the deployment Nomad opened
// for it, with blocking queries, until the new version is healthy. On a
// placement failure, a failed deployment, or the caller's deadline, it
// fails the deployment (so auto_revert restores the previous version) and
// returns a *RolloutError naming the function and the cause; a
// *DeploymentMissingError when Nomad opened no deployment for the version
// that needs one.
// needs says what each function asks of a node (see needs in apply.go).
func (o *Orchestrator) watchRollout(ctx context.Context, job *nomad.Job, evalID string, version int, needs map[string]string) error {
	jobID := *job.ID
	eval, err := o.waitEval(ctx, evalID)
	if err != nil {
		return o.abandon(ctx, jobID, version, err)
	}
	if g, cause := firstUnplaceable(eval.FailedTGAllocs, needs); g != "" {
		return o.abandon(ctx, jobID, version, &RolloutError{Function: g, Version: version, Cause: cause})
	}
	reg, err := o.registrationOf(ctx, job, eval)
	if err != nil {
		return err
	}
	return o.watchDeployment(ctx, reg, eval.DeploymentID, version)
}

// registration is the Nomad job version one registration made: what
// tells its deployment from another version's.
type registration struct {
	JobID string
	// Version is the Nomad job version.
	Version uint64
	// SpecIndex is the job's JobModifyIndex at that version (the
	// registration's evaluation carries it; a deployment carries it as
	// JobSpecModifyIndex); 0 when unknown, and Version tells instead.
	SpecIndex uint64
	// Expects is whether Nomad opens a deployment for the version (see
	// expectsDeployment).
	Expects bool
}

// registrationOf is the registration whose completed evaluation is eval,
// of job as it was registered. The version is read from Nomad: the job
// as it is now, when it is still the one eval evaluated.
func (o *Orchestrator) registrationOf(ctx context.Context, job *nomad.Job, eval *nomad.Evaluation) (registration, error) {
	now, err := o.nomad.Job(ctx, *job.ID)
	if err != nil || now == nil {
		return registration{}, errors.Join(err, fmt.Errorf("job %s vanished from Nomad", *job.ID))
	}
	reg := registered(now)
	reg.Expects = expectsDeployment(job)
	if eval.JobModifyIndex > 0 && eval.JobModifyIndex != reg.SpecIndex {
		// Registered again since (a scale): the index tells the
		// version's deployment, whose number Nomad's job no longer says.
		reg.SpecIndex = eval.JobModifyIndex
	}
	return reg, nil
}

// registered is the registration of job as Nomad holds it now.
func registered(job *nomad.Job) registration {
	reg := registration{JobID: *job.ID, Version: *job.Version, Expects: expectsDeployment(job)}
	if job.JobModifyIndex != nil {
		reg.SpecIndex = *job.JobModifyIndex
	}
	return reg
}

// expectsDeployment reports whether Nomad opens a deployment when it
// registers a new version of job: a service job with a group that runs a
// container and has an update block (Nomad's reconciler opens one for a
// new version whenever a group's desired total is not zero and its
// update strategy is not empty). A version whose groups are all at zero
// (autoscaled functions at rest) has none.
func expectsDeployment(job *nomad.Job) bool {
	if job.Type != nil && *job.Type != nomad.JobTypeService {
		return false
	}
	for _, tg := range job.TaskGroups {
		u := tg.Update
		if u == nil {
			u = job.Update
		}
		if tg.Count != nil && *tg.Count > 0 && u != nil && u.MaxParallel != nil && *u.MaxParallel > 0 {
			return true
		}
	}
	return false
}

// opens reports whether dep is the deployment of reg's version.
func (reg registration) opens(dep *nomad.Deployment) bool {
	if dep == nil || dep.JobID != reg.JobID {
		return false
	}
	if reg.SpecIndex > 0 && dep.JobSpecModifyIndex > 0 {
		return dep.JobSpecModifyIndex == reg.SpecIndex
	}
	return dep.JobVersion == reg.Version
}

// newer reports whether dep is the deployment of a version registered
// after reg's.
func (reg registration) newer(dep *nomad.Deployment) bool {
	if dep == nil || dep.JobID != reg.JobID {
		return false
	}
	if reg.SpecIndex > 0 && dep.JobSpecModifyIndex > 0 {
		return dep.JobSpecModifyIndex > reg.SpecIndex
	}
	return dep.JobVersion > reg.Version
}

// lookup is what a rollout does with the deployment it found for its
// registration.
type lookup int

const (
	// lookupWait: not there yet; ask again.
	lookupWait lookup = iota
	// lookupFollow: the registration's deployment; follow it.
	lookupFollow
	// lookupNone: Nomad opens no deployment for this version; nothing to
	// follow.
	lookupNone
	// lookupSuperseded: a later version's deployment came first; the
	// registration's will not come.
	lookupSuperseded
)

// lookupDeployment decides from dep, the job's latest deployment (nil:
// none), whether it is reg's.
func lookupDeployment(reg registration, dep *nomad.Deployment) lookup {
	switch {
	case reg.opens(dep):
		return lookupFollow
	case reg.newer(dep):
		return lookupSuperseded
	case !reg.Expects:
		return lookupNone
	}
	return lookupWait
}

// DeploymentWait bounds how long a rollout waits for the deployment of
// the version it registered to appear in Nomad. Nomad opens it in the
// plan of the registration's evaluation, so once the evaluation is
// complete it is there at once: the wait covers the versions followed
// without their evaluation (a rollout a stopped server left).
var DeploymentWait = 10 * time.Second

// deploymentPoll is how often a rollout asks for the deployment of its
// version while it is not there.
const deploymentPoll = 100 * time.Millisecond

// watchDeployment follows the deployment of registration reg (caravan
// version version) to its end with blocking queries, or until its
// canaries wait for caravan to promote them; see watchRollout. hint is
// the deployment the registration's evaluation names ("" when unknown):
// Nomad names the job's latest deployment there even when it opened none
// for the version, so it is followed only when it is reg's.
func (o *Orchestrator) watchDeployment(ctx context.Context, reg registration, hint string, version int) error {
	dep, err := o.deploymentOf(ctx, reg, hint, version)
	if err != nil || dep == nil {
		return err
	}
	return o.followDeployment(ctx, dep, version, true)
}

// deploymentOf finds the deployment of reg (nil: Nomad opens none for
// it), asking every deploymentPoll for at most DeploymentWait; a
// *DeploymentMissingError when it does not appear, or a later version's
// does instead.
func (o *Orchestrator) deploymentOf(ctx context.Context, reg registration, hint string, version int) (*nomad.Deployment, error) {
	if hint != "" {
		if dep, _, err := o.nomad.Deployment(ctx, hint, 0); err == nil && reg.opens(dep) {
			return dep, nil
		}
	}
	wctx, cancel := context.WithTimeout(ctx, DeploymentWait)
	defer cancel()
	missing := &DeploymentMissingError{JobID: reg.JobID, JobVersion: reg.Version, Version: version, Waited: DeploymentWait}
	for {
		dep, err := o.nomad.LatestDeployment(wctx, reg.JobID)
		if err == nil {
			switch lookupDeployment(reg, dep) {
			case lookupFollow:
				return dep, nil
			case lookupNone:
				return nil, nil
			case lookupSuperseded:
				missing.Superseded = ptr(dep.JobVersion)
				return nil, missing
			}
			if dep != nil {
				missing.Latest = ptr(dep.JobVersion)
			}
		}
		if err := sleep(wctx, deploymentPoll); err != nil {
			switch cause := context.Cause(ctx); {
			case errors.Is(cause, ErrLockLost):
				return nil, ErrLockLost // the next holder follows it
			case errors.Is(cause, errServing):
				return nil, nil // a new app that serves needs no verdict (registerNew)
			case ctx.Err() != nil:
				return nil, fmt.Errorf("waiting for the deployment of %s version %d: %w", reg.JobID, reg.Version, ctx.Err())
			}
			return nil, missing
		}
	}
}

// followDeployment follows dep to its end; with untilPromotion, it also
// returns once dep's canaries wait for a promotion.
func (o *Orchestrator) followDeployment(ctx context.Context, dep *nomad.Deployment, version int, untilPromotion bool) error {
	o.log.Debug("watching deployment", "job", dep.JobID, "deployment", dep.ID)
	index := dep.ModifyIndex
	for {
		switch deploymentProgress(dep, untilPromotion) {
		case deploymentDone:
			return nil
		case deploymentFailed:
			return o.deploymentError(context.WithoutCancel(ctx), dep, version)
		}
		next, last, err := o.nomad.Deployment(ctx, dep.ID, index)
		if err != nil {
			if errors.Is(context.Cause(ctx), ErrLockLost) {
				return ErrLockLost // the next holder follows it
			}
			if errors.Is(context.Cause(ctx), errServing) {
				return nil // a new app that serves needs no verdict (registerNew)
			}
			if ctx.Err() != nil {
				dctx := context.WithoutCancel(ctx)
				o.failDeployment(dctx, dep.ID)
				rerr := o.deploymentError(dctx, dep, version)
				var re *RolloutError
				if errors.As(rerr, &re) {
					re.Cause = "not healthy before the deadline: " + re.Cause
				}
				return rerr
			}
			return fmt.Errorf("watching deployment %s: %w", shortID(dep.ID), err)
		}
		dep, index = next, last
	}
}

// progress is where a deployment stands for a rollout that follows it.
type progress int

const (
	deploymentOngoing progress = iota
	deploymentDone
	deploymentFailed
)

// deploymentProgress says whether dep is done (successful, or running
// with every container healthy (see allHealthy); with untilPromotion, also
// running with canaries that wait for caravan), failed (or cancelled), or
// still going.
func deploymentProgress(dep *nomad.Deployment, untilPromotion bool) progress {
	switch dep.Status {
	case nomad.DeploymentStatusSuccessful:
		return deploymentDone
	case nomad.DeploymentStatusRunning:
		if untilPromotion && awaitingPromotion(dep) {
			return deploymentDone // canaries are healthy; caravan promotes them
		}
		if allHealthy(dep) {
			return deploymentDone
		}
	case nomad.DeploymentStatusFailed, nomad.DeploymentStatusCancelled:
		return deploymentFailed
	}
	return deploymentOngoing
}

// allHealthy reports whether every group of running deployment dep has
// all its containers healthy, its canaries (if any) promoted. Nomad calls
// such a deployment successful a second or two later (its deployment
// watcher batches health changes for a second, perJobEvalBatchPeriod,
// before a scheduler pass), and nothing fails it in between: a container's
// health, once set, is final. Until then the version is not Nomad's
// stable one, which the next registration waits for (awaitVerdict).
func allHealthy(dep *nomad.Deployment) bool {
	if len(dep.TaskGroups) == 0 {
		return false
	}
	for _, st := range dep.TaskGroups {
		if (st.DesiredCanaries > 0 && !st.Promoted) || st.HealthyAllocs < st.DesiredTotal {
			return false
		}
	}
	return true
}

// awaitVerdict waits, before job id's next version is registered, for
// Nomad to end the deployment of the version running now, when caravan
// called it live before Nomad's verdict (allHealthy, registerNew): only a
// successful deployment makes a version stable, the one auto_revert goes
// back to, and registering the next one would cancel it. It gives up
// after VerdictWait, or when ctx ends, and registers anyway.
func (o *Orchestrator) awaitVerdict(ctx context.Context, id string, current *nomad.Job) {
	dep, err := o.nomad.LatestDeployment(ctx, id)
	if err != nil || dep == nil || current == nil || current.Version == nil || dep.JobVersion != *current.Version ||
		dep.Status != nomad.DeploymentStatusRunning || awaitingPromotion(dep) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, VerdictWait)
	defer cancel()
	index := dep.ModifyIndex
	for dep.Status == nomad.DeploymentStatusRunning {
		next, last, err := o.nomad.Deployment(ctx, dep.ID, index)
		if err != nil {
			o.log.Warn("registering before Nomad's verdict on the live version", "job", id, "deployment", shortID(dep.ID), "error", err)
			return
		}
		dep, index = next, last
	}
}

// VerdictWait bounds awaitVerdict.
var VerdictWait = 30 * time.Second

// abandon fails the version's deployment, if any, so Nomad reverts to the
// previous stable version, and returns err.
func (o *Orchestrator) abandon(ctx context.Context, jobID string, version int, err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	dep, derr := o.nomad.LatestDeployment(ctx, jobID)
	if derr == nil && dep != nil && dep.Status == nomad.DeploymentStatusRunning {
		o.failDeployment(ctx, dep.ID)
	} else if derr == nil && dep == nil && version == 1 {
		// A first version that cannot be placed would wait for capacity
		// forever; stop it so nothing half-deployed lingers.
		_, _ = o.nomad.Deregister(ctx, jobID, false)
	}
	return err
}

func (o *Orchestrator) failDeployment(ctx context.Context, id string) {
	if err := o.nomad.FailDeployment(ctx, id); err != nil {
		o.log.Warn("failing deployment", "deployment", id, "error", err)
	}
}

func (o *Orchestrator) waitEval(ctx context.Context, id string) (*nomad.Evaluation, error) {
	var index uint64
	for {
		eval, last, err := o.nomad.Evaluation(ctx, id, index)
		if err != nil {
			return nil, fmt.Errorf("waiting for Nomad to evaluate the job: %w", err)
		}
		switch eval.Status {
		case nomad.EvalStatusComplete:
			return eval, nil
		case nomad.EvalStatusFailed, nomad.EvalStatusCancelled:
			return nil, &RolloutError{Cause: fmt.Sprintf("Nomad's evaluation %s: %s", eval.Status, eval.StatusDescription)}
		}
		index = last
	}
}

// deploymentError explains a failed deployment from its allocations.
func (o *Orchestrator) deploymentError(ctx context.Context, dep *nomad.Deployment, version int) error {
	allocs, _, err := o.nomad.DeploymentAllocations(ctx, dep.ID, 0)
	if err != nil {
		allocs = nil
	}
	return explainDeployment(dep, allocs, version)
}

// explainDeployment names the function and cause of failed deployment
// dep: the task events of an allocation that failed (else one that is
// unhealthy), else the first group short of healthy containers.
func explainDeployment(dep *nomad.Deployment, allocs []*nomad.AllocationListStub, version int) *RolloutError {
	re := &RolloutError{Version: version, Cause: dep.StatusDescription}
	allocs = slices.Clone(allocs)
	sort.SliceStable(allocs, func(i, j int) bool { return rank(allocs[i]) < rank(allocs[j]) })
	for _, a := range allocs {
		if rank(a) == 2 {
			continue
		}
		re.Function, re.AllocID = a.TaskGroup, a.ID
		if why := taskFailure(a.TaskStates); why != "" {
			re.Cause = why
		}
		return re
	}
	for _, name := range slices.Sorted(maps.Keys(dep.TaskGroups)) {
		if st := dep.TaskGroups[name]; st.HealthyAllocs < st.DesiredTotal {
			re.Function = name
			re.Cause = fmt.Sprintf("%d of %d containers healthy (%s)", st.HealthyAllocs, st.DesiredTotal, dep.StatusDescription)
			break
		}
	}
	return re
}

func rank(a *nomad.AllocationListStub) int {
	switch {
	case a.ClientStatus == nomad.AllocClientStatusFailed:
		return 0
	case a.DeploymentStatus == nil || a.DeploymentStatus.Healthy == nil || !*a.DeploymentStatus.Healthy:
		return 1
	default:
		return 2
	}
}

// taskFailure summarises the last events of the tasks that failed or
// restarted, e.g. "task web: Terminated (Exit Code: 1) ×3, then Not Restarting".
func taskFailure(states map[string]*nomad.TaskState) string {
	var parts []string
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		st := states[n]
		var evs []string
		for _, e := range st.Events {
			switch e.Type {
			case nomad.TaskTerminated, nomad.TaskDriverFailure, nomad.TaskNotRestarting, nomad.TaskFailedValidation,
				nomad.TaskSetupFailure, nomad.TaskKilled, "Alloc Unhealthy":
				evs = append(evs, strings.TrimSpace(e.Type+": "+e.DisplayMessage))
			case nomad.TaskArtifactDownloadFailed:
				// The URL is signed; what went wrong is at its end.
				ev := "the function's code bundle could not be fetched: " + artifactCause(e.DisplayMessage)
				if len(evs) == 0 || evs[len(evs)-1] != ev {
					evs = append(evs, ev)
				}
			}
		}
		if len(evs) == 0 && !st.Failed && st.Restarts == 0 {
			continue
		}
		if len(evs) > 3 {
			evs = evs[len(evs)-3:]
		}
		msg := fmt.Sprintf("task %s", n)
		if st.Restarts > 0 {
			msg += fmt.Sprintf(" restarted %d times", st.Restarts)
		}
		if len(evs) > 0 {
			msg += ": " + strings.Join(evs, "; ")
		}
		parts = append(parts, msg)
	}
	return strings.Join(parts, "; ")
}

// quotedURL matches a quoted URL in a Nomad event's message.
var quotedURL = regexp.MustCompile(`"https?://[^"]*"`)

// checksumGot finds the hash go-getter computed in its checksum error.
var checksumGot = regexp.MustCompile(`Got: ([0-9a-f]{12})`)

// artifactCause is what failed in a failed artifact download, without
// its (signed) URLs: "dial tcp 127.0.0.1:7474: connect: connection
// refused", "checksums did not match".
func artifactCause(msg string) string {
	if strings.Contains(msg, "Checksums did not match") {
		got := ""
		if m := checksumGot.FindStringSubmatch(msg); m != nil {
			got = ", got sha256 " + m[1]
		}
		return "the bytes caravan server sent do not hash to the bundle's ID (its checksum" + got + "): the stored bundle is damaged or was changed"
	}
	msg = quotedURL.ReplaceAllString(msg, "<bundle URL>")
	if i := strings.LastIndex(msg, "failed to download artifact"); i >= 0 {
		msg = strings.TrimPrefix(msg[i:], "failed to download artifact")
		msg = strings.TrimPrefix(strings.TrimSpace(msg), "<bundle URL>")
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(msg), ":"))
}

// describePlacement turns Nomad's placement metrics into a sentence, e.g.
// "1 node evaluated; missing devices: nvidia/gpu (1)".
func describePlacement(m *nomad.AllocationMetric) string {
	if m == nil {
		return "no node fits"
	}
	var parts []string
	parts = append(parts, fmt.Sprintf("%d of %d nodes evaluated", m.NodesEvaluated, m.NodesInPool))
	add := func(label string, counts map[string]int) {
		if len(counts) == 0 {
			return
		}
		keys := make([]string, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var kv []string
		for _, k := range keys {
			kv = append(kv, fmt.Sprintf("%s (%d)", k, counts[k]))
		}
		parts = append(parts, label+": "+strings.Join(kv, ", "))
	}
	add("filtered by constraint", m.ConstraintFiltered)
	add("filtered by class", m.ClassFiltered)
	add("exhausted", m.DimensionExhausted)
	return strings.Join(parts, "; ")
}
