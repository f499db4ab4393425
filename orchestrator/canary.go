package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"github.com/caravanhq/caravan/api"
	"maps"
	"slices"
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
	StatusCanary  = api.StatusCanary
	StatusAborted = api.StatusAborted
)

// SplitSettle is how long caravan waits after publishing or removing a
// traffic split for Traefik to apply it: its KV provider's blocking query
// returns at once, and the provider throttle (200ms in the local stack)
// delays the new configuration by at most that.
var SplitSettle = 1500 * time.Millisecond

// Event is api.Event: the orchestrator returns wire types as they are.
type Event = api.Event

// CanaryState is api.CanaryState: the orchestrator returns wire types as they are.
type CanaryState = api.CanaryState

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

// splitRoutes are the routes of rendered whose functions got canaries in
// deployment dep (Nomad decides which groups a version replaces): those
// get a split.
func splitRoutes(rendered *jobs.Rendered, dep *nomad.Deployment) []router.Route {
	var out []router.Route
	for _, r := range rendered.Routes {
		if st := dep.TaskGroups[r.Function]; st != nil && st.DesiredCanaries > 0 && r.Preview != nil {
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
		if err := o.putKV(ctx, pairs); err != nil {
			return keys, fmt.Errorf("publishing the traffic split of %s: %w", r.Function, err)
		}
		for k := range pairs {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	o.log.Info("traffic split published", "routes", len(routes), "weight", weight)
	return keys, sleep(ctx, SplitSettle)
}

// putKV writes pairs in transactions (see txnChunks), routers last: Traefik never sees a router whose
// services are not there yet.
func (o *Orchestrator) putKV(ctx context.Context, pairs map[string]string) error {
	keys := slices.Collect(maps.Keys(pairs))
	slices.SortFunc(keys, func(a, b string) int {
		ra, rb := strings.Contains(a, "/routers/"), strings.Contains(b, "/routers/")
		if ra != rb {
			if ra {
				return 1
			}
			return -1
		}
		return strings.Compare(a, b)
	})
	return o.txnChunks(ctx, keys, func(k string) *consul.KVTxnOp {
		return &consul.KVTxnOp{Verb: consul.KVSet, Key: k, Value: []byte(pairs[k])}
	})
}

// txnChunks runs op on each of keys, in order, in Consul transactions of at
// most 64 operations (Consul takes 128 in one).
func (o *Orchestrator) txnChunks(ctx context.Context, keys []string, op func(key string) *consul.KVTxnOp) error {
	for chunk := range slices.Chunk(keys, 64) {
		var ops consul.TxnOps
		for _, k := range chunk {
			ops = append(ops, &consul.TxnOp{KV: op(k)})
		}
		if err := o.txn(ctx, ops); err != nil {
			return err
		}
	}
	return nil
}

// removeSplits deletes keys, handing requests back to each route's own
// router, and waits SplitSettle for Traefik to apply it.
func (o *Orchestrator) removeSplits(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if err := o.txnChunks(ctx, keys, func(k string) *consul.KVTxnOp {
		return &consul.KVTxnOp{Verb: consul.KVDelete, Key: k}
	}); err != nil {
		return fmt.Errorf("removing a traffic split: %w", err)
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

// startCanary takes a registered version whose Nomad deployment dep awaits
// promotion: it checks the canaries answer on their preview hostnames and,
// for the canary strategy, publishes the split and returns the state to
// record; blue-green switches all traffic and promotes at once (nil state).
// Whatever fails before Nomad promotes leaves the live version serving: the
// split is removed and the deployment failed, so auto_revert stops the new
// containers.
func (o *Orchestrator) startCanary(ctx context.Context, app *spec.App, rendered *jobs.Rendered, version int, dep *nomad.Deployment) (*CanaryState, error) {
	jobID := *rendered.Job.ID
	routes := splitRoutes(rendered, dep)
	previews := make([]router.Route, len(routes))
	for i, r := range routes {
		previews[i] = *r.Preview
	}
	weight := 100
	canaries, traffic, after := app.CanarySettings()
	if app.DeployStrategy() == spec.StrategyCanary {
		weight = traffic
	}
	err := o.probeRoutes(ctx, previews, version, 0)
	var keys []string
	if err == nil {
		keys, err = o.publishSplits(ctx, routes, weight)
	}
	if err != nil {
		return nil, o.discard(context.WithoutCancel(ctx), dep.ID, keys, routes, err)
	}
	if app.DeployStrategy() == spec.StrategyBlueGreen {
		return nil, o.promote(ctx, jobID, version, dep.ID, keys, routes)
	}
	st := &CanaryState{Version: version, DeploymentID: dep.ID, Traffic: traffic, Canaries: canaries,
		Since: time.Now().UTC(), Keys: keys, Previews: map[string]string{}}
	for _, r := range routes {
		st.Functions = append(st.Functions, r.Function)
		st.Previews[r.Function] = r.Preview.URL
	}
	if after > 0 {
		st.PromoteAt = st.Since.Add(after)
	}
	return st, nil
}

// discard hands all traffic of routes back to the live version (removing
// the split keys, and any other key of theirs), then fails deployment
// depID, so auto_revert puts the live job back, and waits for its
// containers to stop. It returns cause, or what went wrong on the way.
func (o *Orchestrator) discard(ctx context.Context, depID string, keys []string, routes []router.Route, cause error) error {
	errs := []error{cause}
	if err := o.removeSplits(ctx, keys); err != nil {
		errs = append(errs, err)
	}
	if err := o.clearSplits(ctx, routes); err != nil {
		errs = append(errs, err)
	}
	dep, _, err := o.nomad.Deployments().Info(depID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("reading deployment %s: %w", shortID(depID), err))...)
	}
	if dep.Status == nomad.DeploymentStatusRunning {
		if _, _, err := o.nomad.Deployments().Fail(depID, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
			return errors.Join(append(errs, fmt.Errorf("failing deployment %s: %w", shortID(depID), err))...)
		}
	}
	// Wait for the canaries to be gone, so the live version alone runs.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		allocs, _, err := o.nomad.Deployments().Allocations(depID, (&nomad.QueryOptions{}).WithContext(wctx))
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		if !slices.ContainsFunc(allocs, func(a *nomad.AllocationListStub) bool {
			return a.ClientStatus == nomad.AllocClientStatusRunning || a.ClientStatus == nomad.AllocClientStatusPending
		}) {
			return errors.Join(errs...)
		}
		if err := sleep(wctx, 250*time.Millisecond); err != nil {
			return errors.Join(append(errs, fmt.Errorf("the new containers are still running: %w", err))...)
		}
	}
}

// promote promotes deployment depID once its traffic split is published,
// waits for Nomad to replace the previous version's containers and for
// them to leave Consul, and removes the split. Before Nomad promotes, a
// failure discards the new containers; after, the new version is live
// whatever else fails (the split is then left to the next change).
func (o *Orchestrator) promote(ctx context.Context, jobID string, version int, depID string, keys []string, routes []router.Route) error {
	if _, _, err := o.nomad.Deployments().PromoteAll(depID, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		return o.discard(context.WithoutCancel(ctx), depID, keys, routes, &RolloutError{Version: version,
			Cause: fmt.Sprintf("Nomad refused to promote deployment %s: %v", shortID(depID), err)})
	}
	dep, _, err := o.nomad.Deployments().Info(depID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err == nil {
		err = o.followDeployment(ctx, dep, version, false)
	}
	if err != nil {
		// Nomad failed the promoted version and auto_revert started the
		// previous one, which must itself be promoted.
		o.promoteRevert(context.WithoutCancel(ctx), jobID)
		_ = o.removeSplits(context.WithoutCancel(ctx), keys)
		return err
	}
	errs := []error{o.waitOldGone(ctx, depID, routes)}
	if err := o.removeSplits(ctx, keys); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		o.log.Warn("cleaning up after a promotion", "job", jobID, "version", version, "error", err)
	}
	return nil
}

// promoteRevert promotes the deployment of a reverted job when it waits for
// a promotion: going back from promoted containers makes the previous
// version's containers canaries again, and nobody else will promote them.
func (o *Orchestrator) promoteRevert(ctx context.Context, jobID string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for ctx.Err() == nil {
		dep, _, err := o.nomad.Jobs().LatestDeployment(jobID, (&nomad.QueryOptions{}).WithContext(ctx))
		switch {
		case err != nil:
		case dep == nil || dep.Status == nomad.DeploymentStatusSuccessful:
			return
		case dep.Status == nomad.DeploymentStatusRunning && awaitingPromotion(dep):
			if _, _, err := o.nomad.Deployments().PromoteAll(dep.ID, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
				o.log.Warn("promoting the reverted version", "job", jobID, "error", err)
			}
		}
		_ = sleep(ctx, 500*time.Millisecond)
	}
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
	return o.settleCanary(ctx, caller, req.AppRef, 0, true, "promoted")
}

// Abort sends all traffic of an app's canary version back to the live
// version and removes the canaries.
func (o *Orchestrator) Abort(ctx context.Context, caller Caller, req ChangeRequest) (*DeployResult, error) {
	return o.settleCanary(ctx, caller, req.AppRef, 0, false, "aborted")
}

// settleCanary promotes or aborts the canary of the app ref names; version
// > 0 settles it only if it is still that version's.
func (o *Orchestrator) settleCanary(ctx context.Context, caller Caller, ref AppRef, version int, promote bool, what string) (*DeployResult, error) {
	rec, err := o.resolve(ctx, caller, ref)
	if err != nil {
		return nil, err
	}
	unlock, err := o.store.Lock(ctx, rec.JobID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	began := time.Now()
	// Read again under the lock: another server may have settled it.
	rec, _, err = o.store.App(ctx, rec.JobID)
	if err != nil {
		return nil, err
	}
	if rec == nil || rec.Canary == nil || (version > 0 && rec.Canary.Version != version) {
		return nil, &NotFoundError{App: ref.App, Why: "it has no canary in progress (deploy with strategy = \"canary\" first)"}
	}
	jobID, st := rec.JobID, rec.Canary
	v, err := o.version(ctx, rec, st.Version)
	if err != nil {
		return nil, err
	}
	log := o.log.With("job", jobID, "version", st.Version)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	routes, rollErr := o.storedSplitRoutes(jobID, v, st)
	switch {
	case rollErr != nil:
	case promote && o.promoted(rctx, st.DeploymentID):
		// A server stopped after promoting in Nomad: only the split is left.
		log.Info("finishing a promotion", "caller", caller.Name)
		rollErr = o.removeSplits(rctx, st.Keys)
	case promote:
		log.Info("promoting canary", "caller", caller.Name)
		// Every request goes to the canaries while Nomad replaces the old
		// containers (the canaries stay up through the promotion).
		keys, err := o.publishSplits(rctx, routes, 100)
		st.Keys = union(st.Keys, keys)
		if rollErr = err; rollErr == nil {
			rollErr = o.promote(rctx, jobID, st.Version, st.DeploymentID, st.Keys, routes)
		} else {
			rollErr = o.discard(rctx, st.DeploymentID, st.Keys, routes, rollErr)
		}
	default:
		log.Info("aborting canary", "caller", caller.Name, "why", what)
		rollErr = o.discard(rctx, st.DeploymentID, st.Keys, routes, nil)
	}
	ev := Event{At: time.Now().UTC(), What: what, Who: caller.Name}
	if rollErr != nil {
		ev.What += ": " + rollErr.Error()
	}
	v.Events = append(v.Events, ev)
	res := &DeployResult{Workspace: rec.Workspace, App: rec.App, JobID: jobID, Version: st.Version, Changed: true,
		SpecHash: v.SpecHash, Kind: v.Kind}
	if err := o.clearCanary(ctx, jobID); err != nil {
		return nil, err
	}
	if promote && rollErr == nil {
		// Scheduled and callable functions follow the version that is live.
		if rollErr = o.syncStored(rctx, jobID, v, rec.Rollovers); rollErr != nil {
			log.Warn("updating scheduled and callable functions", "error", rollErr)
		}
		if err := o.finish(ctx, jobID, v, nil); err != nil {
			return nil, err
		}
		res.Duration = time.Since(began)
		return res, rollErr
	}
	v.Status, v.FinishedAt = StatusAborted, time.Now().UTC()
	if promote {
		v.Status, v.Error = StatusFailed, rollErr.Error()
	}
	if err := o.store.PutVersion(ctx, jobID, rec.Generation, v); err != nil {
		return nil, err
	}
	res.Duration = time.Since(began)
	return res, rollErr
}

// syncStored brings the periodic and callable jobs of job jobID to stored
// version v.
func (o *Orchestrator) syncStored(ctx context.Context, jobID string, v *VersionRecord, rollovers int) error {
	rendered, err := o.renderStored(jobID, v)
	if err != nil {
		return err
	}
	if err := o.syncPeriodic(ctx, jobID, rendered.Periodic, v.Version, rollovers); err != nil {
		return err
	}
	return o.syncCallable(ctx, jobID, rendered.Callable, v.Version, rollovers)
}

// promoted reports whether Nomad promoted deployment depID.
func (o *Orchestrator) promoted(ctx context.Context, depID string) bool {
	dep, _, err := o.nomad.Deployments().Info(depID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false
	}
	for _, g := range dep.TaskGroups {
		if g.Promoted {
			return true
		}
	}
	return false
}

func (o *Orchestrator) storedSplitRoutes(jobID string, v *VersionRecord, st *CanaryState) ([]router.Route, error) {
	return o.storedRoutes(jobID, v, func(r router.Route) bool { return slices.Contains(st.Functions, r.Function) })
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

// WatchCanaries promotes canaries whose promote_after has passed, finishes
// promotions a stopped server left, and aborts canaries whose containers
// fail their health checks, until ctx ends.
func (o *Orchestrator) WatchCanaries(ctx context.Context, every time.Duration) {
	sick := map[string]int{} // consecutive checks without a passing canary, by deployment
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
				continue
			}
			ref := AppRef{Workspace: rec.Workspace, Environment: rec.Environment, App: rec.App, Serve: rec.Serve}
			var nf *NotFoundError
			switch {
			case o.promoted(ctx, st.DeploymentID):
				_, err = o.settleCanary(ctx, Caravan, ref, st.Version, true, "promoted (finished after a caravan server stopped)")
			case !st.PromoteAt.IsZero() && time.Now().After(st.PromoteAt):
				_, err = o.settleCanary(ctx, Caller{Name: "auto-promote", Workspace: "*"}, ref, st.Version, true,
					"promoted after "+st.PromoteAt.Sub(st.Since).String())
			case o.canariesHealthy(ctx, rec):
				delete(sick, st.DeploymentID)
				continue
			default:
				if sick[st.DeploymentID]++; sick[st.DeploymentID] < 2 {
					continue
				}
				delete(sick, st.DeploymentID)
				o.log.Warn("canary failed its health checks; aborting", "job", rec.JobID, "version", st.Version)
				_, err = o.settleCanary(ctx, Caravan, ref, st.Version, false, "aborted automatically: canaries failed their health checks")
			}
			if err != nil && !errors.As(err, &nf) {
				o.log.Warn("settling a canary", "job", rec.JobID, "version", st.Version, "error", err)
			}
		}
	}
}

// canariesHealthy reports whether every split function of rec's canary
// still has a canary passing its checks, and Nomad has not failed it.
func (o *Orchestrator) canariesHealthy(ctx context.Context, rec *AppRecord) bool {
	st := rec.Canary
	dep, _, err := o.nomad.Deployments().Info(st.DeploymentID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return true // cannot tell: try again
	}
	if dep.Status == nomad.DeploymentStatusFailed || dep.Status == nomad.DeploymentStatusCancelled {
		return false
	}
	v, err := o.version(ctx, rec, st.Version)
	if err != nil {
		return true
	}
	routes, err := o.storedSplitRoutes(rec.JobID, v, st)
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
