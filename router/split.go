package router

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	ptypes "github.com/traefik/paerser/types"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
)

// Split is how a web function's requests are shared while a new version
// rolls out beside the live one (strategies canary and blue-green). It is
// published through Traefik's Consul KV provider rather than as service
// tags: a router for the same hostnames, ranked above the route's own, that
// sends Weight percent of requests to the new containers and the rest to
// the live version's service.
//
// The new containers are listed by address, not by their Consul service:
// their registration changes tags when Nomad promotes them, and a router
// whose service vanished would drop requests. Traefik checks each address
// on the route's health path and stops sending to one that fails; once none
// passes, a failover service sends their share to the live version.
//
// A proxied route's split (an autoscaled function: Route.Proxied) sends
// every request to caravan's proxies, as the route does, and lets the proxy
// split them: its routers add a middleware that sets HeaderSplit to the
// weight and the new containers' addresses, and the proxy gives exactly
// Weight of every 100 requests to those containers and the rest to the live
// ones (see proxy.HeaderSplit). The proxy knows the containers from Consul,
// so nothing is health-checked here; a split whose new containers all left
// Consul sends their share to the live ones, as the failover does.
type Split struct {
	// Route is the new version's route: the rule, TLS and middlewares
	// the split router uses.
	Route Route
	// Servers are the new containers' URLs, such as http://10.0.0.5:23001.
	Servers []string
	// Weight is the percentage of requests the new containers receive;
	// 100 sends them all (blue-green's switch).
	Weight int
	// Function, for a proxied route, sends Weight percent of requests to
	// another function (its Consul service) instead of to Servers: a
	// canary version deployed while the function was at zero runs as a
	// function of its own (see Route.FunctionPreview), scaled from zero
	// by its own traffic.
	Function string
}

// SplitPriority is how far a split's routers rank above the route's own
// routers they stand in for: above them, and below the next band of
// priorities (see PriorityGenerated), so a split takes its own route's
// requests and no other app's.
const SplitPriority = 1 << 19

// SplitHealthInterval is how often Traefik checks a split's new containers,
// and SplitHealthTimeout how long one check may take: generous, so a slow
// answer under load does not take a container out.
const (
	SplitHealthInterval = time.Second
	SplitHealthTimeout  = 3 * time.Second
)

// Names of the Traefik objects of a split: the router and the weighted
// service are <route>-split, the new containers' service <route>-next, and
// <route>-next-or-live fails over from them to the live version.
func splitName(r Route) string    { return r.Name + "-split" }
func nextName(r Route) string     { return r.Name + "-next" }
func failoverName(r Route) string { return r.Name + "-next-or-live" }

// splitRouterName names the split router standing in for the route's
// router of that priority: <route>-split for the generated hostname's,
// with the suffix of the custom domains' routers for theirs.
func splitRouterName(r Route, priority int) string {
	switch priority {
	case PriorityCustom:
		return splitName(r) + customSuffix
	case PriorityWildcard:
		return splitName(r) + wildcardSuffix
	}
	return splitName(r)
}

// StableService is the Traefik service (from the consulCatalog provider) of
// a route's live containers.
func StableService(r Route) string { return r.Name + "@consulcatalog" }

// Config renders s as Traefik dynamic configuration for the KV provider.
func (s Split) Config() *dynamic.Configuration {
	r := s.Route
	var routers []*dynamic.Router
	routerMap := map[string]*dynamic.Router{}
	for _, name := range slices.Sorted(maps.Keys(r.Config.HTTP.Routers)) {
		if r.Config.HTTP.Routers[name].Priority == PriorityProbe {
			// The probe router stays the route's: a split outranks it,
			// and its name would be the generated router's.
			continue
		}
		c := *r.Config.HTTP.Routers[name]
		rt := &c
		rt.Middlewares = slices.Clone(rt.Middlewares)
		routerMap[splitRouterName(r, rt.Priority)] = rt
		rt.Priority += SplitPriority
		routers = append(routers, rt)
	}
	if r.Proxied {
		return s.proxiedConfig(routers, routerMap)
	}

	passHost := true
	next := &dynamic.Service{LoadBalancer: &dynamic.ServersLoadBalancer{
		PassHostHeader: &passHost,
		HealthCheck: &dynamic.ServerHealthCheck{
			Path: r.HealthPath, Interval: ptypes.Duration(SplitHealthInterval), Timeout: ptypes.Duration(SplitHealthTimeout),
		},
	}}
	for _, u := range s.Servers {
		next.LoadBalancer.Servers = append(next.LoadBalancer.Servers, dynamic.Server{URL: u})
	}
	services := map[string]*dynamic.Service{
		nextName(r):     next,
		failoverName(r): {Failover: &dynamic.Failover{Service: nextName(r), Fallback: StableService(r)}},
	}
	service := failoverName(r)
	if s.Weight < 100 {
		stable, canary := 100-s.Weight, s.Weight
		services[splitName(r)] = &dynamic.Service{Weighted: &dynamic.WeightedRoundRobin{
			Services: []dynamic.WRRService{
				{Name: StableService(r), Weight: &stable},
				{Name: failoverName(r), Weight: &canary},
			},
		}}
		service = splitName(r)
	}
	for _, rt := range routers {
		rt.Service = service
	}
	return &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{
		Routers:     routerMap,
		Services:    services,
		Middlewares: maps.Clone(r.Config.HTTP.Middlewares),
	}}
}

// proxiedConfig is Config for a proxied route: its routers, with the
// split's header last (after the function's middleware, which removes any
// HeaderSplit; before the proxy plugin inside Traefik, which answers),
// still sending to the proxies. The route's own middlewares
// are in Traefik's KV already (published with the route), so the split
// adds only its own.
func (s Split) proxiedConfig(routers []*dynamic.Router, routerMap map[string]*dynamic.Router) *dynamic.Configuration {
	r := s.Route
	addrs := make([]string, 0, len(s.Servers))
	for _, u := range s.Servers {
		addrs = append(addrs, strings.TrimPrefix(u, "http://"))
	}
	slices.Sort(addrs)
	value := strconv.Itoa(s.Weight) + ";" + strings.Join(addrs, ",")
	if s.Function != "" {
		value = strconv.Itoa(s.Weight) + ";" + splitFunctionPrefix + s.Function
	}
	mw := splitName(r)
	for _, rt := range routers {
		rt.Middlewares = beforeProxy(r.Config.HTTP.Middlewares, rt.Middlewares, mw)
	}
	return &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{
		Routers:  routerMap,
		Services: map[string]*dynamic.Service{},
		Middlewares: map[string]*dynamic.Middleware{mw: {Headers: &dynamic.Headers{
			CustomRequestHeaders: map[string]string{HeaderSplit: value},
		}}},
	}}
}

// splitFunctionPrefix begins HeaderSplit's list for a split to another
// function (proxy.SplitFunctionHeader).
const splitFunctionPrefix = "function="

// SplitPrefixes are the KV key prefixes under rootKey that hold the
// split of route r (and nothing else): removing them removes it.
func SplitPrefixes(rootKey string, r Route) []string {
	prefixes := []string{
		rootKey + "/http/routers/" + splitName(r) + "/",
		rootKey + "/http/routers/" + splitName(r) + customSuffix + "/",
		rootKey + "/http/routers/" + splitName(r) + wildcardSuffix + "/",
		rootKey + "/http/services/" + splitName(r) + "/",
		rootKey + "/http/services/" + nextName(r) + "/",
		rootKey + "/http/services/" + failoverName(r) + "/",
	}
	if r.Proxied {
		// Its own middleware alone: the route's are the route's.
		prefixes = append(prefixes, rootKey+"/http/middlewares/"+splitName(r)+"/")
	} else {
		for name := range r.Config.HTTP.Middlewares {
			prefixes = append(prefixes, rootKey+"/http/middlewares/"+name+"/")
		}
	}
	slices.Sort(prefixes)
	return prefixes
}

// KV flattens c into the keys and values Traefik's KV providers read under
// rootKey (such as "traefik"): maps and structs become path segments,
// lists their indexes, and an empty section (`healthCheck: {}`) an empty
// value.
func KV(rootKey string, c *dynamic.Configuration) (map[string]string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding split configuration: %w", err)
	}
	var tree any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&tree); err != nil {
		return nil, err
	}
	out := map[string]string{}
	flatten(rootKey, tree, out)
	return out, nil
}

func flatten(key string, v any, out map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		if len(v) == 0 {
			out[key] = ""
		}
		for k, child := range v {
			flatten(key+"/"+k, child, out)
		}
	case []any:
		for i, child := range v {
			flatten(key+"/"+strconv.Itoa(i), child, out)
		}
	case string:
		out[key] = v
	case nil:
	default:
		out[key] = fmt.Sprint(v)
	}
}
