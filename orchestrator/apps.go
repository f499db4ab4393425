package orchestrator

import (
	"cmp"
	"context"
	"fmt"
	"github.com/caravanhq/caravan/api"
	"slices"

	"github.com/caravanhq/caravan/jobs"
	nomad "github.com/hashicorp/nomad/api"
)

// AppSummary is api.AppSummary: the orchestrator returns wire types as they are.
type AppSummary = api.AppSummary

// FunctionSummary is api.FunctionSummary: the orchestrator returns wire types as they are.
type FunctionSummary = api.FunctionSummary

// Apps lists the apps the caller may see, stopped ones included, sorted by
// workspace and job.
func (o *Orchestrator) Apps(ctx context.Context, caller Caller) ([]AppSummary, error) {
	recs, err := o.store.Apps(ctx)
	if err != nil {
		return nil, err
	}
	var out []AppSummary
	for _, rec := range recs {
		if caller.Workspace != "*" && caller.Workspace != rec.Workspace {
			continue
		}
		sum := AppSummary{Workspace: rec.Workspace, Environment: rec.Environment, App: rec.App, JobID: rec.JobID, Serve: rec.Serve,
			State: rec.State, Version: rec.LiveVersion, LatestVersion: rec.LatestVersion, DeployedAt: rec.UpdatedAt, Canary: rec.Canary}
		if rec.State != StateStopped {
			job, err := o.currentJob(ctx, rec.JobID)
			if err != nil {
				return nil, err
			}
			if job != nil {
				sum.Functions, err = o.functionSummaries(ctx, job)
				if err != nil {
					return nil, err
				}
			}
		}
		out = append(out, sum)
	}
	slices.SortFunc(out, func(a, b AppSummary) int {
		return cmp.Or(cmp.Compare(a.Workspace, b.Workspace), cmp.Compare(a.JobID, b.JobID))
	})
	return out, nil
}

func (o *Orchestrator) functionSummaries(ctx context.Context, job *nomad.Job) ([]FunctionSummary, error) {
	summary, err := o.nomad.Summary(ctx, *job.ID)
	if err != nil {
		return nil, fmt.Errorf("reading summary of %s: %w", *job.ID, err)
	}
	var out []FunctionSummary
	for _, tg := range job.TaskGroups {
		fs := FunctionSummary{Name: *tg.Name}
		if c, ok := summary.Summary[*tg.Name]; ok {
			fs.Running = c.Running
		}
		if tg.Count != nil {
			fs.Desired = *tg.Count
		}
		if len(tg.Services) > 0 {
			svc := tg.Services[0]
			fs.Service, fs.URL = svc.Name, o.router.URL(svc.Name)
			// Only an autoscaled function's service carries its
			// autoscaler settings.
			_, fs.Autoscaled = svc.Meta[jobs.ServiceMetaTargetInputs]
		}
		out = append(out, fs)
	}
	periodic, err := o.ownedStubs(ctx, *job.ID, periodicKind)
	if err != nil {
		return nil, err
	}
	for _, fn := range sortedFunctions(periodic) {
		fs := FunctionSummary{Name: fn}
		if pj, err := o.nomad.Job(ctx, jobs.PeriodicID(*job.ID, fn)); err == nil && pj != nil && pj.Periodic != nil {
			fs.Schedule = *pj.Periodic.Spec
		}
		run, err := o.lastRun(ctx, *job.ID, fn)
		if err != nil {
			return nil, err
		}
		fs.LastRun = run
		out = append(out, fs)
	}
	callable, err := o.ownedStubs(ctx, *job.ID, callableKind)
	if err != nil {
		return nil, err
	}
	for _, fn := range sortedFunctions(callable) {
		out = append(out, FunctionSummary{Name: fn, Callable: true})
	}
	return out, nil
}

// sortedFunctions names the functions of owned jobs, sorted.
func sortedFunctions(stubs []*nomad.JobListStub) []string {
	var names []string
	for _, s := range stubs {
		names = append(names, s.Meta[jobs.MetaFunction])
	}
	slices.Sort(names)
	return names
}
