package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"github.com/caravanhq/caravan/api"
	"github.com/hashicorp/go-hclog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
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

// A split counts as applied when the proxy is seen serving it: with a
// Proxy (Traefik's API), caravan watches Traefik's routers and services
// until they are what it published, for at most SplitDeadline. Without
// one, it waits SplitSettle instead: Traefik's KV provider's blocking
// query returns at once, and the provider throttle (200ms in the local
// stack) delays the new configuration by at most that.
var (
	SplitSettle   = 1500 * time.Millisecond
	SplitDeadline = 30 * time.Second
)

// kvProvider is the name Traefik gives its Consul KV provider, whose
// objects' names end in "@consul".
const kvProvider = "consul"

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
	instances, _, err := o.consul.Instances(ctx, r.Name, jobs.CanaryTag, true, 0)
	if err != nil {
		return nil, fmt.Errorf("listing the canaries of %s in Consul: %w", r.Name, err)
	}
	return serverURLs(instances), nil
}

// serverURLs are the URLs of instances, sorted.
func serverURLs(instances []Instance) []string {
	urls := make([]string, 0, len(instances))
	for _, in := range instances {
		urls = append(urls, fmt.Sprintf("http://%s:%d", in.Address, in.Port))
	}
	slices.Sort(urls)
	return urls
}

// publishSplits sends weight percent of each route's requests to its
// canaries, or for a route named in to, to the canary function it maps
// it to (a canary at zero: see zeroCanaryFunctions), and returns the keys
// written (see putKV), once Traefik serves them (see awaitRouters).
func (o *Orchestrator) publishSplits(ctx context.Context, routes []router.Route, weight int, to map[string]string) ([]string, error) {
	var keys []string
	want := map[string]string{}
	// A proxied split (router.Split) keeps its routers and their service
	// from one weight to the next: what changes is its header.
	headers := map[string]string{}
	for _, r := range routes {
		s := router.Split{Route: r, Weight: weight, Function: to[r.Name]}
		if s.Function == "" {
			servers, err := o.canaryServers(ctx, r)
			if err != nil {
				return keys, err
			}
			if len(servers) == 0 {
				return keys, &RolloutError{Function: r.Function, Cause: "no canary container passes its health check in Consul"}
			}
			s.Servers = servers
		}
		cfg := s.Config()
		for name, rt := range cfg.HTTP.Routers {
			want[name+"@"+kvProvider] = rt.Service
		}
		if r.Proxied {
			for name, mw := range cfg.HTTP.Middlewares {
				if mw.Headers == nil {
					continue
				}
				if v, ok := mw.Headers.CustomRequestHeaders[router.HeaderSplit]; ok {
					headers[name+"@"+kvProvider] = v
				}
			}
		}
		pairs, err := router.KV(o.router.KVRoot, cfg)
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
	if err := o.awaitRouters(ctx, want); err != nil {
		return keys, err
	}
	return keys, o.awaitSplitHeaders(ctx, headers)
}

// awaitSplitHeaders waits until Traefik's split middlewares of want set
// router.HeaderSplit to the value want names (see awaitRouters).
func (o *Orchestrator) awaitSplitHeaders(ctx context.Context, want map[string]string) error {
	if len(want) == 0 || o.proxy == nil {
		return nil // without a Proxy, awaitRouters waited SplitSettle
	}
	return observe(ctx, "the traffic split's weight", func(ctx context.Context) (bool, error) {
		for name, v := range want {
			got, err := o.proxy.RequestHeader(ctx, name, router.HeaderSplit)
			if err != nil || got != v {
				return false, err
			}
		}
		return true, nil
	})
}

// awaitRouters waits until the proxy routes each router of want (named
// with its provider) to its service, or serves no such router where the
// service is "" (see SplitDeadline; without a Proxy, SplitSettle).
func (o *Orchestrator) awaitRouters(ctx context.Context, want map[string]string) error {
	if o.proxy == nil {
		return sleep(ctx, SplitSettle)
	}
	return observe(ctx, "the traffic split", func(ctx context.Context) (bool, error) {
		for name, service := range want {
			got, err := o.proxy.RouterService(ctx, name)
			if err != nil || unqualified(got) != unqualified(service) {
				return false, err
			}
		}
		return true, nil
	})
}

// awaitServers waits until the proxy serves route r from its own router
// again and its service lists no server outside allowed (see
// awaitRouters). That the old servers are gone is not enough: while a
// promotion re-tags the canaries, the service can hold only them before
// Traefik has the route's router back, and a split removed in that moment
// leaves requests with no router at all (404).
func (o *Orchestrator) awaitServers(ctx context.Context, r router.Route, allowed []string) error {
	return o.awaitServersAll(ctx, r, func(s string) bool { return slices.Contains(allowed, s) })
}

// awaitServersWithout waits until the proxy serves route r from its own
// router again and its service lists none of forbidden (see
// awaitServers, which names the servers allowed instead).
func (o *Orchestrator) awaitServersWithout(ctx context.Context, r router.Route, forbidden []string) error {
	return o.awaitServersAll(ctx, r, func(s string) bool { return !slices.Contains(forbidden, s) })
}

// awaitServersAll waits until the proxy serves route r from its own router
// again and every server its service lists passes ok.
func (o *Orchestrator) awaitServersAll(ctx context.Context, r router.Route, ok func(server string) bool) error {
	if r.Proxied {
		// caravan's proxies, not Traefik, list its containers, from
		// Consul: passing there is enough.
		return nil
	}
	if o.proxy == nil {
		return sleep(ctx, SplitSettle)
	}
	service := router.StableService(r)
	return observe(ctx, "the previous containers' removal from "+service, func(ctx context.Context) (bool, error) {
		own, err := o.proxy.RouterService(ctx, r.Router+"@"+catalogProvider)
		if err != nil || own == "" {
			return false, err
		}
		servers, err := o.proxy.Servers(ctx, service)
		if err != nil {
			return false, err
		}
		for _, s := range servers {
			if !ok(s) {
				return false, nil
			}
		}
		return true, nil
	})
}

// catalogProvider is the name Traefik gives its Consul catalog provider.
const catalogProvider = "consulcatalog"

// unqualified drops the provider from a Traefik object's name.
func unqualified(name string) string {
	n, _, _ := strings.Cut(name, "@")
	return n
}

// observe asks seen, every observeEvery, until it answers true, for at
// most SplitDeadline.
func observe(ctx context.Context, what string, seen func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, SplitDeadline)
	defer cancel()
	var last error
	for {
		ok, err := seen(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if err := sleep(ctx, observeEvery); err != nil {
			return fmt.Errorf("the proxy did not apply %s within %s: %w", what, SplitDeadline, errors.Join(last, err))
		}
	}
}

// observeEvery is how often observe asks the proxy.
const observeEvery = 50 * time.Millisecond

// splitRouters names, with their provider, the routers among split keys
// under root: <root>/http/routers/<name>/....
func splitRouters(root string, keys []string) []string {
	var out []string
	for _, k := range keys {
		rest, ok := strings.CutPrefix(k, root+"/http/routers/")
		if name, _, found := strings.Cut(rest, "/"); ok && found {
			out = append(out, name+"@"+kvProvider)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// putKV writes pairs in transactions (see txnChunks), routers last: Traefik never sees a router whose
// services are not there yet.
func (o *Orchestrator) putKV(ctx context.Context, pairs map[string]string) error {
	return o.writeKV(ctx, setOps(pairs))
}

// setOps sets pairs, routers last: written in that order, Traefik never
// sees a router whose services are not there yet.
func setOps(pairs map[string]string) []KVOp {
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
	ops := make([]KVOp, len(keys))
	for i, k := range keys {
		ops[i] = KVOp{Key: k, Value: []byte(pairs[k])}
	}
	return ops
}

// deleteOps deletes keys.
func deleteOps(keys []string) []KVOp {
	ops := make([]KVOp, len(keys))
	for i, k := range keys {
		ops[i] = KVOp{Key: k, Delete: true}
	}
	return ops
}

// kvChunk is the most operations caravan puts in one Consul transaction
// (Consul takes 128).
const kvChunk = 64

// writeKV applies ops in order, in transactions of at most kvChunk.
func (o *Orchestrator) writeKV(ctx context.Context, ops []KVOp) error {
	for chunk := range slices.Chunk(ops, kvChunk) {
		if err := o.consul.WriteKV(ctx, chunk); err != nil {
			return err
		}
	}
	return nil
}

// removeSplits deletes keys, handing requests back to each route's own
// router, once Traefik no longer serves the split's routers.
func (o *Orchestrator) removeSplits(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if err := o.writeKV(ctx, deleteOps(keys)); err != nil {
		return fmt.Errorf("removing a traffic split: %w", err)
	}
	gone := map[string]string{}
	for _, name := range splitRouters(o.router.KVRoot, keys) {
		gone[name] = ""
	}
	return o.awaitRouters(ctx, gone)
}

// clearSplits deletes whatever split of routes Consul KV holds, for a
// rollout whose keys were never recorded (its server stopped).
func (o *Orchestrator) clearSplits(ctx context.Context, routes []router.Route) error {
	for _, r := range routes {
		for _, p := range router.SplitPrefixes(o.router.KVRoot, r) {
			if err := o.consul.DeleteKVTree(ctx, p); err != nil {
				return fmt.Errorf("removing the traffic split of %s: %w", r.Function, err)
			}
		}
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
// containers (and rollout puts the live version's proxied routes back:
// see restoreAfter).
func (o *Orchestrator) startCanary(ctx context.Context, app *spec.App, rendered *jobs.Rendered, version int, dep *nomad.Deployment) (*CanaryState, error) {
	jobID := *rendered.Job.ID
	routes := splitRoutes(rendered, dep)
	previews := make([]router.Route, len(routes))
	for i, r := range routes {
		previews[i] = *r.Preview
	}
	weight := 100
	_, traffic, after := app.CanarySettings()
	if app.DeployStrategy() == spec.StrategyCanary {
		weight = traffic
	}
	err := o.probeRoutes(ctx, previews, version, 0)
	var keys []string
	if err == nil {
		keys, err = o.publishSplits(ctx, routes, weight, nil)
	}
	if err != nil {
		return nil, o.discard(context.WithoutCancel(ctx), jobID, dep.ID, keys, routes, err)
	}
	if app.DeployStrategy() == spec.StrategyBlueGreen {
		return nil, o.promote(ctx, jobID, version, dep.ID, keys, routes)
	}
	st := &CanaryState{Version: version, DeploymentID: dep.ID, Traffic: traffic,
		Since: time.Now().UTC(), Keys: keys, Previews: map[string]string{}}
	for _, r := range routes {
		st.Functions = append(st.Functions, r.Function)
		st.Previews[r.Function] = r.Preview.URL
	}
	// What Nomad started: the spec's number, clamped to each function's count.
	st.Canaries = canaryCount(dep, st.Functions)
	if after > 0 {
		st.PromoteAt = st.Since.Add(after)
	}
	return st, nil
}

// discard hands all traffic of routes back to the live version (removing
// the split keys, and any other key of theirs; keys it cannot remove are
// recorded as stale, see removeOrRecord), then fails deployment
// depID, so auto_revert puts the live job back, and waits for its
// containers to stop. It returns cause, or what went wrong on the way.
func (o *Orchestrator) discard(ctx context.Context, jobID, depID string, keys []string, routes []router.Route, cause error) error {
	errs := []error{cause}
	if err := o.removeOrRecord(ctx, jobID, keys); err != nil {
		errs = append(errs, err)
	}
	if err := o.clearSplits(ctx, routes); err != nil {
		errs = append(errs, err)
	}
	dep, _, err := o.nomad.Deployment(ctx, depID, 0)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("reading deployment %s: %w", shortID(depID), err))...)
	}
	if dep.Status == nomad.DeploymentStatusRunning {
		if err := o.nomad.FailDeployment(ctx, depID); err != nil {
			return errors.Join(append(errs, fmt.Errorf("failing deployment %s: %w", shortID(depID), err))...)
		}
	}
	// Wait for the canaries to be gone, so the live version alone runs.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var index uint64
	for {
		allocs, last, err := o.nomad.DeploymentAllocations(wctx, depID, index)
		if err != nil {
			if wctx.Err() != nil {
				err = fmt.Errorf("the new containers are still running: %w", err)
			}
			return errors.Join(append(errs, err)...)
		}
		if !slices.ContainsFunc(allocs, running) {
			return errors.Join(errs...)
		}
		index = last
	}
}

// running reports whether an allocation runs or is about to.
func running(a *nomad.AllocationListStub) bool {
	return a.ClientStatus == nomad.AllocClientStatusRunning || a.ClientStatus == nomad.AllocClientStatusPending
}

// promote promotes deployment depID once its traffic split is published,
// and removes the split once the previous version's containers have left
// Consul and the proxy's services of routes; it returns once that is done
// and Nomad has every container of the deployment healthy. The two go on
// at once: the split sends each route's requests to the new containers by
// address, so neither the replacements Nomad starts nor Nomad's verdict on
// them is anything the split's removal waits for (see awaitRetired).
// Before Nomad promotes, a failure discards the new containers; after,
// the new version is live whatever else fails (a split it cannot remove
// is recorded as stale, and removed later: see removeOrRecord), unless
// Nomad fails the deployment.
func (o *Orchestrator) promote(ctx context.Context, jobID string, version int, depID string, keys []string, routes []router.Route) error {
	old, err := o.previousInstances(ctx, depID, routes)
	if err != nil {
		return o.discard(context.WithoutCancel(ctx), jobID, depID, keys, routes, &RolloutError{Version: version, Cause: err.Error()})
	}
	if err := o.nomad.PromoteDeployment(ctx, depID); err != nil {
		return o.discard(context.WithoutCancel(ctx), jobID, depID, keys, routes, &RolloutError{Version: version,
			Cause: fmt.Sprintf("Nomad refused to promote deployment %s: %v", shortID(depID), err)})
	}
	o.log.Debug("deployment promoted", "job", jobID, "deployment", depID)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cleaned := make(chan error, 1)
	go func() {
		err := o.awaitRetired(wctx, routes, old)
		if wctx.Err() != nil {
			cleaned <- err // the deployment failed: its path removes the split
			return
		}
		o.log.Debug("previous containers gone from Consul and the proxy", "job", jobID, "error", err)
		cleaned <- errors.Join(err, o.removeOrRecord(ctx, jobID, keys))
		o.log.Debug("traffic split removed", "job", jobID)
	}()
	if err := o.followPromoted(ctx, depID, version, routes); err != nil {
		cancel()
		<-cleaned
		// Nomad failed the promoted version and auto_revert started the
		// previous one, which must itself be promoted.
		o.promoteRevert(context.WithoutCancel(ctx), jobID)
		_ = o.removeOrRecord(context.WithoutCancel(ctx), jobID, keys)
		return err
	}
	o.log.Debug("promoted deployment healthy", "job", jobID, "deployment", depID)
	if err := <-cleaned; err != nil {
		o.log.Warn("cleaning up after a promotion", "job", jobID, "version", version, "error", err)
	}
	return nil
}

// followPromoted follows promoted deployment depID until every container
// of it is healthy, giving Nomad the verdict on the containers of routes
// as soon as they pass their checks in Consul (see settleHealth).
func (o *Orchestrator) followPromoted(ctx context.Context, depID string, version int, routes []router.Route) error {
	dep, _, err := o.nomad.Deployment(ctx, depID, 0)
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	for _, r := range routes {
		go o.settleHealth(sctx, depID, r)
	}
	return o.followDeployment(ctx, dep, version, false)
}

// settleHealth tells Nomad that the containers of deployment depID for
// route r are healthy as soon as they run and pass their checks in
// Consul (see unsettled), until ctx ends. That is the verdict Nomad
// reaches itself (health_check = "checks", min_healthy_time = 0), a
// second or so later: its client polls Consul every 500 ms and reports
// in batches. A failing container is left to Nomad.
func (o *Orchestrator) settleHealth(ctx context.Context, depID string, r router.Route) {
	var index uint64
	for ctx.Err() == nil {
		instances, last, err := o.consul.Instances(ctx, r.Name, "", true, index)
		if err != nil {
			if sleep(ctx, observeEvery) != nil {
				return
			}
			continue
		}
		index = last
		allocs, _, err := o.nomad.DeploymentAllocations(ctx, depID, 0)
		if err != nil {
			continue
		}
		ids := unsettled(allocs, r.Function, instances)
		if len(ids) == 0 {
			continue
		}
		if err := o.nomad.SetAllocHealth(ctx, depID, ids); err != nil {
			o.log.Debug("giving Nomad the verdict on healthy containers", "deployment", shortID(depID), "error", err)
			continue
		}
		o.log.Debug("containers pass their checks in Consul; told Nomad they are healthy", "deployment", shortID(depID),
			"function", r.Function, "allocations", len(ids))
	}
}

// unsettled are the allocations among allocs of group whose health
// caravan gives Nomad: they run (desired and client status, every task),
// Nomad has no verdict on them yet, and an instance among passing (those
// passing their checks in Consul) is theirs.
func unsettled(allocs []*nomad.AllocationListStub, group string, passing []Instance) []string {
	var ids []string
	for _, a := range allocs {
		if a.TaskGroup != group || a.DesiredStatus != nomad.AllocDesiredStatusRun || a.ClientStatus != nomad.AllocClientStatusRunning ||
			(a.DeploymentStatus != nil && a.DeploymentStatus.Healthy != nil) || len(a.TaskStates) == 0 {
			continue
		}
		runs := true
		for _, ts := range a.TaskStates {
			runs = runs && ts != nil && ts.State == taskRunning
		}
		if runs && slices.ContainsFunc(passing, func(in Instance) bool { return strings.Contains(in.ID, a.ID) }) {
			ids = append(ids, a.ID)
		}
	}
	return ids
}

// retiring are the Consul instances of one route that belong to the
// version a promotion retires.
type retiring struct {
	IDs     []string
	Servers []string
}

// previousInstances are, by route name, the Consul instances of routes
// that belong to no allocation of deployment depID: the previous
// version's, which its promotion retires.
func (o *Orchestrator) previousInstances(ctx context.Context, depID string, routes []router.Route) (map[string]retiring, error) {
	out := map[string]retiring{}
	if len(routes) == 0 {
		return out, nil
	}
	allocs, _, err := o.nomad.DeploymentAllocations(ctx, depID, 0)
	if err != nil {
		return nil, fmt.Errorf("listing the allocations of deployment %s: %w", shortID(depID), err)
	}
	for _, r := range routes {
		instances, _, err := o.consul.Instances(ctx, r.Name, "", false, 0)
		if err != nil {
			return nil, fmt.Errorf("listing the containers of %s in Consul: %w", r.Function, err)
		}
		var rt retiring
		for _, in := range instances {
			if len(ofAllocs([]Instance{in}, allocs)) == 0 {
				rt.IDs = append(rt.IDs, in.ID)
				rt.Servers = append(rt.Servers, serverURLs([]Instance{in})...)
			}
		}
		out[r.Name] = rt
	}
	return out, nil
}

// awaitRetired waits until no instance of old (see previousInstances) is
// left in Consul, and the proxy serves each route of routes from its own
// router with none of old's servers (see awaitServersWithout), for at
// most a minute; the routes are waited for at once.
func (o *Orchestrator) awaitRetired(ctx context.Context, routes []router.Route, old map[string]retiring) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	errs := make([]error, len(routes))
	var wg sync.WaitGroup
	for i, r := range routes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gone := old[r.Name]
			var index uint64
			for {
				instances, last, err := o.consul.Instances(ctx, r.Name, "", false, index)
				if err != nil {
					errs[i] = fmt.Errorf("%s: waiting for the previous version's containers to leave Consul: %w", r.Function, err)
					return
				}
				if !slices.ContainsFunc(instances, func(in Instance) bool { return slices.Contains(gone.IDs, in.ID) }) {
					// Traefik's consulCatalog provider must see them gone
					// too before the split goes. An address a new
					// container took over is its own.
					held := serverURLs(instances)
					forbidden := slices.DeleteFunc(slices.Clone(gone.Servers), func(s string) bool { return slices.Contains(held, s) })
					errs[i] = o.awaitServersWithout(ctx, r, forbidden)
					return
				}
				index = last
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// promoteRevert promotes the deployment of a reverted job when it waits for
// a promotion: going back from promoted containers makes the previous
// version's containers canaries again, and nobody else will promote them.
func (o *Orchestrator) promoteRevert(ctx context.Context, jobID string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	dep, err := o.nomad.LatestDeployment(ctx, jobID)
	if err != nil || dep == nil {
		return
	}
	index := dep.ModifyIndex
	for {
		switch {
		case dep.Status != nomad.DeploymentStatusRunning:
			return
		case awaitingPromotion(dep):
			if err := o.nomad.PromoteDeployment(ctx, dep.ID); err != nil {
				o.log.Warn("promoting the reverted version", "job", jobID, "error", err)
			}
		}
		next, last, err := o.nomad.Deployment(ctx, dep.ID, index)
		if err != nil {
			return
		}
		dep, index = next, last
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
	allocs, _, err := o.nomad.DeploymentAllocations(ctx, depID, 0)
	if err != nil {
		return fmt.Errorf("listing the allocations of deployment %s: %w", shortID(depID), err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, r := range routes {
		var index uint64
		for {
			instances, last, err := o.consul.Instances(ctx, r.Name, "", false, index)
			if err != nil {
				return fmt.Errorf("%s: waiting for the previous version's containers to leave Consul: %w", r.Function, err)
			}
			if oldInstances(instances, allocs) == 0 {
				// Traefik's consulCatalog provider must see them gone too
				// before the split goes.
				if err := o.awaitServers(ctx, r, serverURLs(instances)); err != nil {
					return err
				}
				break
			}
			index = last
		}
	}
	return nil
}

// oldInstances counts the instances that belong to no allocation of
// allocs (Nomad puts the allocation ID in the service instance's ID).
func oldInstances(instances []Instance, allocs []*nomad.AllocationListStub) int {
	return len(instances) - len(ofAllocs(instances, allocs))
}

// Promote moves all traffic of an app's canary version to it and retires
// the previous version's containers; the canary version becomes live.
func (o *Orchestrator) Promote(ctx context.Context, caller Caller, req ChangeRequest) (*DeployResult, error) {
	return o.settleCanary(ctx, caller, req.AppRef, verdict{promote: true, what: "promoted"})
}

// Abort sends all traffic of an app's canary version back to the live
// version and removes the canaries.
func (o *Orchestrator) Abort(ctx context.Context, caller Caller, req ChangeRequest) (*DeployResult, error) {
	return o.settleCanary(ctx, caller, req.AppRef, verdict{what: "aborted"})
}

// verdict is a request to settle a canary.
type verdict struct {
	// promote it, or abort it.
	promote bool
	// what the history's event says happened.
	what string
	// version > 0 settles the canary only if it is still that version's.
	version int
}

// settleCanary carries out vd on the canary of the app ref names (see
// howToSettle) and records the outcome. The work and its record belong to
// the lock, not to the caller: a client that goes away does not leave a
// promotion half recorded.
func (o *Orchestrator) settleCanary(ctx context.Context, caller Caller, ref AppRef, vd verdict) (*DeployResult, error) {
	rec, err := o.resolve(ctx, caller, ref)
	if err != nil {
		return nil, err
	}
	held, unlock, err := o.store.Lock(ctx, rec.JobID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	began := time.Now()
	// Read again under the lock: another server may have settled it.
	rec, _, err = o.store.App(held, rec.JobID)
	if err != nil {
		return nil, err
	}
	if rec == nil || rec.Canary == nil || (vd.version > 0 && rec.Canary.Version != vd.version) {
		return nil, &NotFoundError{App: ref.App, Why: "it has no canary in progress (deploy with strategy = \"canary\" first)"}
	}
	st := rec.Canary
	v, err := o.version(held, rec, st.Version)
	if err != nil {
		return nil, err
	}
	log := o.log.With("job", rec.JobID, "version", st.Version)
	rctx, cancel := context.WithTimeout(held, 5*time.Minute)
	defer cancel()
	routes, rollErr := o.storedSplitRoutes(rec, v, st)
	if rollErr == nil {
		rollErr = o.carryOut(rctx, log.With("caller", caller.Name), rec, v, st, routes, vd)
	}
	if errors.Is(context.Cause(held), ErrLockLost) {
		// Another server may hold the lock now; it settles the canary.
		return nil, ErrLockLost
	}
	res := &DeployResult{Workspace: rec.Workspace, App: rec.App, JobID: rec.JobID, Version: st.Version, Changed: true,
		SpecHash: v.SpecHash, Kind: v.Kind}
	rollErr, err = o.recordSettlement(context.WithoutCancel(held), caller, rec, v, vd, rollErr)
	if err != nil {
		return nil, err
	}
	res.Duration = time.Since(began)
	log.Info("canary settled", "verdict", vd.what, "duration", res.Duration, "error", rollErr)
	return res, rollErr
}

// carryOut carries out vd on canary st of version v (routes are its split
// functions'): Nomad's canaries, a canary job of functions at zero, or
// both (a mixed canary: Nomad's part first, which a promotion must finish
// before the app's job is registered again with the functions at zero).
func (o *Orchestrator) carryOut(ctx context.Context, log hclog.Logger, rec *AppRecord, v *VersionRecord, st *CanaryState, routes []router.Route, vd verdict) error {
	zero, dep := canaryParts(o.router.KVRoot, st, routes)
	var errs []error
	depFailed := false
	if dep != nil {
		ds := dep.state
		var err error
		switch howToSettle(vd.promote, o.promoted(ctx, ds.DeploymentID)) {
		case finishPromotion:
			log.Info("finishing a promotion")
			if err = o.removeOrRecord(ctx, rec.JobID, ds.Keys); err != nil {
				errs = append(errs, err) // promoted all the same
			}
			err = nil
		case promoteCanary:
			log.Info("promoting canary")
			err = o.promoteCanary(ctx, rec.JobID, ds, dep.routes)
		case abortCanary:
			log.Info("aborting canary", "why", vd.what)
			err = o.discard(ctx, rec.JobID, ds.DeploymentID, ds.Keys, dep.routes, nil)
		}
		if err != nil {
			errs, depFailed = append(errs, err), true
		}
	}
	if zero != nil {
		zs := zero.state
		if vd.promote && !depFailed {
			log.Info("promoting canary at zero", "canary_job", zs.CanaryJob)
			errs = append(errs, o.promoteZero(ctx, rec, v, zs, zero.routes))
		} else {
			// An abort, or a promotion Nomad's part of failed: the
			// functions at zero stay with the live version too.
			log.Info("aborting canary at zero", "why", vd.what, "canary_job", zs.CanaryJob)
			errs = append(errs, o.discardZero(ctx, rec.JobID, zs, zero.routes, nil))
		}
	}
	if !vd.promote {
		errs = append(errs, o.restoreProxied(ctx, rec, v))
	}
	return errors.Join(errs...)
}

// promoteCanary sends every request to the canaries while Nomad replaces
// the old containers (the canaries stay up through the promotion), then
// promotes.
func (o *Orchestrator) promoteCanary(ctx context.Context, jobID string, st *CanaryState, routes []router.Route) error {
	keys, err := o.publishSplits(ctx, routes, 100, nil)
	st.Keys = union(st.Keys, keys)
	if err != nil {
		return o.discard(ctx, jobID, st.DeploymentID, st.Keys, routes, err)
	}
	return o.promote(ctx, jobID, st.Version, st.DeploymentID, st.Keys, routes)
}

// recordSettlement records how settling canary version v ended (rollErr
// nil: as vd asked): an event, the app without its canary, and the
// version live (with the scheduled and callable functions following it)
// or aborted or failed. It returns rollErr (or what syncing the
// functions returned) and any error recording it.
func (o *Orchestrator) recordSettlement(ctx context.Context, caller Caller, rec *AppRecord, v *VersionRecord, vd verdict, rollErr error) (error, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ev := Event{At: time.Now().UTC(), What: vd.what, Who: caller.Name, WhoID: caller.TokenID}
	if rollErr != nil {
		ev.What += ": " + rollErr.Error()
	}
	v.Events = append(v.Events, ev)
	if err := o.clearCanary(ctx, rec.JobID); err != nil {
		return rollErr, err
	}
	if vd.promote && rollErr == nil {
		// Scheduled and callable functions follow the version that is live.
		if rollErr = o.syncStored(ctx, rec, v); rollErr != nil {
			o.log.Warn("updating scheduled and callable functions", "job", rec.JobID, "error", rollErr)
		}
		return rollErr, o.finish(ctx, rec.JobID, v, nil)
	}
	if err := transition(v, settledStatus(vd.promote)); err != nil {
		return rollErr, err
	}
	v.FinishedAt = time.Now().UTC()
	if vd.promote {
		v.Error = rollErr.Error()
	}
	if err := o.store.PutVersion(ctx, rec.JobID, rec.Generation, v); err != nil {
		return rollErr, err
	}
	// A canary that never went live gives up the hostnames it claimed.
	return rollErr, o.releaseUnserved(ctx, rec.JobID)
}

// syncStored brings the periodic and callable jobs of rec's app to stored
// version v.
func (o *Orchestrator) syncStored(ctx context.Context, rec *AppRecord, v *VersionRecord) error {
	rendered, err := o.renderStored(ctx, rec, v)
	if err != nil {
		return err
	}
	if err := o.syncPeriodic(ctx, rec.JobID, rendered.Periodic, v.Version, rec.Rollovers); err != nil {
		return err
	}
	return o.syncCallable(ctx, rec.JobID, rendered.Callable, v.Version, rec.Rollovers)
}

// promoted reports whether Nomad promoted deployment depID.
func (o *Orchestrator) promoted(ctx context.Context, depID string) bool {
	dep, _, err := o.nomad.Deployment(ctx, depID, 0)
	return err == nil && promotedIn(dep)
}

// promotedIn reports whether any group of dep was promoted.
func promotedIn(dep *nomad.Deployment) bool {
	for _, g := range dep.TaskGroups {
		if g.Promoted {
			return true
		}
	}
	return false
}

func (o *Orchestrator) storedSplitRoutes(rec *AppRecord, v *VersionRecord, st *CanaryState) ([]router.Route, error) {
	return o.storedRoutes(rec, v, func(r router.Route) bool { return slices.Contains(st.Functions, r.Function) })
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
// promotions a stopped server left, aborts canaries whose containers
// fail their health checks (see canaryWatch), and removes traffic splits
// whose removal failed (see removeOrRecord), every every until ctx ends.
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
			switch {
			case rec.Canary != nil:
				o.watchCanary(ctx, rec, sick)
			case len(rec.StaleSplits) > 0:
				o.retryStaleSplits(ctx, rec, every)
			}
		}
	}
}

// watchCanary checks rec's canary once and acts on it.
func (o *Orchestrator) watchCanary(ctx context.Context, rec *AppRecord, sick map[string]int) {
	st := rec.Canary
	promoted := st.DeploymentID != "" && o.promoted(ctx, st.DeploymentID)
	healthy := promoted || o.canariesHealthy(ctx, rec)
	// A canary at zero has no deployment: its canary job and version
	// name it.
	key := st.DeploymentID
	if key == "" {
		key = fmt.Sprintf("%s@%d", st.CanaryJob, st.Version)
	}
	action, n := canaryWatch(st, time.Now(), promoted, healthy, sick[key])
	if sick[key] = n; n == 0 {
		delete(sick, key)
	}
	ref := AppRef{Workspace: rec.Workspace, Environment: rec.Environment, App: rec.App, Serve: rec.Serve}
	var err error
	switch action {
	case watchNothing:
		return
	case watchFinish:
		_, err = o.settleCanary(ctx, Caravan, ref, verdict{promote: true, version: st.Version,
			what: "promoted (finished after a caravan server stopped)"})
	case watchPromote:
		_, err = o.settleCanary(ctx, Caller{Name: "auto-promote", Workspace: "*"}, ref, verdict{promote: true, version: st.Version,
			what: "promoted after " + st.PromoteAt.Sub(st.Since).String()})
	case watchAbort:
		o.log.Warn("canary failed its health checks; aborting", "job", rec.JobID, "version", st.Version)
		_, err = o.settleCanary(ctx, Caravan, ref, verdict{version: st.Version,
			what: "aborted automatically: canaries failed their health checks"})
	}
	var nf *NotFoundError
	if err != nil && !errors.As(err, &nf) {
		o.log.Warn("settling a canary", "job", rec.JobID, "version", st.Version, "error", err)
	}
}

// canariesHealthy reports whether every split function of rec's canary
// still has a canary passing its checks, and Nomad has not failed it.
func (o *Orchestrator) canariesHealthy(ctx context.Context, rec *AppRecord) bool {
	st := rec.Canary
	if st.CanaryJob != "" && !o.canaryJobHealthy(ctx, st) {
		return false
	}
	if st.DeploymentID == "" {
		return true
	}
	dep, _, err := o.nomad.Deployment(ctx, st.DeploymentID, 0)
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
	routes, err := o.storedSplitRoutes(rec, v, st)
	if err != nil {
		return true
	}
	// Nomad's canaries only: the canary job's functions may run none.
	_, part := canaryParts(o.router.KVRoot, st, routes)
	for _, r := range part.routes {
		servers, err := o.canaryServers(ctx, r)
		if err == nil && len(servers) == 0 {
			return false
		}
	}
	return true
}

// restoreProxied publishes the live version's proxied routes and records
// again in place of those aborted version v published at its deploy (see
// publishProxied): its live containers serve on under their own settings.
func (o *Orchestrator) restoreProxied(ctx context.Context, rec *AppRecord, v *VersionRecord) error {
	if rec.LiveVersion == 0 {
		return nil
	}
	newRoutes, err := o.storedRoutes(rec, v, func(r router.Route) bool { return r.Proxied })
	if err != nil {
		return err
	}
	return o.restoreLiveProxied(ctx, rec, newRoutes)
}

// restoreLiveProxied publishes the live version of rec's proxied routes
// and records in place of newRoutes, those a version that does not go
// live published at its deploy (see publishProxied), and waits until
// Traefik serves them: a discarded canary hands its requests back to the
// live containers, under the live version's routers and settings.
func (o *Orchestrator) restoreLiveProxied(ctx context.Context, rec *AppRecord, newRoutes []router.Route) error {
	if rec.LiveVersion == 0 || !slices.ContainsFunc(newRoutes, func(r router.Route) bool { return r.Proxied }) {
		return nil
	}
	live, err := o.version(ctx, rec, rec.LiveVersion)
	if err != nil {
		return err
	}
	app, err := storedApp(rec, live)
	if err != nil {
		return err
	}
	liveRoutes := router.Routes(app, o.router)
	pairs, err := proxiedKV(o.router.KVRoot, app, rec.JobID, liveRoutes)
	if err != nil {
		return err
	}
	if err := o.writeKV(ctx, publishOps(pairs, proxiedKeys(o.router.KVRoot, newRoutes))); err != nil {
		return fmt.Errorf("restoring the live version's routes of autoscaled functions: %w", err)
	}
	if err := o.awaitRouters(ctx, proxiedRouters(liveRoutes, o.router.ProxiedService())); err != nil {
		return fmt.Errorf("restoring the live version's routes of autoscaled functions: %w", err)
	}
	return nil
}

// taskRunning is the State of a nomad.TaskState that runs (the api
// package names no constant for it).
const taskRunning = "running"
