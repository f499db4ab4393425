package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/caravanhq/caravan/autoscale"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/hcl/v2"
	nomad "github.com/hashicorp/nomad/api"
)

// Autoscaled functions (router.Proxied) are reached through caravan's
// proxies, and their routes must outlive their last container (at zero
// they have none): a deploy publishes each one's routers in Traefik's KV
// and its autoscale.Record under proxy.SettingsKVPrefix, replacing what the
// live version published; a stop removes them. Their group's count is the
// autoscaler's: a deploy carries the running count over (carryCounts)
// rather than registering with Nomad's PreserveCounts, which is the whole
// job's and would keep a fixed function's count when its min_containers
// changes. A deploy does not start a container of a function at zero
// (Modal's semantics): it is probed only when it runs some (probeable).

// proxiedKV is what a version publishes for its proxied routes: their
// routers and middlewares (under rootKey) and their records.
func proxiedKV(rootKey string, app *spec.App, jobID string, routes []router.Route) (map[string]string, error) {
	out := map[string]string{}
	for _, r := range routes {
		if !r.Proxied {
			continue
		}
		fn := functionNamed(app, r.Function)
		if fn == nil || fn.Scaling == nil {
			return nil, fmt.Errorf("proxied route %s has no function with scaling settings", r.Name)
		}
		pairs, err := proxiedPairs(rootKey, r)
		if err != nil {
			return nil, err
		}
		maps.Copy(out, pairs)
		b, err := json.Marshal(autoscale.NewRecord(jobID, fn.Name, fn.Scaling))
		if err != nil {
			return nil, err
		}
		out[proxy.SettingsKVPrefix+r.Name] = string(b)
	}
	return out, nil
}

// proxiedKeys are the keys proxiedKV writes for routes (values aside).
func proxiedKeys(rootKey string, routes []router.Route) []string {
	var keys []string
	for _, r := range routes {
		if !r.Proxied {
			continue
		}
		pairs, err := proxiedPairs(rootKey, r)
		if err != nil {
			continue
		}
		keys = append(keys, slices.Collect(maps.Keys(pairs))...)
		keys = append(keys, proxy.SettingsKVPrefix+r.Name)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// proxiedPairs are the KV pairs of proxied route r's routers and
// middlewares, and of its preview's (canary and blue-green), which also
// go through the proxies: a request for it finds no canary and is 404
// until a rollout starts some.
func proxiedPairs(rootKey string, r router.Route) (map[string]string, error) {
	pairs, err := r.KV(rootKey)
	if err != nil || r.Preview == nil || !r.Preview.Proxied {
		return pairs, err
	}
	preview, err := r.Preview.KV(rootKey)
	if err != nil {
		return nil, err
	}
	maps.Copy(pairs, preview)
	return pairs, nil
}

// publishOps writes pairs (routers last) and then deletes the old keys
// pairs has not, so Traefik never sees a router without its middlewares.
func publishOps(pairs map[string]string, old []string) []KVOp {
	ops := setOps(pairs)
	var gone []string
	for _, k := range old {
		if _, ok := pairs[k]; !ok {
			gone = append(gone, k)
		}
	}
	return append(ops, deleteOps(gone)...)
}

func functionNamed(app *spec.App, name string) *spec.Function {
	for _, fn := range app.Functions {
		if fn.Name == name {
			return fn
		}
	}
	return nil
}

// publishProxied publishes r's proxied routes, replacing what its live
// version published.
func (o *Orchestrator) publishProxied(ctx context.Context, r release) error {
	pairs, err := proxiedKV(o.router.KVRoot, r.app, *r.rendered.Job.ID, r.rendered.Routes)
	if err != nil {
		return err
	}
	var old []string
	if r.rec.LiveVersion > 0 {
		if v, err := o.version(ctx, r.rec, r.rec.LiveVersion); err == nil {
			if routes, err := o.storedRoutes(r.rec, v, func(rt router.Route) bool { return rt.Proxied }); err == nil {
				old = proxiedKeys(o.router.KVRoot, routes)
			}
		}
	}
	if len(pairs) == 0 && len(old) == 0 {
		return nil
	}
	if err := o.writeKV(ctx, publishOps(pairs, old)); err != nil {
		return &RolloutError{Version: r.version, Cause: fmt.Sprintf("publishing the routes of autoscaled functions: %v", err)}
	}
	// A deploy of a function at zero returns at once: Traefik serves its
	// routers by then, so its first request queues rather than 404s.
	if err := o.awaitRouters(ctx, proxiedRouters(r.rendered.Routes, o.router.ProxiedService())); err != nil {
		return &RolloutError{Version: r.version, Cause: fmt.Sprintf("Traefik does not serve the routes of autoscaled functions: %v", err)}
	}
	return nil
}

// proxiedRouters maps the routers (named with their provider) of the
// proxied routes among routes, and of their previews, to service, the
// proxies' (see awaitRouters).
func proxiedRouters(routes []router.Route, service string) map[string]string {
	want := map[string]string{}
	for _, rt := range routes {
		if !rt.Proxied {
			continue
		}
		for _, x := range []*router.Route{&rt, rt.Preview} {
			if x == nil || !x.Proxied {
				continue
			}
			for name := range x.Config.HTTP.Routers {
				want[name+"@"+kvProvider] = service
			}
		}
	}
	return want
}

// unpublishProxied removes what routes' versions published.
func (o *Orchestrator) unpublishProxied(ctx context.Context, routes []router.Route) error {
	keys := proxiedKeys(o.router.KVRoot, routes)
	if len(keys) == 0 {
		return nil
	}
	return o.writeKV(ctx, deleteOps(keys))
}

// carryCounts gives each proxied group of job the count it runs with in
// current (the autoscaler's), within the group's [min, max] of the new
// version; a rolling update's canaries follow the count, so the whole set
// starts beside the old one.
func carryCounts(job, current *nomad.Job, app *spec.App, routes []router.Route) {
	if current == nil || stopped(current) {
		return
	}
	running := groupCounts(current)
	for _, r := range routes {
		fn := functionNamed(app, r.Function)
		if !r.Proxied || fn == nil || fn.Scaling == nil {
			continue
		}
		n, ok := running[r.Function]
		if !ok {
			continue
		}
		n = max(min(n, fn.Scaling.MaxContainers), fn.Scaling.MinContainers)
		for _, tg := range job.TaskGroups {
			if *tg.Name != r.Function {
				continue
			}
			if u := tg.Update; u != nil {
				switch app.DeployStrategy() {
				case spec.StrategyRolling:
					u.Canary, u.AutoPromote = ptr(n), ptr(n > 0)
				case spec.StrategyBlueGreen:
					// A full set beside the running one.
					u.Canary = ptr(n)
				case spec.StrategyCanary:
					canaries, _, _ := app.CanarySettings()
					u.Canary = ptr(min(canaries, n))
				}
				u.MaxParallel = ptr(max(n, 1))
			}
			tg.Count = ptr(n)
		}
	}
}

// idleSplits are the diagnostics of a canary or blue-green version whose
// proxied functions run no container when it is deployed (job's counts
// are carried over, see carryCounts; current is the job that ran before,
// nil for none): with nothing to split, Nomad places no canary of them and
// the version is live at once, its first request starting it, as a
// rolling deploy at zero does.
func idleSplits(app *spec.App, job, current *nomad.Job, routes []router.Route) hcl.Diagnostics {
	if current == nil || stopped(current) || app.DeployStrategy() == spec.StrategyRolling {
		return nil
	}
	counts := groupCounts(job)
	var diags hcl.Diagnostics
	for _, r := range routes {
		fn := functionNamed(app, r.Function)
		if !r.Proxied || fn == nil || counts[r.Function] != 0 {
			continue
		}
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Subject: fn.DefRange.Ptr(),
			Summary: fmt.Sprintf("Function %q is at zero: nothing to split", fn.Name),
			Detail: fmt.Sprintf("It runs no container, so the %s deploy has no canary of it: this version serves it at once, "+
				"and its next request starts the new version's first container.", app.DeployStrategy())})
	}
	return diags
}

// groupCounts maps each task group of job to its count.
func groupCounts(job *nomad.Job) map[string]int {
	out := map[string]int{}
	for _, tg := range job.TaskGroups {
		if tg.Name != nil && tg.Count != nil {
			out[*tg.Name] = *tg.Count
		}
	}
	return out
}

// probeable are the routes of rendered to probe: all but those of proxied
// functions that run no container (at zero, a deploy starts none).
func probeable(rendered *jobs.Rendered) []router.Route {
	counts := groupCounts(rendered.Job)
	var out []router.Route
	for _, r := range rendered.Routes {
		if r.Proxied && counts[r.Function] == 0 {
			continue
		}
		out = append(out, r)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// holdWarm gives each autoscaled function of job, a canary version of app
// (current: the live job), that runs no container one container (within
// its max_containers) when the version also changes a function that runs
// containers. Nomad's canaries of that function keep the job's deployment
// open until the canary is promoted or aborted, and Nomad scales no group
// of a job while its deployment runs (the autoscaler holds every count
// until then): a function at zero could not start for its requests. The
// autoscaler takes it back to zero after its scaledown_window once the
// canary is settled. It returns the functions it gave a container, sorted.
func holdWarm(app *spec.App, job, current *nomad.Job) []string {
	if app.DeployStrategy() != spec.StrategyCanary || current == nil || stopped(current) {
		return nil
	}
	old, next := jobs.FunctionHashes(current, nil), jobs.FunctionHashes(job, nil)
	counts := groupCounts(job)
	canaries := false
	for name, h := range next {
		canaries = canaries || (old[name] != "" && old[name] != h && counts[name] > 0)
	}
	if !canaries {
		return nil
	}
	var out []string
	for _, tg := range job.TaskGroups {
		fn := functionNamed(app, *tg.Name)
		if fn == nil || fn.Scaling == nil || tg.Count == nil || *tg.Count != 0 || fn.Scaling.MaxContainers < 1 {
			continue
		}
		tg.Count = ptr(1)
		out = append(out, *tg.Name)
	}
	slices.Sort(out)
	return out
}
