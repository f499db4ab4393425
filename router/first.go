package router

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/traefik/traefik/v3/pkg/config/dynamic"
)

// A brand-new app's containers take traffic from their route's tags only
// once Consul's first check passes, which Consul runs at a random moment
// within the check's interval after registration, mostly before the
// process listens: up to a second after the container could answer.
// First routes close that gap: caravan server probes a new container
// itself and, as soon as it answers its health path, publishes a copy of
// the route in Traefik's KV pointing at that container alone. The copy
// ranks just below the route's own routers, so the moment Consul's route
// serves it takes every request, and caravan then removes the copy (Consul
// deletes it anyway when its session lapses: see the orchestrator).

// FirstSuffix ends the name of every router, middleware and service of a
// first route.
const FirstSuffix = "--first"

// FirstPriorityOffset is how far below its original each first router
// ranks: below the route's own routers (the probe router is one above the
// generated hostname's), and still above the next band (see
// PriorityGenerated).
const FirstPriorityOffset = 2

// First renders the first route of r (not Proxied) to servers: r's
// routers and middlewares under names ending in FirstSuffix, each router
// FirstPriorityOffset below its original and sending to a service of
// servers alone.
func First(r Route, servers []string) (*dynamic.Configuration, error) {
	if r.Proxied {
		return nil, fmt.Errorf("route %s goes through caravan's proxies: it has no first route", r.Name)
	}
	if len(servers) == 0 {
		return nil, fmt.Errorf("first route of %s: no server", r.Name)
	}
	var c dynamic.Configuration
	b, err := json.Marshal(r.Config)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	svc := FirstService(r)
	passHost := true
	lb := &dynamic.ServersLoadBalancer{PassHostHeader: &passHost}
	for _, s := range slices.Sorted(slices.Values(servers)) {
		lb.Servers = append(lb.Servers, dynamic.Server{URL: s})
	}
	out := &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{
		Routers:     map[string]*dynamic.Router{},
		Middlewares: map[string]*dynamic.Middleware{},
		Services:    map[string]*dynamic.Service{svc: {LoadBalancer: lb}},
	}}
	for name, rt := range c.HTTP.Routers {
		rt.Service = svc
		rt.Priority -= FirstPriorityOffset
		for i, m := range rt.Middlewares {
			rt.Middlewares[i] = m + FirstSuffix
		}
		out.HTTP.Routers[name+FirstSuffix] = rt
	}
	for name, mw := range c.HTTP.Middlewares {
		out.HTTP.Middlewares[name+FirstSuffix] = mw
	}
	return out, nil
}

// FirstService names the Traefik service of r's first route.
func FirstService(r Route) string { return r.Name + FirstSuffix }

// FirstRouters are the names of the routers of r's first route, sorted.
func FirstRouters(r Route) []string {
	var out []string
	for name := range maps.Keys(r.Config.HTTP.Routers) {
		out = append(out, name+FirstSuffix)
	}
	slices.Sort(out)
	return out
}
