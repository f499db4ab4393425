package orchestrator

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"

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
	var wg sync.WaitGroup
	errs := make([]error, len(recs))
	for i, rec := range recs {
		if rec.LatestVersion == 0 || rec.State == StateStopped {
			continue
		}
		v, err := o.store.Version(ctx, rec.JobID, rec.Generation, rec.LatestVersion)
		if err != nil {
			return errors.Join(err, wait(&wg))
		}
		if v == nil || v.Status != StatusPending {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = o.resume(ctx, rec.JobID)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// wait waits for wg and returns nil, so a return can wait for the
// goroutines already started.
func wait(wg *sync.WaitGroup) error {
	wg.Wait()
	return nil
}

func (o *Orchestrator) resume(ctx context.Context, jobID string) error {
	held, unlock, err := o.store.Lock(ctx, jobID)
	if err != nil {
		return err
	}
	defer unlock()
	return o.settleLeftover(held, jobID)
}

// settleLeftover settles the latest version of job jobID if a holder of
// its lock left it pending (a server stopped, or lost the lock, in the
// middle of its rollout), so the next change starts from a consistent
// record. It runs under the lock.
func (o *Orchestrator) settleLeftover(held context.Context, jobID string) error {
	rec, _, err := o.store.App(held, jobID)
	if err != nil || rec == nil || rec.LatestVersion == 0 || rec.State == StateStopped {
		return err
	}
	v, err := o.store.Version(held, jobID, rec.Generation, rec.LatestVersion)
	if err != nil || v == nil || v.Status != StatusPending {
		return err
	}
	log := o.log.With("job", jobID, "version", v.Version)
	log.Info("resuming an interrupted rollout")
	if err := o.finish(held, jobID, v, o.followPending(held, rec, v)); err != nil {
		return err
	}
	log.Info("resumed rollout settled", "status", v.Status)
	return nil
}

// followPending follows pending version v of rec's app to the end of its rollout
// in Nomad, where a previous server left it (see howToResume), and returns
// how it ended.
func (o *Orchestrator) followPending(ctx context.Context, rec *AppRecord, v *VersionRecord) error {
	job, err := o.currentJob(ctx, rec.JobID)
	if err != nil {
		return err
	}
	runs, err := o.runsVersion(ctx, rec, job, v)
	if err != nil {
		return err
	}
	action, why := howToResume(job, runs)
	if action == resumeFail {
		return o.undoLeftover(ctx, rec, v, &RolloutError{Version: v.Version, Cause: why})
	}
	if err := o.watchDeployment(ctx, registered(job), "", v.Version); err != nil {
		return err
	}
	dep, err := o.awaitingDeployment(ctx, rec.JobID, v.Version)
	if err != nil {
		return err
	}
	if dep != nil {
		// Canaries (or a blue-green set) the server never finished
		// starting: hand traffic back to the live version, whatever split
		// was published, and let Nomad revert.
		return o.abandonCanary(ctx, rec, v)
	}
	// A blue-green switch the server promoted but did not finish leaves
	// its split behind.
	if err := o.clearStoredSplits(ctx, rec, v); err != nil {
		return err
	}
	return o.probeStored(ctx, rec, v)
}

// undoLeftover takes back what a server that stopped in the middle of
// pending version v's rollout had published, now that v will not go live
// (cause): the canary job of a canary at zero with its functions'
// records, any traffic split, and v's proxied routes in place of the live
// version's (see publishProxied). It returns cause, joined with what went
// wrong taking them back.
func (o *Orchestrator) undoLeftover(ctx context.Context, rec *AppRecord, v *VersionRecord, cause error) error {
	errs := []error{cause}
	if err := o.stopLeftoverCanaryJob(ctx, rec, v); err != nil {
		errs = append(errs, err)
	}
	// A mixed canary's Nomad canaries (see keepLiveGroups): the job Nomad
	// runs is not v's, as its functions at zero kept their live groups,
	// but its deployment of v's other functions waits for a promotion.
	if dep, err := o.awaitingDeployment(ctx, rec.JobID, v.Version); err != nil {
		errs = append(errs, err)
	} else if dep != nil {
		o.log.Info("failing the deployment an interrupted mixed canary left", "job", rec.JobID, "version", v.Version, "deployment", shortID(dep.ID))
		o.failDeployment(ctx, dep.ID)
	}
	if err := o.clearStoredSplits(ctx, rec, v); err != nil {
		errs = append(errs, err)
	}
	if err := o.restoreProxied(ctx, rec, v); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopLeftoverCanaryJob stops the canary job of rec's app that pending
// version v started as a canary at zero (startZeroCanary) before its
// server stopped, if one runs: nothing records it (the canary state is
// recorded once it takes traffic), and its functions would go on taking
// their share of requests.
func (o *Orchestrator) stopLeftoverCanaryJob(ctx context.Context, rec *AppRecord, v *VersionRecord) error {
	id := jobs.CanaryJobID(rec.JobID)
	job, err := o.nomad.Job(ctx, id)
	if err != nil || job == nil || stopped(job) {
		return err
	}
	var functions []string
	for _, tg := range job.TaskGroups {
		functions = append(functions, *tg.Name)
	}
	routes, err := o.storedRoutes(rec, v, func(r router.Route) bool { return slices.Contains(functions, r.Function) })
	if err != nil {
		return err
	}
	o.log.Info("stopping the canary job an interrupted canary at zero left", "job", id, "version", v.Version)
	return o.stopCanaryJob(ctx, id, withFunctionPreviews(routes, functions))
}

// runsVersion reports whether Nomad's job runs stored version v: the same
// groups, rendered the same, with the app's rollover count.
func (o *Orchestrator) runsVersion(ctx context.Context, rec *AppRecord, job *nomad.Job, v *VersionRecord) (bool, error) {
	if job == nil {
		return false, nil
	}
	rendered, err := o.renderStored(ctx, rec, v)
	if err != nil {
		return false, err
	}
	return maps.Equal(jobs.FunctionHashes(job, nil), jobs.FunctionHashes(rendered.Job, nil)) &&
		runningRollovers(job) == rec.Rollovers, nil
}

// abandonCanary removes any split of stored version v's routes and fails
// its deployment, so Nomad reverts to the live version.
func (o *Orchestrator) abandonCanary(ctx context.Context, rec *AppRecord, v *VersionRecord) error {
	if err := o.clearStoredSplits(ctx, rec, v); err != nil {
		return err
	}
	return o.abandon(ctx, rec.JobID, v.Version, &RolloutError{Version: v.Version,
		Cause: "caravan server stopped before its canaries took their share of traffic; Nomad reverted them: deploy again"})
}

// clearStoredSplits removes any split of stored version v's routes (only
// canary and blue-green routes can have one).
func (o *Orchestrator) clearStoredSplits(ctx context.Context, rec *AppRecord, v *VersionRecord) error {
	routes, err := o.storedRoutes(rec, v, func(r router.Route) bool { return r.Preview != nil })
	if err != nil {
		return err
	}
	return o.clearSplits(ctx, routes)
}

// storedApp is the effective app of stored version v of rec's app: the
// strategy it rolled out with (--strategy overrides the spec's), as the
// deployed app or its serve copy.
func storedApp(rec *AppRecord, v *VersionRecord) (*spec.App, error) {
	parsed, diags := spec.Parse([]byte(v.Spec), v.Filename)
	if diags.HasErrors() {
		return nil, &DiagnosticsError{Diags: diags}
	}
	if err := assignBundles(parsed, v.Bundles); err != nil {
		return nil, err
	}
	return effective(parsed, v.Strategy, rec.Serve), nil
}

// renderStored renders stored version v of rec's app.
func (o *Orchestrator) renderStored(ctx context.Context, rec *AppRecord, v *VersionRecord) (*jobs.Rendered, error) {
	app, err := storedApp(rec, v)
	if err != nil {
		return nil, err
	}
	return o.render(ctx, app)
}

// storedRoutes are the routes of stored version v that keep accepts.
func (o *Orchestrator) storedRoutes(rec *AppRecord, v *VersionRecord, keep func(router.Route) bool) ([]router.Route, error) {
	app, err := storedApp(rec, v)
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
func (o *Orchestrator) probeStored(ctx context.Context, rec *AppRecord, v *VersionRecord) error {
	rendered, err := o.renderStored(ctx, rec, v)
	if err != nil {
		return err
	}
	return o.probe(ctx, rendered, v.Version, v.Version > 1)
}
