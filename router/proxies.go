package router

import (
	"fmt"
	"time"

	ptypes "github.com/traefik/paerser/types"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
)

// ProxiesName is the Traefik service (in its KV provider) the routers of
// autoscaled functions send to by default (DefaultProxyService): a
// failover chain over every caravan proxy, in the order of ProxyServices,
// so that one proxy at a time carries every autoscaled function's
// requests. One proxy, because each proxy holds a container to max_inputs
// by its own count: two proxies sharing a function would each give a
// container max_inputs. The next proxy takes over when Traefik's health
// check of the one before fails.
const ProxiesName = "caravan-proxies"

// ProxyServer is one caravan proxy as Traefik reaches it: its data URL
// (http://host:port) and the port of its admin address, where Traefik
// checks its /healthz.
type ProxyServer struct {
	URL        string
	HealthPort int
}

// ProxyHealthInterval is how often Traefik checks each proxy, and
// ProxyHealthTimeout how long a check may take: a proxy that died is
// failed over within an interval (connections to it are refused at once).
const (
	ProxyHealthInterval = 250 * time.Millisecond
	ProxyHealthTimeout  = time.Second
)

// A proxied route's Retry middleware: a request no proxy accepted (a
// dead proxy refused its connection) is tried up to ProxyRetryAttempts
// times in all, with backoff from ProxyRetryInterval (Traefik grows it
// to twice that over the attempts: about 100, 120, 140, 170 ms, ±50 %),
// which spans a health-check interval and more: by then the failover
// chain sends it to the next proxy.
const (
	ProxyRetryAttempts = 5
	ProxyRetryInterval = 100 * time.Millisecond
)

// DirectRetryAttempts is how many times in all a route straight to its
// containers (not Proxied) tries a request that reached none of them:
// its Traefik Retry middleware, last in the chain. Traefik's retry (v3.6)
// sends a request again only while nothing of it has been written to a
// container: the attempt's connection failed (refused, as a dead
// container's port refuses it, or its dial timed out) before the request's
// headers were written to it (httptrace WroteHeaders), and the body is
// read after the headers, so no byte of any request, idempotent or not,
// reaches a container twice. A request a container took and then lost
// (it died mid-request) fails as before. Each attempt goes through the
// service's load balancer again, whose round robin gives it the next
// container: a container that died is skipped until Consul's check of it
// fails and Traefik drops it (a second or so), and only the requests it
// held fail. No interval: the next attempt is to another container, at
// once (and Traefik's label encoder writes a duration in nanoseconds
// that its decoder reads as seconds, so tags cannot carry one). When
// every container is gone, the attempts cost three refused connections
// before the 502.
//
// Traefik's passive health checks (passiveHealthCheck, 3.6) are not
// used: they count a container's own 5xx answers as failures, so a
// function that answers 500 would be taken out of its service.
const DirectRetryAttempts = 3

// ProxyServices renders the Traefik services of proxies (in the order
// given, the first preferred) for the KV provider: caravan-proxy-<i>, a
// load balancer of proxy i alone, health-checked on its admin port, and
// ProxiesName, falling over from one to the next (caravan-proxies-<i>
// chain the rest). Every name starts with ProxiesPrefix.
func ProxyServices(proxies []ProxyServer) *dynamic.Configuration {
	services := map[string]*dynamic.Service{}
	passHost := true
	one := func(i int) string { return fmt.Sprintf("caravan-proxy-%d", i) }
	for i, p := range proxies {
		services[one(i)] = &dynamic.Service{LoadBalancer: &dynamic.ServersLoadBalancer{
			PassHostHeader: &passHost,
			Servers:        []dynamic.Server{{URL: p.URL}},
			HealthCheck: &dynamic.ServerHealthCheck{Path: "/healthz", Port: p.HealthPort,
				Interval: ptypes.Duration(ProxyHealthInterval), Timeout: ptypes.Duration(ProxyHealthTimeout)},
		}}
	}
	chain := func(i int) string {
		if i == 0 {
			return ProxiesName
		}
		return fmt.Sprintf("%s-%d", ProxiesName, i)
	}
	switch n := len(proxies); n {
	case 0:
	case 1:
		w := 1
		services[ProxiesName] = &dynamic.Service{Weighted: &dynamic.WeightedRoundRobin{Services: []dynamic.WRRService{{Name: one(0), Weight: &w}}}}
	default:
		// chain(i) tries proxy i, then chain(i+1); the last link tries
		// the last two. A link needs only its own proxy's health (its
		// load balancer's check): a fallback is used when the proxy
		// before it is down, whatever its own state, so no link reports
		// its health to the one before. Nor could it through Traefik's KV
		// provider: Failover.HealthCheck is an empty section, which its
		// decoder refuses ("healthCheck cannot be a standalone element"),
		// and then the whole of Traefik's KV configuration, every proxied
		// route and split with it, stays as it was until the key goes.
		for i := 0; i < n-1; i++ {
			next := chain(i + 1)
			if i == n-2 {
				next = one(n - 1)
			}
			services[chain(i)] = &dynamic.Service{Failover: &dynamic.Failover{Service: one(i), Fallback: next}}
		}
	}
	return &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{Services: services}}
}

// ProxiesPrefix begins the name of every service ProxyServices renders.
const ProxiesPrefix = "caravan-prox"
