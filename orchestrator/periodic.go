package orchestrator

import (
	"context"
	"fmt"
	"github.com/caravanhq/caravan/api"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caravanhq/caravan/jobs"
	nomad "github.com/hashicorp/nomad/api"
)

// syncPeriodic makes the scheduled functions' periodic jobs of app job
// appJobID exactly want (stamped with version): it registers them and purges
// any other caravan periodic job of the app. It runs once the long-running
// functions of a version are live, so a failed version leaves the previous
// schedules in place.
func (o *Orchestrator) syncPeriodic(ctx context.Context, appJobID string, want []*nomad.Job, version, rollovers int) error {
	return o.syncOwned(ctx, periodicKind, appJobID, want, version, rollovers)
}

// ownedKind is a kind of job an app owns beside its own: periodic jobs of
// scheduled functions, parameterized jobs of callable ones.
type ownedKind struct {
	// what names the kind in errors.
	what string
	// separator joins the app's job ID and a function's name in their IDs.
	separator string
	// is tells the kind's jobs from their children and from other jobs.
	is func(*nomad.JobListStub) bool
}

// syncOwned makes the jobs of kind k that app job appJobID owns exactly
// want (stamped with version): it registers them and purges any other
// caravan job of that kind of the app.
func (o *Orchestrator) syncOwned(ctx context.Context, k ownedKind, appJobID string, want []*nomad.Job, version, rollovers int) error {
	keep := map[string]bool{}
	for _, j := range want {
		j.Meta[jobs.MetaVersion] = strconv.Itoa(version)
		j.Meta[jobs.MetaRollover] = strconv.Itoa(rollovers)
		stamp(j, rollovers)
		if _, err := o.nomad.Register(ctx, j, 0); err != nil {
			return &RolloutError{Function: j.Meta[jobs.MetaFunction], Version: version,
				Cause: fmt.Sprintf("Nomad refused its %s job: %v", k.what, err)}
		}
		keep[*j.ID] = true
	}
	stubs, err := o.ownedStubs(ctx, appJobID, k)
	if err != nil {
		return err
	}
	for _, s := range stubs {
		if keep[s.ID] {
			continue
		}
		if _, err := o.nomad.Deregister(ctx, s.ID, true); err != nil {
			return fmt.Errorf("removing %s job %s: %w", k.what, s.ID, err)
		}
	}
	return nil
}

// ownedStubs lists the jobs of kind k that app job appJobID owns, with
// their meta. Children (<id>/periodic-<time>, <id>/dispatch-...) and jobs
// caravan did not make are left out.
func (o *Orchestrator) ownedStubs(ctx context.Context, appJobID string, k ownedKind) ([]*nomad.JobListStub, error) {
	stubs, err := o.nomad.Jobs(ctx, appJobID+k.separator)
	if err != nil {
		return nil, fmt.Errorf("listing %s jobs of %s: %w", k.what, appJobID, err)
	}
	return slices.DeleteFunc(stubs, func(s *nomad.JobListStub) bool {
		return !k.is(s) || s.ParentID != "" || s.Meta[jobs.MetaApp] == ""
	}), nil
}

// Kinds of jobs an app owns beside its own.
var (
	periodicKind = ownedKind{what: "periodic", separator: jobs.CronSeparator,
		is: func(s *nomad.JobListStub) bool { return s.Periodic }}
	callableKind = ownedKind{what: "parameterized", separator: jobs.CallSeparator,
		is: func(s *nomad.JobListStub) bool { return s.ParameterizedJob || s.Meta[jobs.MetaWorkers] == "true" }}
)

// runningHashes maps every function Nomad runs for app job current (nil:
// none) to its hash (see jobs.FunctionHashes): its groups, and the
// periodic and callable jobs it owns.
func (o *Orchestrator) runningHashes(ctx context.Context, current *nomad.Job) (map[string]string, error) {
	out := jobs.FunctionHashes(current, nil)
	if current == nil {
		return out, nil
	}
	for _, k := range []ownedKind{periodicKind, callableKind} {
		stubs, err := o.ownedStubs(ctx, *current.ID, k)
		if err != nil {
			return nil, err
		}
		for _, s := range stubs {
			out[s.Meta[jobs.MetaFunction]] = s.Meta[jobs.MetaFunctionHash]
		}
	}
	return out, nil
}

// RunResult is api.RunResult: the orchestrator returns wire types as they are.
type RunResult = api.RunResult

// Run launches one run of a scheduled function now and waits (until ctx
// ends) for its result.
func (o *Orchestrator) Run(ctx context.Context, caller Caller, ref AppRef, function string) (*RunResult, error) {
	rec, err := o.resolve(ctx, caller, ref)
	if err != nil {
		return nil, err
	}
	id := jobs.PeriodicID(rec.JobID, function)
	if j, err := o.nomad.Job(ctx, id); err != nil || j == nil {
		return nil, &NotFoundError{App: rec.App, Why: fmt.Sprintf("it has no scheduled function %q live", function)}
	}
	evalID, err := o.nomad.ForcePeriodic(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("launching %s: %w", id, err)
	}
	eval, err := o.waitEval(ctx, evalID)
	if err != nil {
		return nil, err
	}
	res := &RunResult{Function: function, JobID: eval.JobID, Status: "running"}
	var index uint64
	for {
		allocs, last, err := o.nomad.JobAllocations(ctx, eval.JobID, index)
		if err != nil {
			if ctx.Err() != nil {
				return res, nil
			}
			return nil, err
		}
		index = last
		for _, a := range allocs {
			if st := a.TaskStates[function]; st != nil && !st.StartedAt.IsZero() {
				res.StartedAt = st.StartedAt
			}
			switch a.ClientStatus {
			case nomad.AllocClientStatusComplete, nomad.AllocClientStatusFailed:
				res.Status = "succeeded"
				if a.ClientStatus == nomad.AllocClientStatusFailed {
					res.Status = "failed"
				}
				if st := a.TaskStates[function]; st != nil {
					res.FinishedAt = st.FinishedAt
					for _, e := range st.Events {
						if e.Type == nomad.TaskTerminated {
							res.ExitCode = e.ExitCode
						}
					}
				}
				return res, nil
			}
		}
	}
}

// lastRun is the latest run of a scheduled function, if any.
func (o *Orchestrator) lastRun(ctx context.Context, appJobID, function string) (*RunResult, error) {
	stubs, err := o.nomad.Jobs(ctx, jobs.PeriodicID(appJobID, function)+"/")
	if err != nil {
		return nil, err
	}
	stubs = slices.DeleteFunc(stubs, func(s *nomad.JobListStub) bool { return !strings.Contains(s.ID, "/periodic-") })
	if len(stubs) == 0 {
		return nil, nil
	}
	last := slices.MaxFunc(stubs, func(a, b *nomad.JobListStub) int { return int(a.SubmitTime - b.SubmitTime) })
	res := &RunResult{Function: function, JobID: last.ID, Status: "running", StartedAt: time.Unix(0, last.SubmitTime).UTC()}
	if s := last.JobSummary; s != nil && last.Status == "dead" {
		c := s.Summary[function]
		res.Status = "succeeded"
		if c.Failed > 0 || c.Lost > 0 {
			res.Status = "failed"
		}
	}
	return res, nil
}
