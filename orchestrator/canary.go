package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// A canary or blue-green version runs beside the live one as Nomad canaries
// that carry the preview route's tags. caravan moves traffic to them with a
// traffic split (router.Split) it publishes in Consul KV, where Traefik's KV
// provider reads it, and promotes them in Nomad only once traffic is theirs:
//
//	canary:     canaries healthy -> split at traffic% -> [promote: split 100%,
//	            Nomad promote, old containers replaced, split removed]
//	            [abort: split removed, Nomad deployment failed, auto_revert]
//	blue-green: full set healthy -> split 100% (one step) -> Nomad promote,
//	            old set drains and stops -> split removed
//
// While a split is published, requests for the function's hostnames go
// through it; removing it hands them back to the route's own router.

// StatusCanary marks a version whose canaries take part of the traffic
// while the previous version stays live; StatusAborted one whose canaries
// were removed.
const (
	StatusCanary  = "canary"
	StatusAborted = "aborted"
)

// SplitSettle is how long caravan waits after publishing or removing a
// traffic split for Traefik to apply it: its KV provider's blocking query
// returns at once, and the provider throttle (200ms in the local stack)
// delays the new configuration by at most that.
var SplitSettle = 1500 * time.Millisecond

// Event is something that happened to a version after it was deployed:
// its canary went live, was promoted or aborted.
type Event struct {
	At   time.Time `json:"at"`
	What string    `json:"what"`
	Who  string    `json:"who,omitempty"`
}

// CanaryState is an app's version in progress as a canary.
type CanaryState struct {
	Version  int `json:"version"`
	Traffic  int `json:"traffic"`
	Canaries int `json:"canaries"`
	// Functions are the web functions whose traffic is split.
	Functions []string  `json:"functions,omitempty"`
	Since     time.Time `json:"since"`
	// PromoteAt is when caravan promotes it on its own (zero: never).
	PromoteAt time.Time `json:"promote_at,omitzero"`
	// Previews are the canaries' own URLs, by function.
	Previews map[string]string `json:"previews,omitempty"`
	// Keys are the Consul KV keys of the published splits.
	Keys []string `json:"keys,omitempty"`
}

// CanaryPendingError refuses a change while a canary awaits promotion.
type CanaryPendingError struct {
	App     string
	Version int
}

func (e *CanaryPendingError) Error() string {
	return fmt.Sprintf("app %s: version %d is a canary; run `caravan app promote %s` or `caravan app abort %s` first",
		e.App, e.Version, e.App, e.App)
}

// needsPromotion is how Nomad describes a running deployment whose canaries
// wait for a promotion (auto_promote = false); the API's DeploymentState
// does not carry auto_promote itself.
const needsPromotion = "Deployment is running but requires manual promotion"

// awaitingPromotion reports whether dep waits for caravan to promote its
// canaries: they do not promote on their own and every group has them all
// healthy.
func awaitingPromotion(dep *nomad.Deployment) bool {
	if dep.StatusDescription != needsPromotion {
		return false
	}
	waiting := false
	for _, st := range dep.TaskGroups {
		if st.DesiredCanaries == 0 {
			continue
		}
		if st.Promoted || st.HealthyAllocs < st.DesiredCanaries {
			return false
		}
		waiting = true
	}
	return waiting
}

// splitRoutes are the routes of rendered whose functions the rollout
// changes (updated, with a previous version serving): those get a split.
func splitRoutes(rendered *jobs.Rendered, functions []FunctionResult) []router.Route {
	var out []router.Route
	for _, r := range rendered.Routes {
		i := slices.IndexFunc(functions, func(f FunctionResult) bool { return f.Name == r.Function })
		if i >= 0 && functions[i].Change == Updated && r.Preview != nil {
			out = append(out, r)
		}
	}
	return out
}

// canaryServers lists the URLs of the passing canary containers of r.
func (o *Orchestrator) canaryServers(ctx context.Context, r router.Route) ([]string, error) {
	entries, _, err := o.consul.Health().Service(r.Name, jobs.CanaryTag, true, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("listing the canaries of %s in Consul: %w", r.Name, err)
	}
	var urls []string
	for _, e := range entries {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		urls = append(urls, fmt.Sprintf("http://%s:%d", addr, e.Service.Port))
	}
	slices.Sort(urls)
	return urls, nil
}

// publishSplits sends weight percent of each route's requests to its
// canaries, in one Consul transaction per route, and returns the keys
// written. It waits SplitSettle for Traefik to apply them.
func (o *Orchestrator) publishSplits(ctx context.Context, routes []router.Route, weight int) ([]string, error) {
	var keys []string
	for _, r := range routes {
		servers, err := o.canaryServers(ctx, r)
		if err != nil {
			return keys, err
		}
		if len(servers) == 0 {
			return keys, &RolloutError{Function: r.Function, Cause: "no canary container passes its health check in Consul"}
		}
		pairs, err := router.KV(o.router.KVRoot, router.Split{Route: r, Servers: servers, Weight: weight}.Config())
		if err != nil {
			return keys, err
		}
		var ops consul.TxnOps
		for k, v := range pairs {
			ops = append(ops, &consul.TxnOp{KV: &consul.KVTxnOp{Verb: consul.KVSet, Key: k, Value: []byte(v)}})
			keys = append(keys, k)
		}
		if err := o.txn(ctx, ops); err != nil {
			return keys, fmt.Errorf("publishing the traffic split of %s: %w", r.Function, err)
		}
	}
	slices.Sort(keys)
	o.log.Info("traffic split published", "routes", len(routes), "weight", weight)
	return keys, sleep(ctx, SplitSettle)
}

// removeSplits deletes keys, handing requests back to each route's own
// router, and waits SplitSettle for Traefik to apply it.
func (o *Orchestrator) removeSplits(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	for chunk := range slices.Chunk(keys, 64) {
		var ops consul.TxnOps
		for _, k := range chunk {
			ops = append(ops, &consul.TxnOp{KV: &consul.KVTxnOp{Verb: consul.KVDelete, Key: k}})
		}
		if err := o.txn(ctx, ops); err != nil {
			return fmt.Errorf("removing a traffic split: %w", err)
		}
	}
	return sleep(ctx, SplitSettle)
}

// clearSplits deletes whatever split of routes Consul KV holds, for a
// rollout whose keys were never recorded (its server stopped).
func (o *Orchestrator) clearSplits(ctx context.Context, routes []router.Route) error {
	for _, r := range routes {
		for _, p := range router.SplitPrefixes(o.router.KVRoot, r) {
			if _, err := o.consul.KV().DeleteTree(p, (&consul.WriteOptions{}).WithContext(ctx)); err != nil {
				return fmt.Errorf("removing the traffic split of %s: %w", r.Function, err)
			}
		}
	}
	return nil
}

func (o *Orchestrator) txn(ctx context.Context, ops consul.TxnOps) error {
	ok, resp, _, err := o.consul.Txn().Txn(ops, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	if !ok {
		var errs []error
		for _, e := range resp.Errors {
			errs = append(errs, errors.New(e.What))
		}
		return errors.Join(errs...)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// startCanary takes a registered version whose Nomad deployment awaits
// promotion: it checks the canaries answer on their preview hostnames and,
// for the canary strategy, publishes the split and returns the state to
// record; blue-green switches all traffic and promotes at once (nil state).
func (o *Orchestrator) startCanary(ctx context.Context, app *spec.App, rendered *jobs.Rendered, res *DeployResult) (*CanaryState, error) {
	routes := splitRoutes(rendered, res.Functions)
	previews := make([]router.Route, len(routes))
	for i, r := range routes {
		previews[i] = *r.Preview
	}
	if err := o.probeRoutes(ctx, previews, res.Version, 0); err != nil {
		return nil, err
	}
	if app.DeployStrategy() == spec.StrategyBlueGreen {
		keys, err := o.publishSplits(ctx, routes, 100)
		if err == nil {
			err = o.promote(ctx, *rendered.Job.ID, res.Version, keys, routes)
		}
		if err != nil {
			return nil, errors.Join(err, o.removeSplits(context.WithoutCancel(ctx), keys))
		}
		return nil, nil
	}
	canaries, traffic, after := app.CanarySettings()
	keys, err := o.publishSplits(ctx, routes, traffic)
	if err != nil {
		return nil, errors.Join(err, o.removeSplits(context.WithoutCancel(ctx), keys))
	}
	st := &CanaryState{Version: res.Version, Traffic: traffic, Canaries: canaries, Since: time.Now().UTC(),
		Keys: keys, Previews: map[string]string{}}
	for _, r := range routes {
		st.Functions = append(st.Functions, r.Function)
		st.Previews[r.Function] = r.Preview.URL
	}
	if after > 0 {
		st.PromoteAt = st.Since.Add(after)
	}
	return st, nil
}

// promote sends every request to the canaries (their containers stay up
// through Nomad's promotion, unlike the old ones), promotes them, waits
// for Nomad to replace the old containers, and removes the split.
func (o *Orchestrator) promote(ctx context.Context, jobID string, version int, keys []string, routes []router.Route) error {
	dep, _, err := o.nomad.Jobs().LatestDeployment(jobID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("reading deployment of %s: %w", jobID, err)
	}
	if dep == nil || dep.Status != nomad.DeploymentStatusRunning {
		return &RolloutError{Version: version, Cause: "Nomad has no deployment waiting for promotion (it was reverted?)"}
	}
	if _, _, err := o.nomad.Deployments().PromoteAll(dep.ID, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		return &RolloutError{Version: version, Cause: fmt.Sprintf("Nomad refused to promote deployment %s: %v", shortID(dep.ID), err)}
	}
	if err := o.watchDeployment(ctx, jobID, dep.JobVersion, version); err != nil {
		return err
	}
	if err := o.waitOldGone(ctx, dep.ID, routes); err != nil {
		return err
	}
	return o.removeSplits(ctx, keys)
}

// waitOldGone waits until every Consul instance of routes belongs to an
// allocation of deployment depID: a successful deployment has told the old
// containers to stop, but they leave Consul a moment later, and the split
// must not hand requests back to the routes' own routers before.
func (o *Orchestrator) waitOldGone(ctx context.Context, depID string, routes []router.Route) error {
	if len(routes) == 0 {
		return nil
	}
	allocs, _, err := o.nomad.Deployments().Allocations(depID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("listing the allocations of deployment %s: %w", shortID(depID), err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		old := 0
		for _, r := range routes {
			entries, _, err := o.consul.Catalog().Service(r.Name, "", (&consul.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return fmt.Errorf("listing %s in Consul: %w", r.Name, err)
			}
			for _, e := range entries {
				if !slices.ContainsFunc(allocs, func(a *nomad.AllocationListStub) bool { return strings.Contains(e.ServiceID, a.ID) }) {
					old++
				}
			}
		}
		if old == 0 {
			// Traefik's consulCatalog provider must see them gone too
			// before the split goes.
			return sleep(ctx, SplitSettle)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("%d containers of the previous version still registered in Consul: %w", old, err)
		}
	}
}

// Promote moves all traffic of an app's canary version to it and retires
// the previous version's containers; the canary version becomes live.
func (o *Orchestrator) Promote(ctx context.Context, caller Caller, req ChangeRequest) (*DeployResult, error) {
	return o.settleCanary(ctx, caller, req.AppRef, true, "promoted")
}

// Abort sends all traffic of an app's canary version back to the live
// version and removes the canaries.
func (o *Orchestrator) Abort(ctx context.Context, caller Caller, req ChangeRequest) (*DeployResult, error) {
	return o.settleCanary(ctx, caller, req.AppRef, false, "aborted")
}

func (o *Orchestrator) settleCanary(ctx context.Context, caller Caller, ref AppRef, promote bool, what string) (*DeployResult, error) {
	rec, err := o.resolve(ctx, caller, ref)
	if err != nil {
		return nil, err
	}
	unlock, err := o.store.Lock(ctx, rec.JobID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return o.settleLocked(ctx, caller, rec.JobID, promote, what)
}

// settleLocked promotes or aborts the canary of job jobID; the caller holds
// the app's lock.
func (o *Orchestrator) settleLocked(ctx context.Context, caller Caller, jobID string, promote bool, what string) (*DeployResult, error) {
	began := time.Now()
	rec, _, err := o.store.App(ctx, jobID)
	if err != nil {
		return nil, err
	}
	if rec == nil || rec.Canary == nil {
		app := jobID
		if rec != nil {
			app = rec.App
		}
		return nil, &NotFoundError{App: app, Why: "it has no canary in progress (deploy with strategy = \"canary\" first)"}
	}
	st := rec.Canary
	v, err := o.version(ctx, rec, st.Version)
	if err != nil {
		return nil, err
	}
	log := o.log.With("job", jobID, "version", st.Version)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()

	var rollErr error
	switch {
	case promote && o.promoted(rctx, jobID, st.Version):
		// A server stopped after promoting in Nomad: only the split is left.
		log.Info("finishing a promotion", "caller", caller.Name)
		rollErr = o.removeSplits(rctx, st.Keys)
	case promote:
		log.Info("promoting canary", "caller", caller.Name)
		var routes []router.Route
		if routes, rollErr = o.storedSplitRoutes(jobID, v, st); rollErr == nil {
			rollErr = o.publishAll(rctx, routes, st)
		}
		if rollErr == nil {
			rollErr = o.promote(rctx, jobID, st.Version, st.Keys, routes)
		}
	default:
		log.Info("aborting canary", "caller", caller.Name, "why", what)
		rollErr = o.abortCanary(rctx, jobID, st)
	}
	v.Events = append(v.Events, Event{At: time.Now().UTC(), What: what, Who: caller.Name})
	if rollErr != nil {
		v.Events[len(v.Events)-1].What += ": " + rollErr.Error()
	}
	res := &DeployResult{Workspace: rec.Workspace, App: rec.App, JobID: jobID, Version: st.Version, Changed: true,
		SpecHash: v.SpecHash, Kind: v.Kind}
	if !promote || rollErr != nil {
		// The previous version serves: an aborted canary, or a promotion
		// Nomad failed (and reverted).
		_ = o.removeSplits(context.WithoutCancel(ctx), st.Keys)
		v.Status, v.FinishedAt = StatusAborted, time.Now().UTC()
		if promote {
			v.Status, v.Error = StatusFailed, rollErr.Error()
		}
		if err := o.store.PutVersion(ctx, jobID, rec.Generation, v); err != nil {
			return nil, err
		}
		if err := o.clearCanary(ctx, jobID); err != nil {
			return nil, err
		}
		if rollErr != nil {
			return nil, rollErr
		}
		res.Duration = time.Since(began)
		return res, nil
	}
	if err := o.clearCanary(ctx, jobID); err != nil {
		return nil, err
	}
	if err := o.finish(ctx, jobID, v, nil); err != nil {
		return nil, err
	}
	res.Duration = time.Since(began)
	return res, nil
}

// promoted reports whether Nomad runs caravan version version of job jobID
// with its deployment promoted and successful.
func (o *Orchestrator) promoted(ctx context.Context, jobID string, version int) bool {
	job, err := o.currentJob(ctx, jobID)
	if err != nil || job == nil || job.Meta[jobs.MetaVersion] != strconv.Itoa(version) {
		return false
	}
	dep, _, err := o.nomad.Jobs().LatestDeployment(jobID, (&nomad.QueryOptions{}).WithContext(ctx))
	return err == nil && dep != nil && dep.JobVersion == *job.Version && dep.Status == nomad.DeploymentStatusSuccessful
}

// publishAll sends every request of a canary's functions to its canaries.
func (o *Orchestrator) publishAll(ctx context.Context, routes []router.Route, st *CanaryState) error {
	keys, err := o.publishSplits(ctx, routes, 100)
	st.Keys = union(st.Keys, keys)
	return err
}

func (o *Orchestrator) storedSplitRoutes(jobID string, v *VersionRecord, st *CanaryState) ([]router.Route, error) {
	return o.storedRoutes(jobID, v, func(r router.Route) bool { return slices.Contains(st.Functions, r.Function) })
}

// abortCanary hands all traffic back to the live version, then fails the
// canary's Nomad deployment: auto_revert registers the live version's job
// again and the canaries stop.
func (o *Orchestrator) abortCanary(ctx context.Context, jobID string, st *CanaryState) error {
	if err := o.removeSplits(ctx, st.Keys); err != nil {
		return err
	}
	dep, _, err := o.nomad.Jobs().LatestDeployment(jobID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("reading deployment of %s: %w", jobID, err)
	}
	if dep == nil || dep.Status != nomad.DeploymentStatusRunning {
		return nil // Nomad already failed (and reverted) it
	}
	if _, _, err := o.nomad.Deployments().Fail(dep.ID, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("failing deployment %s: %w", shortID(dep.ID), err)
	}
	// Wait for the canaries to be gone, so the abort returns with only the
	// live version running.
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		allocs, _, err := o.nomad.Deployments().Allocations(dep.ID, (&nomad.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		running := 0
		for _, a := range allocs {
			if a.ClientStatus == nomad.AllocClientStatusRunning || a.ClientStatus == nomad.AllocClientStatusPending {
				running++
			}
		}
		if running == 0 {
			return nil
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func (o *Orchestrator) clearCanary(ctx context.Context, jobID string) error {
	rec, index, err := o.store.App(ctx, jobID)
	if err != nil || rec == nil {
		return errors.Join(err, errors.New("app record vanished"))
	}
	rec.Canary = nil
	rec.UpdatedAt = time.Now().UTC()
	return o.store.PutApp(ctx, rec, index)
}

// Caravan is the caller of what caravan server does on its own.
var Caravan = Caller{Name: "caravan", Workspace: "*"}

// WatchCanaries promotes canaries whose promote_after has passed and
// aborts those whose containers fail their health checks, until ctx ends.
func (o *Orchestrator) WatchCanaries(ctx context.Context, every time.Duration) {
	sick := map[string]int{} // consecutive checks without a passing canary
	for {
		if err := sleep(ctx, every); err != nil {
			return
		}
		recs, err := o.store.Apps(ctx)
		if err != nil {
			continue
		}
		for _, rec := range recs {
			st := rec.Canary
			if st == nil {
				delete(sick, rec.JobID)
				continue
			}
			ref := AppRef{Workspace: rec.Workspace, Environment: rec.Environment, App: rec.App, Serve: rec.Serve}
			var nf *NotFoundError
			switch {
			case o.promoted(ctx, rec.JobID, st.Version):
				_, err = o.settleCanary(ctx, Caravan, ref, true, "promoted (finished after a caravan server stopped)")
			case !st.PromoteAt.IsZero() && time.Now().After(st.PromoteAt):
				_, err = o.settleCanary(ctx, Caller{Name: "auto-promote", Workspace: "*"}, ref, true,
					"promoted after "+st.PromoteAt.Sub(st.Since).String())
			default:
				err = o.checkCanary(ctx, rec, ref, sick)
			}
			if err != nil && !errors.As(err, &nf) {
				o.log.Warn("settling a canary", "job", rec.JobID, "error", err)
			}
		}
	}
}

// checkCanary aborts rec's canary when no container of it has passed its
// checks on two checks in a row; sick counts them per job.
func (o *Orchestrator) checkCanary(ctx context.Context, rec *AppRecord, ref AppRef, sick map[string]int) error {
	if o.canariesHealthy(ctx, rec) {
		delete(sick, rec.JobID)
		return nil
	}
	if sick[rec.JobID]++; sick[rec.JobID] < 2 {
		return nil
	}
	delete(sick, rec.JobID)
	o.log.Warn("canary failed its health checks; aborting", "job", rec.JobID, "version", rec.Canary.Version)
	_, err := o.settleCanary(ctx, Caravan, ref, false, "aborted automatically: canaries failed their health checks")
	return err
}

// canariesHealthy reports whether every split function of rec's canary
// still has a canary passing its checks, and Nomad has not failed it.
func (o *Orchestrator) canariesHealthy(ctx context.Context, rec *AppRecord) bool {
	dep, _, err := o.nomad.Jobs().LatestDeployment(rec.JobID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err == nil && dep != nil && dep.Status == nomad.DeploymentStatusFailed {
		return false
	}
	v, err := o.version(ctx, rec, rec.Canary.Version)
	if err != nil {
		return true
	}
	routes, err := o.storedSplitRoutes(rec.JobID, v, rec.Canary)
	if err != nil {
		return true
	}
	for _, r := range routes {
		servers, err := o.canaryServers(ctx, r)
		if err == nil && len(servers) == 0 {
			return false
		}
	}
	return true
}
