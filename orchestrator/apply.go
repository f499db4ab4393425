package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"github.com/caravanhq/caravan/api"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	nomad "github.com/hashicorp/nomad/api"
)

// EnvRollover is the environment variable that carries an app's rollover
// count to every task: bumping it replaces every container while the spec
// hash stays the same.
const EnvRollover = "CARAVAN_ROLLOVER"

// Deploy validates, renders and applies req as a new version of its app.
// An unchanged spec is a no-op that returns at once with Changed false. A
// spec with errors returns a *DiagnosticsError and changes nothing; a
// version that fails to roll out returns a *RolloutError, is recorded as
// failed, and Nomad's auto_revert keeps the previous version serving.
func (o *Orchestrator) Deploy(ctx context.Context, caller Caller, req DeployRequest) (*DeployResult, error) {
	c, err := deployChange(req)
	if err != nil {
		return nil, err
	}
	return o.apply(ctx, caller, c)
}

// deployChange parses and checks req as a deploy.
func deployChange(req DeployRequest) (change, error) {
	if len(req.Spec) > spec.MaxSize {
		return change{}, &SpecTooLargeError{Size: len(req.Spec), Limit: spec.MaxSize}
	}
	app, diags := spec.Parse(req.Spec, req.Filename)
	if diags.HasErrors() {
		return change{}, &DiagnosticsError{Diags: diags}
	}
	if err := checkStrategy(req.Strategy); err != nil {
		return change{}, err
	}
	if err := assignBundles(app, req.Bundles); err != nil {
		return change{}, err
	}
	return change{kind: KindDeploy, app: effective(app, req.Strategy, req.Serve), diags: diags, req: req}, nil
}

// AppRef is api.AppRef: the orchestrator returns wire types as they are.
type AppRef = api.AppRef

// ChangeRequest asks for a rollover or a rollback.
type ChangeRequest struct {
	AppRef
	// Version to roll back to; 0 means the version live before the current one.
	Version  int           `json:"version,omitempty"`
	Strategy string        `json:"strategy,omitempty"`
	Timeout  time.Duration `json:"timeout,omitempty"`
}

// Rollover replaces every container of an app with a fresh one of the same
// spec (for a rotated secret, say), recorded as a new version.
func (o *Orchestrator) Rollover(ctx context.Context, caller Caller, req ChangeRequest) (*DeployResult, error) {
	if err := checkStrategy(req.Strategy); err != nil {
		return nil, err
	}
	rec, err := o.resolve(ctx, caller, req.AppRef)
	if err != nil {
		return nil, err
	}
	if rec.State == StateStopped || rec.LiveVersion == 0 {
		return nil, &ConflictError{App: rec.App, Why: "it has no live version to roll over; deploy it first"}
	}
	live, err := o.version(ctx, rec, rec.LiveVersion)
	if err != nil {
		return nil, err
	}
	return o.applyStored(ctx, caller, KindRollover, rec, live, req, 0)
}

// Rollback deploys the spec of an earlier version as a new version. It
// works for any version of the app's history, not only the few Nomad keeps.
func (o *Orchestrator) Rollback(ctx context.Context, caller Caller, req ChangeRequest) (*DeployResult, error) {
	if err := checkStrategy(req.Strategy); err != nil {
		return nil, err
	}
	rec, err := o.resolve(ctx, caller, req.AppRef)
	if err != nil {
		return nil, err
	}
	versions, err := o.store.Versions(ctx, rec.JobID, rec.Generation)
	if err != nil {
		return nil, err
	}
	v, err := rollbackTarget(rec, versions, req.Version)
	if err != nil {
		return nil, err
	}
	return o.applyStored(ctx, caller, KindRollback, rec, v, req, v.Version)
}

// applyStored deploys stored version v of rec's app again, as kind.
func (o *Orchestrator) applyStored(ctx context.Context, caller Caller, kind VersionKind, rec *AppRecord, v *VersionRecord, req ChangeRequest, rollbackOf int) (*DeployResult, error) {
	parsed, diags := spec.Parse([]byte(v.Spec), v.Filename)
	if diags.HasErrors() {
		return nil, &DiagnosticsError{Diags: diags}
	}
	if err := assignBundles(parsed, v.Bundles); err != nil {
		return nil, err
	}
	// The version's code must still be there: a rollback whose bundle was
	// collected says so before anything changes.
	if err := o.checkBundles(ctx, parsed, v.Version); err != nil {
		return nil, err
	}
	dr := DeployRequest{Spec: []byte(v.Spec), Filename: v.Filename, Timeout: req.Timeout, Strategy: req.Strategy,
		Tag: v.Tag, GitCommit: v.GitCommit, GitDirty: v.GitDirty, Serve: rec.Serve, Bundles: v.Bundles}
	return o.apply(ctx, caller, change{kind: kind, app: effective(parsed, req.Strategy, rec.Serve), diags: diags, req: dr, rollbackOf: rollbackOf})
}

func checkStrategy(s string) error {
	switch s {
	case "", spec.StrategyRolling, spec.StrategyRecreate, spec.StrategyCanary, spec.StrategyBlueGreen:
		return nil
	}
	return &BadRequestError{Why: fmt.Sprintf("strategy %q: use %q, %q, %q or %q", s, spec.StrategyRolling,
		spec.StrategyRecreate, spec.StrategyCanary, spec.StrategyBlueGreen)}
}

// change is one deploy, rollover or rollback on its way to Nomad.
type change struct {
	kind VersionKind
	// app is the effective app (see effective).
	app        *spec.App
	diags      hcl.Diagnostics
	req        DeployRequest
	rollbackOf int
}

// apply takes a change through the one path every version takes: lock the
// app, decide what the change does (decide), claim its hostnames, record
// the next version as pending (check-and-set, so no number is reused or
// skipped), roll it out (rollout), and record how it ended.
func (o *Orchestrator) apply(ctx context.Context, caller Caller, c change) (*DeployResult, error) {
	began := time.Now()
	app := c.app
	rendered, err := o.prepare(ctx, caller, c)
	if err != nil {
		return nil, err
	}
	if c.kind == KindDeploy {
		if err := o.checkBundles(ctx, app, 0); err != nil {
			return nil, err
		}
	}
	id := *rendered.Job.ID
	log := o.log.With("job", id, "kind", c.kind)

	// held ends only when the lock does (it is not the client's): from the
	// first write on, a client that goes away (Ctrl-C) neither aborts the
	// rollout nor leaves it unrecorded; a lost lock stops it.
	held, unlock, err := o.store.Lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := o.settleLeftover(held, id); err != nil {
		return nil, err
	}
	// A split left behind would outrank the new version's routers.
	if err := o.clearStaleSplits(held, id); err != nil {
		return nil, err
	}
	rec, index, current, err := o.load(held, app, id)
	if err != nil {
		return nil, err
	}
	if rec.Canary != nil {
		return nil, &CanaryPendingError{App: app.Name, Version: rec.Canary.Version}
	}
	old, err := o.runningHashes(held, current)
	if err != nil {
		return nil, err
	}
	live, err := o.liveBundles(held, rec)
	if err != nil {
		return nil, err
	}
	p := decide(c, caller, rendered, rec, current, old, time.Now().UTC())
	markCode(p.Functions, codeChanged(live, bundlesOf(app), rec.LiveVersion > 0))
	if p.Version != nil {
		p.Version.CodeChanged = codeChanged(live, bundlesOf(app), rec.LiveVersion > 0)
	}
	res := &DeployResult{Workspace: app.Workspace, App: app.Name, JobID: id, SpecHash: rendered.SpecHash,
		Kind: c.kind, Warnings: toWire(c.diags), Functions: p.Functions}
	if p.Noop {
		log.Info("no changes", "version", rec.LiveVersion)
		res.Version, res.Duration = rec.LiveVersion, time.Since(began)
		return res, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err // the client left before anything changed
	}
	// A custom domain's first route waits for its workspace's proof.
	if err := o.proveDomains(held, caller, app.Workspace, newCustomDomains(app, p.Claim)); err != nil {
		return nil, err
	}
	// The version, its number and its claims are written at once, or
	// nothing is.
	if err := o.store.Commit(held, Write{Record: p.Record, Index: index, Versions: []*VersionRecord{p.Version}, Claim: p.Claim}); err != nil {
		return nil, visibleTo(err, caller)
	}
	rec, vrec := p.Record, p.Version
	res.Version, res.Changed = vrec.Version, true

	stamp(rendered.Job, rec.Rollovers)
	timeout := c.req.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	rctx, cancel := context.WithTimeout(held, timeout)
	defer cancel()
	// The rollout waits its turn to reach Nomad (admit.go); the wait
	// counts toward the deploy's timeout.
	var canary *CanaryState
	leave, rollErr := o.admit(rctx, log, rec, vrec, rolloutStarts(p.Functions), &res.Queued)
	if rollErr == nil {
		log.Info("rolling out", "version", vrec.Version, "spec_hash", rendered.SpecHash, "caller", caller.Name)
		canary, rollErr = o.rollout(rctx, release{app: app, rendered: rendered, rec: rec, current: current, version: vrec.Version})
		leave()
	}
	if errors.Is(context.Cause(held), ErrLockLost) {
		// Another server may hold the lock now: write nothing more. The
		// next holder settles the version from what Nomad did.
		log.Warn("lost the lock during the rollout", "version", vrec.Version)
		return nil, ErrLockLost
	}

	// The outcome is recorded even when the rollout ran out of time.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(held), 30*time.Second)
	defer fcancel()
	if canary != nil {
		if err := o.recordCanary(fctx, rec.JobID, vrec, canary); err != nil {
			// Unrecorded, nobody would settle it: take it back.
			routes, _ := o.storedSplitRoutes(rec, vrec, canary)
			err = o.discardCanary(fctx, rec.JobID, canary, routes, err)
			err = o.restoreAfter(fctx, release{app: app, rendered: rendered, rec: rec, current: current, version: vrec.Version}, err)
			if ferr := o.finish(fctx, rec.JobID, vrec, err); ferr != nil {
				log.Error("recording the outcome", "version", vrec.Version, "error", ferr)
			}
			return nil, err
		}
		log.Info("canary live", "version", vrec.Version, "traffic", canary.Traffic)
		res.Canary, res.Duration = canary, time.Since(began)
		return res, nil
	}
	if err := o.finish(fctx, rec.JobID, vrec, rollErr); err != nil {
		log.Error("recording the outcome", "version", vrec.Version, "error", err)
	}
	if rollErr != nil {
		log.Warn("rollout failed", "version", vrec.Version, "error", rollErr)
		return nil, rollErr
	}
	// Counts carried over (see carryCounts): a function at zero had
	// nothing to split.
	res.Warnings = append(res.Warnings, toWire(idleSplits(app, rendered.Job, current, rendered.Routes))...)
	res.Duration = time.Since(began)
	log.Info("live", "version", vrec.Version, "duration", res.Duration)
	return res, nil
}

// admit waits until the rollout of version v of rec's app, starting n
// containers, may go to Nomad (see rolloutQueue), and sets *waited to how
// long it waited. A wait is recorded in v's history as it begins and
// ends; one that outlasts ctx fails v, of which nothing reached Nomad.
// leave gives the rollout's place back.
func (o *Orchestrator) admit(ctx context.Context, log hclog.Logger, rec *AppRecord, v *VersionRecord, n int, waited *time.Duration) (leave func(), err error) {
	note := func(what string) {
		v.Events = append(v.Events, Event{At: time.Now().UTC(), What: what})
		if err := o.store.PutVersion(ctx, rec.JobID, rec.Generation, v); err != nil {
			log.Warn("recording the rollout queue in the history", "version", v.Version, "error", err)
		}
	}
	leave, d, err := o.rollouts.enter(ctx, n, func(w queueWait) {
		log.Info("queued", "version", v.Version, "containers", n, "starting", w.Starting, "limit", w.Limit, "ahead", w.Ahead)
		note(w.String())
	})
	*waited = d
	if err != nil {
		return nil, &RolloutError{Version: v.Version, Cause: fmt.Sprintf(
			"it waited %s for its turn to reach Nomad (%v): nothing of it was registered", d.Round(100*time.Millisecond), err)}
	}
	if d > 0 {
		log.Info("admitted", "version", v.Version, "waited", d)
		note(fmt.Sprintf("admitted to Nomad after %s in the queue", d.Round(100*time.Millisecond)))
	}
	return leave, nil
}

// release is a recorded version on its way through Nomad and the proxy.
type release struct {
	app      *spec.App
	rendered *jobs.Rendered
	// rec is the app's record; current the job Nomad ran before (nil:
	// none).
	rec     *AppRecord
	current *nomad.Job
	version int
}

// rollout carries a recorded version through its stages: Nomad's plan
// (a version no node can take is refused before anything changes in
// Nomad), registration and Nomad's rollout (for a new app, until it serves:
// see registerNew), canaries (which return their
// state, to be recorded: they wait for a promotion), the probe through the
// proxy, and the scheduled and callable functions, which follow the live
// version. Each stage's failure ends it.
func (o *Orchestrator) rollout(ctx context.Context, r release) (*CanaryState, error) {
	job, need := r.rendered.Job, needs(r.app)
	carryCounts(job, r.current, r.app, r.rendered.Routes)
	zero := zeroCanaryFunctions(r.app, job, r.current, r.rendered.Routes)
	orig := r.rendered
	var zeroGroups []*nomad.TaskGroup // the version's own groups of zero
	if zero != nil {
		// A canary of functions at zero: their previews name the canary
		// functions, which run as a job of their own; the app's job
		// keeps the live version.
		rendered := *r.rendered
		rendered.Routes = withFunctionPreviews(r.rendered.Routes, zero)
		r.rendered = &rendered
		zeroGroups = groupsNamed(job, zero)
	}
	if err := o.publishProxied(ctx, r); err != nil {
		return nil, err
	}
	if zero != nil && !keepLiveGroups(job, r.current, zero) {
		return o.zeroCanary(ctx, r, zero)
	}
	if warm := holdWarm(r.app, job, r.current); warm != nil {
		o.log.Info("functions at zero keep one container while Nomad's canaries are undecided (Nomad scales no group of a job during its deployment)",
			"job", *job.ID, "functions", warm)
	}
	if err := o.placeable(ctx, job, r.version, need); err != nil {
		return nil, err
	}
	if r.current == nil {
		if err := o.registerNew(ctx, r.rendered, r.version, need); err != nil {
			return nil, err
		}
		return nil, o.syncFunctions(ctx, r)
	}
	o.awaitVerdict(ctx, *job.ID, r.current)
	recount := func(now *nomad.Job) {
		carryCounts(job, now, r.app, r.rendered.Routes)
		holdWarm(r.app, job, now)
	}
	if err := o.register(ctx, job, r.current, r.version, need, recount); err != nil {
		return nil, err
	}
	dep, err := o.awaitingDeployment(ctx, *job.ID, r.version)
	if err != nil {
		return nil, err
	}
	if dep != nil {
		// Canaries (or a blue-green set) are up beside the live version;
		// on failure they are discarded and it serves on.
		st, err := o.startCanary(ctx, r.app, r.rendered, r.version, dep)
		if err != nil {
			// Discarded: the live containers serve, and their routes must
			// be the live version's again.
			return nil, o.restoreAfter(context.WithoutCancel(ctx), r, err)
		}
		if st != nil && zero != nil {
			// A mixed canary: its functions at zero run as a canary
			// job beside Nomad's canaries of the others.
			return o.withZeroCanary(ctx, r, st, zero)
		}
		if st != nil {
			return st, nil
		}
		// Blue-green: switched and promoted; it goes on as any version.
	}
	if zero != nil {
		// Nomad updated the version's other functions in place, with no
		// canary of them: they are live already, so the version goes
		// live, its functions at zero too (with idleSplits' warning).
		r.rendered = orig
		if err := o.registerGroups(ctx, r, zeroGroups, need); err != nil {
			return nil, err
		}
	}
	if err := o.probe(ctx, r.rendered, r.version, true); err != nil {
		// Nomad took the version but it does not answer through the
		// proxy: go back to what served before, so records and reality
		// agree that the previous version is live.
		return nil, o.revertTo(context.WithoutCancel(ctx), r.current, r.rec.LiveVersion, err)
	}
	return nil, o.syncFunctions(ctx, r)
}

// registerGroups registers r's job again with groups in place of its
// groups of the same names, after publishing r's proxied routes, and
// follows Nomad's rollout of it.
func (o *Orchestrator) registerGroups(ctx context.Context, r release, groups []*nomad.TaskGroup, need map[string]string) error {
	job := r.rendered.Job
	putGroups(job, groups)
	if err := o.publishProxied(ctx, r); err != nil {
		return err
	}
	now, err := o.currentJob(ctx, *job.ID)
	if err != nil {
		return err
	}
	o.awaitVerdict(ctx, *job.ID, now)
	recount := func(now *nomad.Job) { carryCounts(job, now, r.app, r.rendered.Routes) }
	return o.register(ctx, job, now, r.version, need, recount)
}

// zeroCanary starts the canary job of r's functions at zero (see
// startZeroCanary) as r's canary.
func (o *Orchestrator) zeroCanary(ctx context.Context, r release, zero []string) (*CanaryState, error) {
	st, err := o.startZeroCanary(ctx, r, zero)
	if err != nil {
		return nil, o.restoreAfter(context.WithoutCancel(ctx), r, err)
	}
	return st, nil
}

// withZeroCanary adds the canary job of zero, r's changed functions at
// zero, to st, Nomad's canaries of r's other changed functions; should the
// canary job fail, Nomad's canaries are discarded too, and the live
// version serves on.
func (o *Orchestrator) withZeroCanary(ctx context.Context, r release, st *CanaryState, zero []string) (*CanaryState, error) {
	zst, err := o.startZeroCanary(ctx, r, zero)
	if err != nil {
		err = o.discard(context.WithoutCancel(ctx), *r.rendered.Job.ID, st.DeploymentID, st.Keys, zeroRoutes(r.rendered.Routes, st.Functions), err)
		return nil, o.restoreAfter(context.WithoutCancel(ctx), r, err)
	}
	o.log.Info("mixed canary: Nomad's canaries and a canary job", "job", *r.rendered.Job.ID, "nomad", st.Functions, "canary_job", zst.CanaryJob, "at_zero", zero)
	return withCanaryJob(st, zst), nil
}

// restoreAfter puts the live version's proxied routes back in place of
// those r published (see restoreLiveProxied) after r's canaries were
// discarded for cause, and returns cause (joined with what went wrong
// restoring them).
func (o *Orchestrator) restoreAfter(ctx context.Context, r release, cause error) error {
	if err := o.restoreLiveProxied(ctx, r.rec, r.rendered.Routes); err != nil {
		o.log.Warn("restoring the live version's proxied routes", "job", *r.rendered.Job.ID, "error", err)
		return errors.Join(cause, err)
	}
	return cause
}

// syncFunctions brings r's scheduled and callable functions to its
// version.
func (o *Orchestrator) syncFunctions(ctx context.Context, r release) error {
	id := *r.rendered.Job.ID
	if err := o.syncPeriodic(ctx, id, r.rendered.Periodic, r.version, r.rec.Rollovers); err != nil {
		return err
	}
	return o.syncCallable(ctx, id, r.rendered.Callable, r.version, r.rec.Rollovers)
}

// prepare checks the caller may change c's app, that its custom domains
// are not caravan's own, and that its workspace's policy allows it (a
// *PolicyError), and renders it.
func (o *Orchestrator) prepare(ctx context.Context, caller Caller, c change) (*jobs.Rendered, error) {
	if caller.Workspace != "*" && caller.Workspace != c.app.Workspace {
		return nil, &ForbiddenError{Token: caller.Name, Workspace: c.app.Workspace}
	}
	// What is wrong with the spec itself first, then what the policy
	// refuses of a valid one.
	if diags := checkCustomDomains(c.app, o.router.Domain); diags.HasErrors() {
		return nil, &DiagnosticsError{Diags: diags}
	}
	if err := o.allowed(c.app); err != nil {
		return nil, err
	}
	// Only then is Nomad asked for the workspace's namespace (or to
	// create it): before a version is numbered or a hostname claimed.
	if err := o.nomad.Namespace(ctx, c.app.Workspace); err != nil {
		return nil, err
	}
	return o.render(ctx, c.app)
}

// liveBundles are the bundles of rec's live version (nil: none).
func (o *Orchestrator) liveBundles(ctx context.Context, rec *AppRecord) (map[string]string, error) {
	if rec.LiveVersion == 0 {
		return nil, nil
	}
	v, err := o.version(ctx, rec, rec.LiveVersion)
	if err != nil {
		return nil, err
	}
	return v.Bundles, nil
}

// releaseUnserved gives up the hostnames of jobID's app that its live
// version (if any) does not serve: those of a version that never went
// live.
func (o *Orchestrator) releaseUnserved(ctx context.Context, jobID string) error {
	rec, index, err := o.store.App(ctx, jobID)
	if err != nil || rec == nil {
		return errors.Join(err, errors.New("app record vanished"))
	}
	var live *VersionRecord
	if rec.LiveVersion > 0 {
		if live, err = o.version(ctx, rec, rec.LiveVersion); err != nil {
			return err
		}
	}
	keep, release := served(rec.Hosts, live)
	if len(release) == 0 {
		return nil
	}
	next := *rec
	next.Hosts = keep
	return o.store.Commit(ctx, Write{Record: &next, Index: index, Release: release})
}

// awaitingDeployment returns job id's latest deployment if it waits for
// caravan to promote its canaries (nil otherwise).
func (o *Orchestrator) awaitingDeployment(ctx context.Context, id string, version int) (*nomad.Deployment, error) {
	dep, err := o.nomad.LatestDeployment(ctx, id)
	if err != nil {
		return nil, &RolloutError{Version: version, Cause: fmt.Sprintf("reading the deployment from Nomad: %v", err)}
	}
	if dep != nil && dep.Status == nomad.DeploymentStatusRunning && awaitingPromotion(dep) {
		return dep, nil
	}
	return nil, nil
}

// recordCanary records version v as a canary of the app.
func (o *Orchestrator) recordCanary(ctx context.Context, jobID string, v *VersionRecord, st *CanaryState) error {
	rec, index, err := o.store.App(ctx, jobID)
	if err != nil || rec == nil {
		return errors.Join(err, errors.New("app record vanished"))
	}
	if err := transition(v, StatusCanary); err != nil {
		return err
	}
	what := fmt.Sprintf("canary: %d container(s) per function, %d%% of traffic", st.Canaries, st.Traffic)
	if !st.PromoteAt.IsZero() {
		what += ", promoted automatically at " + st.PromoteAt.Format(time.RFC3339)
	}
	v.Events = append(v.Events, Event{At: st.Since, What: what, Who: v.Who})
	if err := o.store.PutVersion(ctx, jobID, rec.Generation, v); err != nil {
		return err
	}
	rec.Canary, rec.UpdatedAt = st, st.Since
	return o.store.PutApp(ctx, rec, index)
}

func union(a, b []string) []string {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// StableProbe is how long an updated route must answer without a break
// before the update counts as live, when caravan cannot see the proxy
// (no Proxy): longer than the proxy takes to drop the previous version's
// containers.
const StableProbe = 1500 * time.Millisecond

// probe waits until every route of rendered answers through the proxy.
// After an update an answer must come from the new version: with a Proxy,
// caravan first watches Traefik until each route's service lists only the
// containers of the version's Nomad deployment (awaitNewServers), and then
// one 2xx per route suffices; without one, each route must answer for
// StableProbe without a break (routes are probed at once, so the window is
// waited out once).
func (o *Orchestrator) probe(ctx context.Context, rendered *jobs.Rendered, version int, update bool) error {
	stable := time.Duration(0)
	switch {
	case !update || o.prober == nil:
	case o.proxy == nil:
		stable = StableProbe
	default:
		if err := o.awaitNewServers(ctx, *rendered.Job.ID, rendered.Routes, version); err != nil {
			return err
		}
	}
	return o.probeRoutes(ctx, probeable(rendered), version, stable)
}

// awaitNewServers waits until the previous version's containers have left
// Consul and Traefik's service of every route (see waitOldGone): the
// containers of the job's latest deployment, if it is the job's current
// version's, are the new version's. Without such a deployment Nomad
// replaced no container (an in-place change), and nothing is waited for.
func (o *Orchestrator) awaitNewServers(ctx context.Context, jobID string, routes []router.Route, version int) error {
	job, err := o.nomad.Job(ctx, jobID)
	if err == nil && job == nil {
		err = errors.New("it vanished")
	}
	if err != nil {
		return &RolloutError{Version: version, Cause: fmt.Sprintf("reading job %s from Nomad: %v", jobID, err)}
	}
	dep, err := o.nomad.LatestDeployment(ctx, jobID)
	if err != nil {
		return &RolloutError{Version: version, Cause: fmt.Sprintf("reading the deployment from Nomad: %v", err)}
	}
	if dep == nil || dep.JobVersion != *job.Version {
		return nil
	}
	if err := o.waitOldGone(ctx, dep.ID, routes); err != nil {
		return &RolloutError{Version: version, Cause: fmt.Sprintf("healthy in Nomad, but the previous containers did not leave the proxy: %v", err)}
	}
	return nil
}

// probeRoutes waits until every route answers through the proxy for
// stable without a break.
func (o *Orchestrator) probeRoutes(ctx context.Context, routes []router.Route, version int, stable time.Duration) error {
	if o.prober == nil {
		return nil
	}
	errs := make([]error, len(routes))
	var wg sync.WaitGroup
	for i, r := range routes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := o.prober.Probe(ctx, r, stable); err != nil {
				errs[i] = &RolloutError{Function: r.Function, Version: version,
					Cause: fmt.Sprintf("healthy in Nomad but %s does not answer through the proxy: %v", r.URL+r.HealthPath, err)}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// load reads what caravan and Nomad know of job id: the app record (a new
// one, starting a new history, when there is none or the app was stopped)
// with its index, and the current job, which must be this app's.
func (o *Orchestrator) load(ctx context.Context, app *spec.App, id string) (*AppRecord, uint64, *nomad.Job, error) {
	rec, index, err := o.store.App(ctx, id)
	if err != nil {
		return nil, 0, nil, err
	}
	current, err := o.currentJob(ctx, id)
	if err != nil {
		return nil, 0, nil, err
	}
	if err := owned(current, app); err != nil {
		return nil, 0, nil, err
	}
	if rec == nil || rec.State == StateStopped {
		gen := 1
		if rec != nil {
			gen = rec.Generation + 1
		}
		rec = &AppRecord{Workspace: app.Workspace, App: app.Name, Environment: app.Environment, JobID: id,
			Serve: app.Serve, Generation: gen, State: StateDeployed}
	}
	return rec, index, current, nil
}

// runningRollovers is the rollover count job runs with (CARAVAN_ROLLOVER).
func runningRollovers(job *nomad.Job) int {
	for _, tg := range job.TaskGroups {
		for _, t := range tg.Tasks {
			n, _ := strconv.Atoi(t.Env[EnvRollover])
			return n
		}
	}
	return 0
}

// stamp gives every task of job the app's rollover count as
// CARAVAN_ROLLOVER, so a rollover replaces every container. Nothing else of
// a version goes on the app's job: Nomad counts job meta as every task's,
// and a version number there would replace every container on every deploy.
func stamp(job *nomad.Job, rollovers int) {
	if rollovers > 0 {
		for _, tg := range job.TaskGroups {
			for _, t := range tg.Tasks {
				if t.Env == nil {
					t.Env = map[string]string{}
				}
				t.Env[EnvRollover] = strconv.Itoa(rollovers)
			}
		}
	}
}

// placeable asks Nomad's scheduler, without changing anything, whether job
// can be placed; a *RolloutError names the first function that cannot.
func (o *Orchestrator) placeable(ctx context.Context, job *nomad.Job, version int, needs map[string]string) error {
	plan, err := o.nomad.Plan(ctx, job, false)
	if err != nil {
		return &RolloutError{Version: version, Cause: fmt.Sprintf("Nomad could not plan the job: %v", err)}
	}
	if g, cause := firstUnplaceable(plan.FailedTGAllocs, needs); g != "" {
		return &RolloutError{Function: g, Version: version, Cause: cause}
	}
	return nil
}

// firstUnplaceable names the first group (by name) Nomad cannot place and
// says why.
func firstUnplaceable(failed map[string]*nomad.AllocationMetric, needs map[string]string) (group, cause string) {
	if len(failed) == 0 {
		return "", ""
	}
	groups := slices.Sorted(maps.Keys(failed))
	g := groups[0]
	cause = "cannot be placed: "
	if n := needs[g]; n != "" {
		cause += "no node has " + n + "; "
	}
	return g, cause + describePlacement(failed[g])
}

// revertTo registers the Nomad job version prev again after cause, and
// returns cause saying so.
func (o *Orchestrator) revertTo(ctx context.Context, prev *nomad.Job, prevVersion int, cause error) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var re *RolloutError
	if !errors.As(cause, &re) {
		return cause
	}
	evalID, err := o.nomad.Revert(ctx, *prev.ID, *prev.Version)
	if err != nil {
		re.Cause += fmt.Sprintf("; reverting to version %d failed too: %v", prevVersion, err)
		return re
	}
	if _, err := o.waitEval(ctx, evalID); err == nil {
		// Going back from promoted canaries (blue-green) makes the previous
		// version's containers canaries that wait for a promotion.
		o.promoteRevert(ctx, *prev.ID)
	}
	re.Cause += fmt.Sprintf("; reverted to version %d", prevVersion)
	return re
}

// ErrJobModified: Nomad refused a registration because the job changed
// since caravan read it (the check-and-set failed).
var ErrJobModified = errors.New("the job changed since caravan read it")

// jobModified reports Nomad's refusal of a check-and-set registration.
// Nomad answers it as a plain HTTP error whose text is all that tells it
// apart, so this one place reads the text.
func jobModified(err error) bool {
	return strings.Contains(err.Error(), "conflicting job modify index")
}

// registerAttempts bounds the registrations of one deploy that the
// autoscaler's scaling beat (see register).
const registerAttempts = 5

// register submits job with check-and-set against the job caravan read and
// watches its rollout. A registration refused because the job changed
// since is tried again, with recount applied to the job as it is now, when
// what changed is a count alone (the autoscaler scaled the job; the deploy
// holds the app's lock, so nothing else registers it): the job's meta,
// which names its caravan version, is as caravan read it.
func (o *Orchestrator) register(ctx context.Context, job *nomad.Job, current *nomad.Job, version int, needs map[string]string, recount func(now *nomad.Job)) error {
	var index uint64
	if current != nil {
		index = *current.JobModifyIndex
	}
	evalID, err := o.nomad.Register(ctx, job, index)
	for attempt := 1; errors.Is(err, ErrJobModified) && current != nil && recount != nil && attempt < registerAttempts; attempt++ {
		now, rerr := o.currentJob(ctx, *job.ID)
		if rerr != nil || now == nil || now.JobModifyIndex == nil || !maps.Equal(now.Meta, current.Meta) {
			break
		}
		o.log.Debug("the job was scaled since it was read; registering again", "job", *job.ID, "attempt", attempt+1)
		recount(now)
		evalID, err = o.nomad.Register(ctx, job, *now.JobModifyIndex)
	}
	if err != nil {
		return &RolloutError{Version: version, Cause: fmt.Sprintf("Nomad refused the job: %v", err)}
	}
	return o.watchRollout(ctx, job, evalID, version, needs)
}

// needs says, per function, what it asks of a node beyond CPU and memory,
// for placement failures: "1 nvidia/gpu of model H100".
func needs(app *spec.App) map[string]string {
	out := map[string]string{}
	for _, fn := range app.Functions {
		if fn.Resources == nil || fn.Resources.GPURequest == nil {
			continue
		}
		g := fn.Resources.GPURequest
		model := "any model"
		if len(g.Models) > 0 {
			model = "model " + strings.Join(g.Models, " or ")
		}
		out[fn.Name] = fmt.Sprintf("%d %s of %s", g.Count, jobs.GPUDevice, model)
	}
	return out
}

// finish records how a version's rollout ended: live (and the previous
// live version superseded) or failed with its error (see settle).
func (o *Orchestrator) finish(ctx context.Context, jobID string, v *VersionRecord, rollErr error) error {
	rec, index, err := o.store.App(ctx, jobID)
	if err != nil || rec == nil {
		return errors.Join(err, errors.New("app record vanished"))
	}
	var prev *VersionRecord
	if rec.LiveVersion > 0 && rec.LiveVersion != v.Version {
		if prev, err = o.version(ctx, rec, rec.LiveVersion); err != nil {
			return err
		}
	}
	out, err := settle(rec, v, prev, rollErr, time.Now().UTC())
	if err != nil {
		return err
	}
	if err := o.store.Commit(ctx, Write{Record: out.Record, Index: index, Versions: out.Versions, Release: out.Release}); err != nil {
		return err
	}
	*v = *out.Versions[len(out.Versions)-1]
	return nil
}

// Stop purges an app's job, so its services and routes disappear, and
// records it as stopped. Deploying the same name later starts a new history.
func (o *Orchestrator) Stop(ctx context.Context, caller Caller, ref AppRef) (*AppRecord, error) {
	rec, err := o.resolve(ctx, caller, ref)
	if err != nil {
		return nil, err
	}
	if rec.State == StateStopped {
		return rec, nil
	}
	ctx, unlock, err := o.store.Lock(ctx, rec.JobID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, index, err := o.store.App(ctx, rec.JobID)
	if err != nil {
		return nil, err
	}
	job, err := o.currentJob(ctx, rec.JobID)
	if err != nil {
		return nil, err
	}
	// What to see gone at the end; a version that cannot be read does not
	// keep the app from stopping.
	routes, err := o.servedRoutes(ctx, rec)
	if err != nil {
		o.log.Warn("reading the routes to see gone after the stop", "job", rec.JobID, "error", err)
	}
	if st := rec.Canary; st != nil {
		if err := o.removeSplits(ctx, st.Keys); err != nil {
			return nil, err
		}
		if v, err := o.version(ctx, rec, st.Version); err == nil && st.CanaryJob != "" {
			routes, _ := o.storedSplitRoutes(rec, v, st)
			zero, _ := canaryParts(o.router.KVRoot, st, routes)
			if err := o.stopCanaryJob(ctx, st.CanaryJob, zero.routes); err != nil {
				return nil, err
			}
		}
		if v, err := o.version(ctx, rec, st.Version); err == nil && transition(v, StatusAborted) == nil {
			v.FinishedAt = time.Now().UTC()
			v.Events = append(v.Events, Event{At: v.FinishedAt, What: "aborted: the app was stopped", Who: caller.Name, WhoID: caller.TokenID})
			if err := o.store.PutVersion(ctx, rec.JobID, rec.Generation, v); err != nil {
				return nil, err
			}
		}
		rec.Canary = nil
	}
	if err := o.syncPeriodic(ctx, rec.JobID, nil, 0, 0); err != nil {
		return nil, err
	}
	if err := o.unpublishProxied(ctx, routes); err != nil {
		return nil, fmt.Errorf("removing the routes of autoscaled functions: %w", err)
	}
	if err := o.syncCallable(ctx, rec.JobID, nil, 0, 0); err != nil {
		return nil, err
	}
	if job != nil {
		if job.Meta[jobs.MetaApp] != rec.App || job.Meta[jobs.MetaWorkspace] != rec.Workspace {
			return nil, &OwnershipError{JobID: rec.JobID, Why: "its meta does not name this app"}
		}
		// Stop first, purge once the routes are gone: a purge collects
		// the allocations at once, and one collected before its client
		// deregistered its services leaves them in Consul, still routed.
		evalID, err := o.nomad.Deregister(ctx, rec.JobID, false)
		if err != nil {
			return nil, fmt.Errorf("stopping job %s: %w", rec.JobID, err)
		}
		if _, err := o.waitEval(ctx, evalID); err != nil {
			return nil, err
		}
	}
	release := rec.Hosts
	rec.Hosts = nil
	rec.State, rec.LiveVersion, rec.StoppedBy, rec.StoppedByID, rec.UpdatedAt = StateStopped, 0, caller.Name, caller.TokenID, time.Now().UTC()
	if err := o.store.Commit(ctx, Write{Record: rec, Index: index, Release: release}); err != nil {
		return nil, err
	}
	o.log.Info("stopped", "job", rec.JobID, "caller", caller.Name)
	// Still under the lock, so no deploy of the name brings them back meanwhile.
	goneErr := o.awaitGone(ctx, rec.App, routes)
	if job != nil {
		evalID, err := o.nomad.Deregister(ctx, rec.JobID, true)
		if err == nil {
			_, err = o.waitEval(ctx, evalID)
		}
		if err != nil {
			return nil, errors.Join(goneErr, fmt.Errorf("purging job %s: %w", rec.JobID, err))
		}
	}
	if goneErr != nil {
		return nil, goneErr
	}
	return rec, nil
}

// GoneDeadline bounds how long Stop waits for the proxy to answer 404 for
// every URL of the app.
var GoneDeadline = 30 * time.Second

// servedRoutes are the routes rec's app may serve: its live version's and
// its canary's, with their previews.
func (o *Orchestrator) servedRoutes(ctx context.Context, rec *AppRecord) ([]router.Route, error) {
	var versions []int
	if rec.LiveVersion > 0 {
		versions = append(versions, rec.LiveVersion)
	}
	if rec.Canary != nil {
		versions = append(versions, rec.Canary.Version)
	}
	var out []router.Route
	seen := map[string]bool{}
	for _, n := range versions {
		v, err := o.version(ctx, rec, n)
		if err != nil {
			return nil, err
		}
		routes, err := o.storedRoutes(rec, v, func(router.Route) bool { return true })
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			for _, r := range []*router.Route{&r, r.Preview} {
				if r != nil && !seen[r.URL] {
					seen[r.URL] = true
					out = append(out, *r)
				}
			}
		}
	}
	return out, nil
}

// awaitGone waits until the proxy answers 404 for every route of app (see
// Prober.Gone), for at most GoneDeadline; an *UnavailableError names the
// URLs that still answer.
func (o *Orchestrator) awaitGone(ctx context.Context, app string, routes []router.Route) error {
	if o.prober == nil || len(routes) == 0 {
		return nil
	}
	gctx, cancel := context.WithTimeout(ctx, GoneDeadline)
	defer cancel()
	left := make([]bool, len(routes))
	var wg sync.WaitGroup
	for i, r := range routes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			left[i] = o.prober.Gone(gctx, r) != nil
		}()
	}
	wg.Wait()
	var urls []string
	for i, r := range routes {
		if left[i] {
			urls = append(urls, r.URL)
		}
	}
	if len(urls) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return &UnavailableError{Why: fmt.Sprintf("app %s is stopped (its containers, services and records are gone), but after %s the proxy still answers %s: Traefik has not seen its routes leave Consul",
		app, GoneDeadline, strings.Join(urls, ", "))}
}

// URL returns the URL of a web function of an app's live version.
func (o *Orchestrator) URL(ctx context.Context, caller Caller, ref AppRef, function string) (string, error) {
	rec, err := o.resolve(ctx, caller, ref)
	if err != nil {
		return "", err
	}
	n := rec.LiveVersion
	if n == 0 {
		return "", &NotFoundError{App: rec.App, Why: "it has no live version"}
	}
	v, err := o.version(ctx, rec, n)
	if err != nil {
		return "", err
	}
	routes, err := o.storedRoutes(rec, v, func(router.Route) bool { return true })
	if err != nil {
		return "", err
	}
	var names []string
	for _, r := range routes {
		if r.Function == function {
			return r.URL, nil
		}
		names = append(names, r.Function)
	}
	return "", &NotFoundError{App: rec.App, Why: fmt.Sprintf("it has no web function %q (web functions: %s)", function, strings.Join(names, ", "))}
}

// History is api.History: the orchestrator returns wire types as they are.
type History = api.History

// History returns an app's versions, oldest first, without their specs.
func (o *Orchestrator) History(ctx context.Context, caller Caller, ref AppRef) (*History, error) {
	rec, err := o.resolve(ctx, caller, ref)
	if err != nil {
		return nil, err
	}
	versions, err := o.store.Versions(ctx, rec.JobID, rec.Generation)
	if err != nil {
		return nil, err
	}
	for _, v := range versions {
		v.Spec = ""
	}
	return &History{App: rec, Versions: versions}, nil
}

// version reads version n of rec's app: one key.
func (o *Orchestrator) version(ctx context.Context, rec *AppRecord, n int) (*VersionRecord, error) {
	v, err := o.store.Version(ctx, rec.JobID, rec.Generation, n)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, &NotFoundError{App: rec.App, Why: fmt.Sprintf("it has no version %d", n)}
	}
	return v, nil
}

// resolve finds the one app ref names among those caller may see.
func (o *Orchestrator) resolve(ctx context.Context, caller Caller, ref AppRef) (*AppRecord, error) {
	if ref.Workspace != "" {
		id := jobs.JobID(ref.Workspace, ref.Environment, ref.App)
		if ref.Serve {
			id += jobs.ServeSuffix
		}
		rec, _, err := o.store.App(ctx, id)
		if err != nil {
			return nil, err
		}
		if rec == nil || (caller.Workspace != "*" && caller.Workspace != rec.Workspace) {
			return nil, &NotFoundError{App: ref.App, Why: "no such app in workspace " + ref.Workspace}
		}
		return rec, nil
	}
	all, err := o.store.Apps(ctx)
	if err != nil {
		return nil, err
	}
	var found []*AppRecord
	for _, r := range all {
		if r.App == ref.App && r.Serve == ref.Serve && (ref.Environment == "" || r.Environment == ref.Environment) &&
			(caller.Workspace == "*" || caller.Workspace == r.Workspace) {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 0:
		return nil, &NotFoundError{App: ref.App}
	case 1:
		return found[0], nil
	}
	return nil, &BadRequestError{Why: fmt.Sprintf("%d apps are named %q (in workspaces %s and %s...): name the workspace",
		len(found), ref.App, found[0].Workspace, found[1].Workspace)}
}
