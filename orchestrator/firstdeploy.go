package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/caravanhq/caravan/jobs"
)

// A new app protects no previous version, so its deploy ends as soon as
// the work is done: Nomad has placed every function's containers, they run
// (and a web function's pass their checks in Consul, or one answered
// caravan's own probe and has its first route: see firstroute.go), and every route
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
	reg, err := o.registrationOf(ctx, job, eval)
	if err != nil {
		return err
	}

	wctx, stop := context.WithCancelCause(ctx)
	defer stop(errServing)
	first := o.newFirstRoutes(rendered)
	if first != nil {
		go first.run(wctx)
	}
	deployed := make(chan error, 1) // Nomad's deployment ended (nil: successful)
	go func() { deployed <- o.watchDeployment(wctx, reg, eval.DeploymentID, version) }()
	placed := make(chan error, 1) // every container runs (and passes its checks, or has its first route)
	go func() { placed <- o.awaitPlaced(wctx, rendered, first) }()
	probed := make(chan error, 1) // every route answers through the proxy
	go func() { probed <- o.probeRoutes(wctx, probeable(rendered), version, 0) }()

	err = o.awaitServing(ctx, deployed, placed, probed)
	if err != nil {
		// Nothing of a failed deploy serves: no first route either.
		stop(err)
		return errors.Join(err, first.end(ctx))
	}
	// The first routes serve until Traefik takes the routes from Consul.
	go first.handOver(ctx)
	return nil
}

// awaitServing waits until the new app is healthy (Nomad's deployment
// succeeded or every container is placed) and answers through the proxy,
// or one of them fails.
func (o *Orchestrator) awaitServing(ctx context.Context, deployed, placed, probed chan error) error {
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
// running allocations and every web function its count of those passing
// their checks in Consul, with Traefik (when caravan can see it) routing
// to them alone: containers of a job purged a moment ago may still be
// registered under the same names. A function whose first route's
// container (of first) answers counts as placed once Nomad runs its
// containers: it answered caravan's own probe of its health path. (Nomad's
// client reports a running allocation in batches, up to several hundred
// milliseconds after its process listens; the deploy waits for it, so
// that Nomad, and `caravan app list`, show what the deploy says runs.)
func (o *Orchestrator) awaitPlaced(ctx context.Context, rendered *jobs.Rendered, first *firstRoutes) error {
	want := groupCounts(rendered.Job)
	allocs, err := o.awaitRunning(ctx, *rendered.Job.ID, want)
	if err != nil {
		return err
	}
	errs := make(chan error, len(rendered.Routes))
	for _, r := range rendered.Routes {
		checked := make(chan error, 1)
		go func() {
			instances, err := o.awaitPassing(ctx, r.Name, want[r.Function], allocs)
			// (Traefik sends an autoscaled function's requests to caravan's
			// proxies, which know its containers from Consul themselves.)
			if err == nil && o.proxy != nil && !r.Proxied {
				err = o.awaitServers(ctx, r, serverURLs(instances))
			}
			checked <- err
		}()
		go func() {
			select {
			case err := <-checked:
				errs <- err
			case <-first.answeredFor(r.Function):
				errs <- nil
			}
		}()
	}
	for range rendered.Routes {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// awaitRunning waits until job id has, per group, at least want[group]
// running allocations, and returns them.
func (o *Orchestrator) awaitRunning(ctx context.Context, id string, want map[string]int) ([]*nomad.AllocationListStub, error) {
	var index uint64
	for {
		allocs, last, err := o.nomad.JobAllocations(ctx, id, index)
		if err != nil {
			return nil, fmt.Errorf("waiting for Nomad to run every container: %w", err)
		}
		if running, ok := allRunning(allocs, want); ok {
			return running, nil
		}
		index = last
	}
}

// allRunning returns the running allocations among allocs, and whether
// they are, per group, at least want[group].
func allRunning(allocs []*nomad.AllocationListStub, want map[string]int) ([]*nomad.AllocationListStub, bool) {
	var out []*nomad.AllocationListStub
	running := map[string]int{}
	for _, a := range allocs {
		if a.ClientStatus == nomad.AllocClientStatusRunning && a.DesiredStatus == nomad.AllocDesiredStatusRun {
			running[a.TaskGroup]++
			out = append(out, a)
		}
	}
	for g, n := range want {
		if running[g] < n {
			return out, false
		}
	}
	return out, true
}

// awaitPassing waits until at least n instances of service that belong to
// allocs pass their checks in Consul, and returns them.
func (o *Orchestrator) awaitPassing(ctx context.Context, service string, n int, allocs []*nomad.AllocationListStub) ([]Instance, error) {
	var index uint64
	for {
		instances, last, err := o.consul.Instances(ctx, service, "", true, index)
		if err != nil {
			return nil, fmt.Errorf("waiting for %s's containers to pass their checks: %w", service, err)
		}
		if ours := ofAllocs(instances, allocs); len(ours) >= n {
			return ours, nil
		}
		index = last
	}
}

// ofAllocs are the instances that belong to allocs: Nomad puts the
// allocation's ID in the service instance's.
func ofAllocs(instances []Instance, allocs []*nomad.AllocationListStub) []Instance {
	var out []Instance
	for _, in := range instances {
		if slices.ContainsFunc(allocs, func(a *nomad.AllocationListStub) bool { return strings.Contains(in.ID, a.ID) }) {
			out = append(out, in)
		}
	}
	return out
}
