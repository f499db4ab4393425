package orchestrator

import (
	"context"
	"maps"
	"strings"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

// Resume finishes what a previous caravan server left half done: for every
// app whose latest version is still pending (the server stopped in the
// middle of its rollout), it waits for the app's lock, follows Nomad's
// deployment of that version to its end, and records the outcome. Nothing
// is registered again, so no version is duplicated. It returns once every
// pending version is settled or ctx ends.
func (o *Orchestrator) Resume(ctx context.Context) error {
	recs, err := o.store.Apps(ctx)
	if err != nil {
		return err
	}
	done := make(chan error)
	n := 0
	for _, rec := range recs {
		versions, err := o.store.Versions(ctx, rec.JobID, rec.Generation)
		if err != nil {
			return err
		}
		if len(versions) == 0 || versions[len(versions)-1].Status != StatusPending {
			continue
		}
		n++
		go func(jobID string, version int) { done <- o.resume(ctx, jobID, version) }(rec.JobID, versions[len(versions)-1].Version)
	}
	var first error
	for range n {
		if err := <-done; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (o *Orchestrator) resume(ctx context.Context, jobID string, version int) error {
	log := o.log.With("job", jobID, "version", version)
	unlock, err := o.store.Lock(ctx, jobID)
	if err != nil {
		return err
	}
	defer unlock()
	// Read again under the lock: another server may have settled it.
	rec, _, err := o.store.App(ctx, jobID)
	if err != nil || rec == nil {
		return err
	}
	v, err := o.version(ctx, rec, version)
	if err != nil {
		return err
	}
	if v.Status != StatusPending {
		return nil
	}
	log.Info("resuming an interrupted rollout")

	job, err := o.currentJob(ctx, jobID)
	if err != nil {
		return err
	}
	runs, err := o.runsVersion(job, v, rec.Rollovers)
	if err != nil {
		return err
	}
	var rollErr error
	switch {
	case job == nil:
		rollErr = &RolloutError{Version: version, Cause: "caravan server stopped before the job reached Nomad"}
	case !runs:
		rollErr = &RolloutError{Version: version, Cause: "caravan server stopped during the rollout and Nomad now runs " +
			"another version (reverted, or this one never registered)"}
	default:
		rollErr = o.watchDeployment(ctx, jobID, *job.Version, version)
		var dep *nomad.Deployment
		if rollErr == nil {
			dep, rollErr = o.awaitingDeployment(ctx, jobID, version)
		}
		switch {
		case rollErr != nil:
		case dep != nil:
			// Canaries (or a blue-green set) the server never finished
			// starting: hand traffic back to the live version, whatever
			// split was published, and let Nomad revert.
			rollErr = o.abandonCanary(ctx, jobID, v)
		default:
			// A blue-green switch the server promoted but did not finish
			// leaves its split behind.
			if rollErr = o.clearStoredSplits(ctx, jobID, v); rollErr == nil {
				rollErr = o.probeStored(ctx, jobID, v)
			}
		}
	}
	if err := o.finish(ctx, jobID, v, rollErr); err != nil {
		return err
	}
	log.Info("resumed rollout settled", "status", v.Status)
	return nil
}

// runsVersion reports whether Nomad's job runs stored version v: the same
// groups, rendered the same, with the app's rollover count.
func (o *Orchestrator) runsVersion(job *nomad.Job, v *VersionRecord, rollovers int) (bool, error) {
	if job == nil {
		return false, nil
	}
	rendered, err := o.renderStored(*job.ID, v)
	if err != nil {
		return false, err
	}
	return maps.Equal(jobs.FunctionHashes(job, nil), jobs.FunctionHashes(rendered.Job, nil)) &&
		runningRollovers(job) == rollovers, nil
}

// abandonCanary removes any split of stored version v's routes and fails
// its deployment, so Nomad reverts to the live version.
func (o *Orchestrator) abandonCanary(ctx context.Context, jobID string, v *VersionRecord) error {
	if err := o.clearStoredSplits(ctx, jobID, v); err != nil {
		return err
	}
	return o.abandon(jobID, v.Version, &RolloutError{Version: v.Version,
		Cause: "caravan server stopped before its canaries took their share of traffic; Nomad reverted them: deploy again"})
}

// clearStoredSplits removes any split of stored version v's routes (only
// canary and blue-green routes can have one).
func (o *Orchestrator) clearStoredSplits(ctx context.Context, jobID string, v *VersionRecord) error {
	routes, err := o.storedRoutes(jobID, v, func(r router.Route) bool { return r.Preview != nil })
	if err != nil {
		return err
	}
	return o.clearSplits(ctx, routes)
}

// storedApp parses stored version v of job jobID.
func storedApp(jobID string, v *VersionRecord) (*spec.App, error) {
	app, diags := spec.Parse([]byte(v.Spec), v.Filename)
	if diags.HasErrors() {
		return nil, &DiagnosticsError{Diags: diags}
	}
	app.Serve = strings.HasSuffix(jobID, jobs.ServeSuffix)
	if v.Strategy != "" {
		// The strategy the version rolled out with (--strategy overrides
		// the spec's).
		if app.Deploy == nil {
			app.Deploy = &spec.Deploy{}
		}
		app.Deploy.Strategy = v.Strategy
	}
	return app, nil
}

// renderStored renders stored version v of job jobID.
func (o *Orchestrator) renderStored(jobID string, v *VersionRecord) (*jobs.Rendered, error) {
	app, err := storedApp(jobID, v)
	if err != nil {
		return nil, err
	}
	return jobs.Render(app, o.router)
}

// storedRoutes are the routes of stored version v that keep accepts.
func (o *Orchestrator) storedRoutes(jobID string, v *VersionRecord, keep func(router.Route) bool) ([]router.Route, error) {
	app, err := storedApp(jobID, v)
	if err != nil {
		return nil, err
	}
	var out []router.Route
	for _, r := range router.Routes(app, o.router) {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// probeStored probes the routes of a stored version's spec.
func (o *Orchestrator) probeStored(ctx context.Context, jobID string, v *VersionRecord) error {
	rendered, err := o.renderStored(jobID, v)
	if err != nil {
		return err
	}
	return o.probe(ctx, rendered, v.Version, v.Version > 1)
}
