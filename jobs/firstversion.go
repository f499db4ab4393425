package jobs

import "github.com/caravanhq/caravan/router"

// FirstVersionCheckStatus is the status Consul gives the check of a
// container that starts routable (see StartsRoutable) until the check
// first runs. Consul runs a new check's first probe at a random moment
// within its interval (CheckInterval): a container that listens at once
// would otherwise wait up to a second for its route.
//
// "warning" and not "passing": Traefik routes to warning instances (its
// consulCatalog strictChecks default to passing and warning), while
// Nomad's deployment health (checks with the default on_update,
// require_healthy) counts only passing ones, so a container that never
// listens is never called healthy by Nomad, and caravan's deploy still
// ends only on a real 2xx from its health path through Traefik. The first
// run of the check sets the true status: a container that does not listen
// yet is taken out of the route until it does.
const FirstVersionCheckStatus = "warning" // Consul's api.HealthWarning

// StartsRoutable decides whether a function's containers may take traffic
// from the moment Consul registers them, before their first check: only
// where no other container could answer in their place while they start.
// That is a function of an app's first version (nothing of the app runs in
// Nomad; see MarkFirstVersion) routed by Traefik straight to its
// containers (not through caravan's proxies, which scale it within the
// version), with one container (a replacement Nomad reschedules within the version has none
// beside it that could answer). Any later version renders the check
// without it, so a rolling update's replacement never takes a request
// before its check passes.
func StartsRoutable(count int, r router.Route) bool {
	return count == 1 && !r.Proxied
}

// MarkFirstVersion sets FirstVersionCheckStatus as the initial status of
// the checks of every group of r that StartsRoutable, r being the first
// version of its app, and returns those groups' routes. The groups' hashes
// (MetaGroupHash) are left as rendered: the initial status says how a
// container starts, not what runs, so the next deploy of the same spec is
// still a no-op, and one that renders without it (every later version)
// changes no unchanged function (Nomad leaves the registered check, whose
// ID does not depend on its initial status, as it is).
func MarkFirstVersion(r *Rendered) []router.Route {
	byFunction := map[string]router.Route{}
	for _, rt := range r.Routes {
		byFunction[rt.Function] = rt
	}
	var marked []router.Route
	for _, tg := range r.Job.TaskGroups {
		rt, ok := byFunction[*tg.Name]
		if !ok || tg.Count == nil || !StartsRoutable(*tg.Count, rt) {
			continue
		}
		checks := 0
		for _, s := range tg.Services {
			for i := range s.Checks {
				s.Checks[i].InitialStatus = FirstVersionCheckStatus
				checks++
			}
		}
		if checks > 0 {
			marked = append(marked, rt)
		}
	}
	return marked
}
