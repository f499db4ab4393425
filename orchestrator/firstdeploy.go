package orchestrator

import (
	"context"
	"errors"
	"fmt"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/caravanhq/caravan/jobs"
)

// A new app protects no previous version, so its deploy ends as soon as
// the work is done: Nomad has placed every function's containers, they run
// (and a web function's pass their checks in Consul), and every route
// answers through the proxy over verified TLS. Nomad's own verdict, the
// deployment turning successful, comes a moment later (its clients poll
// Consul's checks every 500 ms and report in batches); it is followed in
// the meantime only for a failure, which fails the deploy as before.

// errServing ends the watch of a new app's deployment once the app serves.
var errServing = errors.New("the new app serves")

// registerNew registers the first version of an app and returns once it
// serves (see above), or with the reason it cannot.
func (o *Orchestrator) registerNew(ctx context.Context, rendered *jobs.Rendered, version int, needs map[string]string) error {
	job := rendered.Job
	id := *job.ID
	evalID, err := o.nomad.Register(ctx, job, 0)
	if err != nil {
		return &RolloutError{Version: version, Cause: fmt.Sprintf("Nomad refused the job: %v", err)}
	}
	eval, err := o.waitEval(ctx, evalID)
	if err != nil {
		return o.abandon(ctx, id, version, err)
	}
	if g, cause := firstUnplaceable(eval.FailedTGAllocs, needs); g != "" {
		return o.abandon(ctx, id, version, &RolloutError{Function: g, Version: version, Cause: cause})
	}
	registered, err := o.nomad.Job(ctx, id)
	if err != nil || registered == nil {
		return errors.Join(err, fmt.Errorf("job %s vanished from Nomad", id))
	}

	wctx, stop := context.WithCancelCause(ctx)
	defer stop(errServing)
	deployed := make(chan error, 1) // Nomad's deployment ended (nil: successful)
	go func() { deployed <- o.watchDeployment(wctx, id, *registered.Version, version) }()
	placed := make(chan error, 1) // every container runs (and passes its checks)
	go func() { placed <- o.awaitPlaced(wctx, rendered) }()
	probed := make(chan error, 1) // every route answers through the proxy
	go func() { probed <- o.probeRoutes(wctx, rendered.Routes, version, 0) }()

	healthy, answers := false, false
	for !healthy || !answers {
		select {
		case err := <-deployed:
			if err != nil {
				return err
			}
			deployed, healthy = nil, true
		case err := <-placed:
			if err != nil {
				return o.firstFailure(ctx, deployed, err)
			}
			placed, healthy = nil, true
		case err := <-probed:
			if err != nil {
				return o.firstFailure(ctx, deployed, err)
			}
			probed, answers = nil, true
		}
	}
	return nil
}

// firstFailure prefers the deployment's account of a failure to err (a
// wait that ended with the caller's deadline): it says which container
// failed and why.
func (o *Orchestrator) firstFailure(ctx context.Context, deployed <-chan error, err error) error {
	if deployed == nil || ctx.Err() == nil {
		return err
	}
	if derr := <-deployed; derr != nil {
		return derr
	}
	return err
}

// awaitPlaced waits until every group of rendered's job has its count of
// running allocations and every web function its count of instances
// passing their checks in Consul.
func (o *Orchestrator) awaitPlaced(ctx context.Context, rendered *jobs.Rendered) error {
	want := map[string]int{}
	for _, tg := range rendered.Job.TaskGroups {
		want[*tg.Name] = *tg.Count
	}
	errs := make(chan error, len(rendered.Routes)+1)
	go func() { errs <- o.awaitRunning(ctx, *rendered.Job.ID, want) }()
	for _, r := range rendered.Routes {
		go func() { errs <- o.awaitPassing(ctx, r.Name, want[r.Function]) }()
	}
	for range len(rendered.Routes) + 1 {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// awaitRunning waits until job id has, per group, at least want[group]
// running allocations.
func (o *Orchestrator) awaitRunning(ctx context.Context, id string, want map[string]int) error {
	var index uint64
	for {
		allocs, last, err := o.nomad.JobAllocations(ctx, id, index)
		if err != nil {
			return fmt.Errorf("waiting for Nomad to run every container: %w", err)
		}
		if allRunning(allocs, want) {
			return nil
		}
		index = last
	}
}

// allRunning reports whether allocs hold, per group, at least want[group]
// running allocations.
func allRunning(allocs []*nomad.AllocationListStub, want map[string]int) bool {
	running := map[string]int{}
	for _, a := range allocs {
		if a.ClientStatus == nomad.AllocClientStatusRunning && a.DesiredStatus == nomad.AllocDesiredStatusRun {
			running[a.TaskGroup]++
		}
	}
	for g, n := range want {
		if running[g] < n {
			return false
		}
	}
	return true
}

// awaitPassing waits until service has at least n instances passing their
// checks in Consul.
func (o *Orchestrator) awaitPassing(ctx context.Context, service string, n int) error {
	var index uint64
	for {
		instances, last, err := o.consul.Instances(ctx, service, "", true, index)
		if err != nil {
			return fmt.Errorf("waiting for %s's containers to pass their checks: %w", service, err)
		}
		if len(instances) >= n {
			return nil
		}
		index = last
	}
}
