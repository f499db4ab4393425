package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/caravanhq/caravan/autoscale"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

// A canary of autoscaled functions at zero. Nomad places a canary only
// beside a container it replaces, so a canary version of a function that
// runs none would have nothing to split. Instead, such a version runs its
// functions as a job of their own (jobs.RenderCanary, "<job>--canary"),
// each function there a function of its own for the proxies and the
// autoscaler (its Consul service and record are the preview's name), and
// the app's job keeps the live version:
//
//	deploy:  canary job registered at zero, its records written, the
//	         preview's routers name it (router.Route.FunctionPreview), the
//	         split sends traffic% of requests to it (router.Split.Function);
//	         each version scales from zero on its own share
//	promote: split at 100% to the canary function, the app's job
//	         registered with the new version (as many containers as serve
//	         now, rolled out as a rolling update), split removed, canary
//	         job stopped (its containers drain) and its records removed
//	abort:   split removed, the live version's routes back, canary job
//	         stopped and its records removed
//
// The rest of the canary's life (history, promote_after, refusals of
// other changes while it is undecided) is every canary's.

// zeroCanaryFunctions are the functions of a canary version to run as a
// canary job (see above): each function the version changes in the app's
// job (a group of job whose hash differs from current's) that is an
// autoscaled web function with a preview and runs no container (job's
// counts are carried over, see carryCounts). The version's other changed
// functions, those that run containers, get Nomad's canaries beside it
// (see keepLiveGroups). Nil for none, for another strategy, with no live
// job, or when the version removes a function (Nomad's rollout). Sorted.
func zeroCanaryFunctions(app *spec.App, job, current *nomad.Job, routes []router.Route) []string {
	if app.DeployStrategy() != spec.StrategyCanary || current == nil || stopped(current) {
		return nil
	}
	old, next := jobs.FunctionHashes(current, nil), jobs.FunctionHashes(job, nil)
	counts := groupCounts(job)
	byFunction := map[string]router.Route{}
	for _, r := range routes {
		byFunction[r.Function] = r
	}
	var out []string
	for name := range old {
		if _, ok := next[name]; !ok {
			return nil // a function removed: Nomad's rollout
		}
	}
	for name, h := range next {
		if old[name] == h {
			continue
		}
		if r, ok := byFunction[name]; ok && r.FunctionPreview() != nil && counts[name] == 0 {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// keepLiveGroups gives job, a canary version, current's groups of
// functions (those that run as a canary job, see zeroCanaryFunctions): the
// app's job keeps serving their live version, so Nomad's deployment of job
// places canaries of the version's other changed functions only. The
// promotion registers the version's own groups of functions
// (promoteZero). It reports whether job still changes a group of current
// (a mixed canary: Nomad's canaries and a canary job).
func keepLiveGroups(job, current *nomad.Job, functions []string) bool {
	putGroups(job, groupsNamed(current, functions))
	return !maps.Equal(jobs.FunctionHashes(job, nil), jobs.FunctionHashes(current, nil))
}

// putGroups puts groups in job in place of its groups of the same names.
func putGroups(job *nomad.Job, groups []*nomad.TaskGroup) {
	for i, tg := range job.TaskGroups {
		if j := slices.IndexFunc(groups, func(g *nomad.TaskGroup) bool { return *g.Name == *tg.Name }); j >= 0 {
			job.TaskGroups[i] = groups[j]
		}
	}
}

// groupsNamed are deep copies of job's groups named in names.
func groupsNamed(job *nomad.Job, names []string) []*nomad.TaskGroup {
	var out []*nomad.TaskGroup
	for _, tg := range job.TaskGroups {
		if slices.Contains(names, *tg.Name) {
			out = append(out, copyGroup(tg))
		}
	}
	return out
}

// copyGroup is a deep copy of tg.
func copyGroup(tg *nomad.TaskGroup) *nomad.TaskGroup {
	b, err := json.Marshal(tg)
	if err != nil {
		panic(err) // a TaskGroup always marshals
	}
	var out nomad.TaskGroup
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return &out
}

// withCanaryJob is the canary state of a mixed canary version: st, Nomad's
// canaries of the functions that run containers, with zst, the canary job
// of its functions at zero (its functions as JobFunctions).
func withCanaryJob(st, zst *CanaryState) *CanaryState {
	out := *st
	out.CanaryJob = zst.CanaryJob
	out.JobFunctions = slices.Clone(zst.Functions)
	out.Functions = union(st.Functions, zst.Functions)
	out.Keys = union(st.Keys, zst.Keys)
	out.Previews = maps.Clone(st.Previews)
	if out.Previews == nil {
		out.Previews = map[string]string{}
	}
	maps.Copy(out.Previews, zst.Previews)
	return &out
}

// canaryJobFunctions are the functions of st that run in its canary job
// (nil: it has none).
func canaryJobFunctions(st *CanaryState) []string {
	switch {
	case st.CanaryJob == "":
		return nil
	case len(st.JobFunctions) > 0:
		return st.JobFunctions
	default:
		return st.Functions
	}
}

// canaryParts splits st, with routes (its split functions'), into the
// part its canary job runs and the part Nomad's deployment does (either
// nil when st has none of it), each with its own functions, keys and
// routes.
func canaryParts(kvRoot string, st *CanaryState, routes []router.Route) (job, dep *canaryPart) {
	inJob := canaryJobFunctions(st)
	var jobRoutes, depRoutes []router.Route
	for _, r := range routes {
		if slices.Contains(inJob, r.Function) {
			jobRoutes = append(jobRoutes, r)
		} else {
			depRoutes = append(depRoutes, r)
		}
	}
	jobKeys := keysOfRoutes(kvRoot, st.Keys, jobRoutes)
	if st.CanaryJob != "" {
		p := *st
		p.DeploymentID, p.Functions, p.JobFunctions, p.Keys = "", slices.Clone(inJob), nil, jobKeys
		job = &canaryPart{state: &p, routes: jobRoutes}
	}
	if st.DeploymentID != "" {
		p := *st
		p.CanaryJob, p.JobFunctions, p.Keys = "", nil, slices.DeleteFunc(slices.Clone(st.Keys), func(k string) bool { return slices.Contains(jobKeys, k) })
		p.Functions = slices.DeleteFunc(slices.Clone(st.Functions), func(f string) bool { return slices.Contains(inJob, f) })
		dep = &canaryPart{state: &p, routes: depRoutes}
	}
	return job, dep
}

// canaryPart is the canary job's or Nomad's part of a canary (see
// canaryParts).
type canaryPart struct {
	state  *CanaryState
	routes []router.Route
}

// keysOfRoutes are the keys among keys under the split prefixes of routes
// (router.SplitPrefixes).
func keysOfRoutes(kvRoot string, keys []string, routes []router.Route) []string {
	var prefixes []string
	for _, r := range routes {
		prefixes = append(prefixes, router.SplitPrefixes(kvRoot, r)...)
	}
	var out []string
	for _, k := range keys {
		if slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(k, p) }) {
			out = append(out, k)
		}
	}
	return out
}

// withFunctionPreviews is routes with the previews of functions naming
// their canary functions (router.Route.FunctionPreview).
func withFunctionPreviews(routes []router.Route, functions []string) []router.Route {
	out := slices.Clone(routes)
	for i, r := range out {
		if slices.Contains(functions, r.Function) {
			out[i].Preview = r.FunctionPreview()
		}
	}
	return out
}

// canaryFunctions maps each of routes' names to the canary function of
// its version, its preview's name.
func canaryFunctions(routes []router.Route) map[string]string {
	out := map[string]string{}
	for _, r := range routes {
		if r.Preview != nil {
			out[r.Name] = r.Preview.Name
		}
	}
	return out
}

// canaryRecords are the autoscale records of the canary functions of
// routes (those of app's functions), which run in job canaryJob: the
// proxies read them to queue a canary function's requests at zero, the
// autoscaler to scale it.
func canaryRecords(app *spec.App, canaryJob string, routes []router.Route) (map[string]string, error) {
	out := map[string]string{}
	for _, r := range routes {
		fn := functionNamed(app, r.Function)
		if fn == nil || fn.Scaling == nil || r.Preview == nil {
			return nil, fmt.Errorf("canary route %s has no autoscaled function with a preview", r.Name)
		}
		b, err := json.Marshal(autoscale.NewRecord(canaryJob, fn.Name, fn.Scaling))
		if err != nil {
			return nil, err
		}
		out[proxy.SettingsKVPrefix+r.Preview.Name] = string(b)
	}
	return out, nil
}

// canaryRecordKeys are the keys of canaryRecords (values aside).
func canaryRecordKeys(routes []router.Route) []string {
	var keys []string
	for _, r := range routes {
		if r.Preview != nil {
			keys = append(keys, proxy.SettingsKVPrefix+r.Preview.Name)
		}
	}
	slices.Sort(keys)
	return keys
}

// readyPromotion readies job, the app job of a canary version run as a
// canary job, to take over the functions the canary job runs: each of
// their groups starts as many containers as serve the function now (the
// live group's, as carryCounts carries them, or the canary job's,
// whichever is more, within the function's bounds) and rolls out as a
// rolling update does, its new containers promoted on their own once
// healthy. Every request goes to the canary function meanwhile. The
// other groups are carried over as any deploy's.
func readyPromotion(job, current, canaryJob *nomad.Job, app *spec.App, routes []router.Route, functions []string) {
	carryCounts(job, current, app, routes)
	canaries := map[string]int{}
	if canaryJob != nil && !stopped(canaryJob) {
		canaries = groupCounts(canaryJob)
	}
	for _, tg := range job.TaskGroups {
		fn := functionNamed(app, *tg.Name)
		if !slices.Contains(functions, *tg.Name) || fn == nil || fn.Scaling == nil || tg.Count == nil {
			continue
		}
		n := max(min(max(*tg.Count, canaries[*tg.Name]), fn.Scaling.MaxContainers), fn.Scaling.MinContainers)
		tg.Count = ptr(n)
		if u := tg.Update; u != nil {
			u.Canary, u.AutoPromote, u.MaxParallel = ptr(n), ptr(n > 0), ptr(max(n, 1))
		}
	}
}

// renderCanary renders (and signs) the canary job of app's functions.
func (o *Orchestrator) renderCanary(ctx context.Context, app *spec.App, functions []string) (*nomad.Job, error) {
	job, err := jobs.RenderCanary(app, o.router, functions)
	if err != nil {
		return nil, err
	}
	if err := o.sign(ctx, app, job); err != nil {
		return nil, err
	}
	return job, nil
}

// startZeroCanary rolls out r, a canary version whose changed functions
// run no container (see zeroCanaryFunctions): the canary job, its
// records, and the split at the canary's traffic. Its preview routers
// were published with r's routes (publishProxied). It returns the state
// to record; on failure the canary job is stopped and the split removed.
func (o *Orchestrator) startZeroCanary(ctx context.Context, r release, functions []string) (*CanaryState, error) {
	routes := zeroRoutes(r.rendered.Routes, functions)
	fail := func(keys []string, canaryJob string, err error) (*CanaryState, error) {
		st := &CanaryState{CanaryJob: canaryJob, Keys: keys}
		return nil, o.discardZero(context.WithoutCancel(ctx), *r.rendered.Job.ID, st, routes, err)
	}
	job, err := o.renderCanary(ctx, r.app, functions)
	if err != nil {
		return nil, err
	}
	id := *job.ID
	existing, err := o.nomad.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := owned(existing, r.app); err != nil {
		return nil, err
	}
	records, err := canaryRecords(r.app, id, routes)
	if err != nil {
		return nil, err
	}
	if err := o.writeKV(ctx, setOps(records)); err != nil {
		return fail(nil, id, &RolloutError{Version: r.version, Cause: fmt.Sprintf("publishing the canary functions' records: %v", err)})
	}
	evalID, err := o.nomad.Register(ctx, job, 0)
	if err == nil {
		_, err = o.waitEval(ctx, evalID)
	}
	if err != nil {
		return fail(nil, id, &RolloutError{Version: r.version, Cause: fmt.Sprintf("Nomad refused the canary job %s: %v", id, err)})
	}
	if err := o.awaitFunctionPreviews(ctx, routes); err != nil {
		return fail(nil, id, &RolloutError{Version: r.version, Cause: err.Error()})
	}
	_, traffic, after := r.app.CanarySettings()
	keys, err := o.publishSplits(ctx, routes, traffic, canaryFunctions(routes))
	if err != nil {
		return fail(keys, id, err)
	}
	st := &CanaryState{Version: r.version, CanaryJob: id, Traffic: traffic, Since: time.Now().UTC(), Keys: keys,
		Previews: map[string]string{}, Functions: functions}
	for _, rt := range routes {
		st.Previews[rt.Function] = rt.Preview.URL
	}
	if after > 0 {
		st.PromoteAt = st.Since.Add(after)
	}
	o.log.Info("canary at zero: its functions run as a job of their own", "job", id, "functions", functions, "traffic", traffic)
	return st, nil
}

// zeroRoutes are the routes of functions among routes (the functions at
// zero of a canary, or any others).
func zeroRoutes(routes []router.Route, functions []string) []router.Route {
	var out []router.Route
	for _, r := range routes {
		if slices.Contains(functions, r.Function) {
			out = append(out, r)
		}
	}
	return out
}

// awaitFunctionPreviews waits until Traefik's preview routers of routes
// name their canary functions (see awaitRouters): before, a preview
// request would look for canaries of the live function.
func (o *Orchestrator) awaitFunctionPreviews(ctx context.Context, routes []router.Route) error {
	if o.proxy == nil {
		return nil // publishProxied waited SplitSettle
	}
	return observe(ctx, "the canary functions' previews", func(ctx context.Context) (bool, error) {
		for _, r := range routes {
			got, err := o.proxy.RequestHeader(ctx, r.Preview.FunctionMiddleware()+"@"+kvProvider, router.HeaderFunction)
			if err != nil || got != r.Preview.Name {
				return false, err
			}
		}
		return true, nil
	})
}

// discardZero hands all traffic of routes back to the live version
// (removing the split), stops the canary job of st and removes its
// functions' records; it returns cause, or what went wrong on the way.
// The live version's routes are put back by the caller (restoreProxied).
func (o *Orchestrator) discardZero(ctx context.Context, jobID string, st *CanaryState, routes []router.Route, cause error) error {
	errs := []error{cause}
	if err := o.removeOrRecord(ctx, jobID, st.Keys); err != nil {
		errs = append(errs, err)
	}
	if err := o.clearSplits(ctx, routes); err != nil {
		errs = append(errs, err)
	}
	if err := o.stopCanaryJob(ctx, st.CanaryJob, routes); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopCanaryJob stops canary job id (its containers drain first, as any
// autoscaled container that stops) and removes the records of routes'
// canary functions.
func (o *Orchestrator) stopCanaryJob(ctx context.Context, id string, routes []router.Route) error {
	if id == "" {
		return nil
	}
	var errs []error
	job, err := o.nomad.Job(ctx, id)
	if err == nil && job != nil && !stopped(job) {
		if job.Meta[jobs.MetaCanary] != "true" {
			return &OwnershipError{JobID: id, Why: "it is not a canary job of caravan's"}
		}
		var evalID string
		if evalID, err = o.nomad.Deregister(ctx, id, false); err == nil {
			_, err = o.waitEval(ctx, evalID)
		}
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("stopping canary job %s: %w", id, err))
	}
	if err := o.writeKV(ctx, deleteOps(canaryRecordKeys(routes))); err != nil {
		errs = append(errs, fmt.Errorf("removing the canary functions' records: %w", err))
	}
	return errors.Join(errs...)
}

// promoteZero promotes st, a canary version v run as a canary job: every
// request to the canary functions, the app's job registered with v (see
// readyPromotion), the split removed once v's containers serve, v's own
// routes published (its preview as every preview), and the canary job
// stopped. What fails before the app's job runs v hands all traffic back
// to the live version (discardZero).
func (o *Orchestrator) promoteZero(ctx context.Context, rec *AppRecord, v *VersionRecord, st *CanaryState, routes []router.Route) error {
	keys, err := o.publishSplits(ctx, routes, 100, canaryFunctions(routes))
	st.Keys = union(st.Keys, keys)
	if err != nil {
		return o.discardZero(ctx, rec.JobID, st, routes, err)
	}
	app, err := storedApp(rec, v)
	if err != nil {
		return o.discardZero(ctx, rec.JobID, st, routes, err)
	}
	rendered, err := o.render(ctx, app)
	if err != nil {
		return o.discardZero(ctx, rec.JobID, st, routes, err)
	}
	current, err := o.currentJob(ctx, rec.JobID)
	if err != nil {
		return o.discardZero(ctx, rec.JobID, st, routes, err)
	}
	canaryJob, err := o.nomad.Job(ctx, st.CanaryJob)
	if err != nil {
		return o.discardZero(ctx, rec.JobID, st, routes, err)
	}
	job := rendered.Job
	readyPromotion(job, current, canaryJob, app, rendered.Routes, st.Functions)
	stamp(job, rec.Rollovers)
	recount := func(now *nomad.Job) { readyPromotion(job, now, canaryJob, app, rendered.Routes, st.Functions) }
	o.awaitVerdict(ctx, rec.JobID, current)
	if err := o.register(ctx, job, current, v.Version, needs(app), recount); err != nil {
		return o.discardZero(context.WithoutCancel(ctx), rec.JobID, st, routes, err)
	}
	o.log.Info("canary at zero promoted: the app's job runs it", "job", rec.JobID, "version", v.Version)
	// The app's job serves the version: its requests go back to the
	// function's own containers.
	var errs []error
	if err := o.removeOrRecord(ctx, rec.JobID, st.Keys); err != nil {
		errs = append(errs, err)
	}
	pairs, err := proxiedKV(o.router.KVRoot, app, rec.JobID, rendered.Routes)
	if err == nil {
		err = o.writeKV(ctx, setOps(pairs))
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("publishing the promoted version's routes: %w", err))
	}
	if err := o.stopCanaryJob(ctx, st.CanaryJob, routes); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		o.log.Warn("cleaning up after a promotion", "job", rec.JobID, "version", v.Version, "error", err)
	}
	return nil
}

// canaryJobHealthy reports whether st's canary job still runs: a canary
// function at zero has no container to check, and one the autoscaler
// scaled up is followed by the proxies (which give a failing container
// no request), so only a canary job Nomad no longer runs fails it.
func (o *Orchestrator) canaryJobHealthy(ctx context.Context, st *CanaryState) bool {
	job, err := o.nomad.Job(ctx, st.CanaryJob)
	if err != nil {
		return true // cannot tell: try again
	}
	return job != nil && !stopped(job)
}

// discardCanary takes back canary st of job jobID (see discard and
// discardZero).
func (o *Orchestrator) discardCanary(ctx context.Context, jobID string, st *CanaryState, routes []router.Route, cause error) error {
	zero, dep := canaryParts(o.router.KVRoot, st, routes)
	errs := []error{cause}
	if dep != nil {
		errs = append(errs, o.discard(ctx, jobID, dep.state.DeploymentID, dep.state.Keys, dep.routes, nil))
	}
	if zero != nil {
		errs = append(errs, o.discardZero(ctx, jobID, zero.state, zero.routes, nil))
	}
	return errors.Join(errs...)
}
