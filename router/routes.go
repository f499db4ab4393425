package router

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caravanhq/caravan/spec"
	ptypes "github.com/traefik/paerser/types"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
	"github.com/traefik/traefik/v3/pkg/config/label"
	"github.com/traefik/traefik/v3/pkg/types"
)

// Config is how the routes of every app are served.
type Config struct {
	// Domain is the parent of every generated hostname, e.g. "caravan.localhost".
	Domain string
	// EntryPoint is the Traefik entry point that serves HTTPS, e.g. "websecure".
	EntryPoint string
	// CertResolver is the Traefik ACME resolver that issues certificates.
	// Empty serves TLS with Traefik's default certificate.
	CertResolver string
	// DNSCertResolver answers DNS-01 challenges; routes with a wildcard
	// custom domain use it (ACME issues wildcards only through DNS-01).
	// Empty leaves them on CertResolver.
	DNSCertResolver string
	// HTTPSPort is the port URLs carry; 0 or 443 leaves it out.
	HTTPSPort int
	// BodyLimitPlugin is the alias of caravan's body-limit plugin in
	// Traefik's static configuration; empty leaves bodies unlimited.
	BodyLimitPlugin string
	// AuthURL is caravan server's proxy-auth endpoint, which Traefik's
	// forwardAuth asks about requests to requires_proxy_auth functions.
	AuthURL string
	// KVRoot is the root key of Traefik's Consul KV provider, under which
	// caravan publishes traffic splits (canary and blue-green rollouts).
	KVRoot string
	// BundleURL is caravan server's base URL as Nomad's clients reach it
	// ("http://10.0.0.5:7474"): every task's artifact block fetches the
	// function's code bundle from it. Not a routing setting, but one more
	// address of the server that what Render makes depends on.
	BundleURL string
	// DrainDelay is how long a web container keeps serving after it leaves
	// Consul before Nomad stops it (the group's shutdown_delay): longer
	// than the proxy takes to stop routing to it, which is Consul's
	// propagation plus Traefik's providersThrottleDuration (200 ms in the
	// local stack; Traefik's default is 2 s). Zero uses DefaultDrainDelay.
	DrainDelay time.Duration
	// ProxyService is the Traefik service of caravan's proxies (such as
	// "caravan-proxy@consulcatalog"), where the routers of autoscaled
	// functions send their requests (see Proxied). Empty routes every
	// function straight to its containers, autoscaled or not.
	ProxyService string
	// ProxyPlugin, when set, is the alias of caravan's proxy plugin in
	// Traefik (caravan's Traefik build, package intraefik: the proxy
	// inside Traefik's process), and the routers of autoscaled functions
	// end in it instead of going to ProxyService: the plugin hands every
	// request to the proxy in Traefik's process, one process fewer on the
	// warm path. Their service is then NoopService, which they never
	// reach.
	ProxyPlugin string
	// AgentCommand is the agent binary's path on the Nomad clients
	// (caravan-agent, or caravan: both have `task` and `worker`), for the
	// tasks that run caravan inside (package agent): with it they run that
	// binary; without, they fetch caravan server's --agent-binary (an
	// artifact from BundleURL) at every start, which costs a cold start the
	// download (113–150 ms in the local stack for the 11.8 MB served of
	// caravan-agent, 189–239 ms for caravan's 61.6 MB: e2e
	// TestBenchColdStart).
	AgentCommand string
	// Worker is how warm callable functions' workers reach the queue. Not
	// a routing setting (nor recorded as one: its token is a secret).
	Worker Worker `json:"-"`
}

// Worker says how a callable function's workers reach the NATS they take
// inputs from (they start as the caravan agent: see AgentCommand).
type Worker struct {
	// AckWait and MaxAttempts are the functions' lease and retry limit
	// (zero: the queue's defaults).
	AckWait     time.Duration
	MaxAttempts int
}

// DefaultProxyService is the Traefik service of caravan's proxies that
// caravan server publishes in Traefik's KV (ProxyServices) from the
// instances of the Consul service ProxyServiceName.
const DefaultProxyService = ProxiesName + "@consul"

// ProxyServiceName is the Consul service caravan's proxies register as.
const ProxyServiceName = "caravan-proxy"

// HeaderFunction names, on the way from Traefik to caravan's proxy, the
// function a request is for (the route's name, its Consul service); every
// proxied route sets it, replacing any value a client sent. It is
// proxy.HeaderFunction.
const HeaderFunction = "Caravan-Function"

// Proxied reports whether fn's requests go through caravan's proxies under
// cfg: a web function whose count follows its load (min_containers 0, or
// max_containers above min_containers), whatever its deploy strategy. Its
// routers are published in Traefik's KV (they must outlive its last
// container: at zero it has none) and send to cfg.ProxyService; its
// containers carry no routing tags. A canary or blue-green rollout's
// split and preview hostname go through the proxies too: the proxy
// applies them (see HeaderSplit and Split).
func Proxied(app *spec.App, fn *spec.Function, cfg Config) bool {
	return cfg.ProxiedService() != "" && fn.Web != nil && fn.Scaling != nil && fn.Scaling.Autoscaled()
}

// The one setting of a route's proxy plugin middleware (ProxyPlugin),
// which marks it: the plugin reads none.
const (
	proxyPluginKey   = "in"
	proxyPluginValue = "traefik"
)

// isProxyPlugin reports whether m is a route's proxy plugin middleware.
func isProxyPlugin(m *dynamic.Middleware) bool {
	if m == nil || len(m.Plugin) != 1 {
		return false
	}
	for _, conf := range m.Plugin {
		return conf[proxyPluginKey] == proxyPluginValue
	}
	return false
}

// beforeProxy adds mw to a router's middlewares mws (defined in defs)
// before the route's proxy plugin, which answers every request so that a
// middleware after it never runs; without one, last.
func beforeProxy(defs map[string]*dynamic.Middleware, mws []string, mw string) []string {
	for i, m := range mws {
		if isProxyPlugin(defs[m]) {
			return slices.Insert(mws, i, mw)
		}
	}
	return append(mws, mw)
}

// NoopService is Traefik's internal service that answers 418: the service
// of routers whose last middleware (ProxyPlugin) answers every request.
const NoopService = "noop@internal"

// ProxiedService is the Traefik service of proxied routers: NoopService
// with a ProxyPlugin, else ProxyService ("": nothing is proxied).
func (c Config) ProxiedService() string {
	if c.ProxyPlugin != "" {
		return NoopService
	}
	return c.ProxyService
}

// HeaderSplit tells caravan's proxy which containers of a proxied
// function a request may go to (proxy.HeaderSplit): absent, the live
// version's; SplitCanary, the canaries (the preview hostname); or
// "<weight>;<host:port>,…", a traffic split's (see Split). Every proxied
// route sets or removes it, so no client chooses.
const HeaderSplit = "Caravan-Split"

// SplitCanary is HeaderSplit's value on a proxied preview route.
const SplitCanary = "canary"

// DefaultDrainDelay is the DrainDelay of a Config that sets none: enough
// for a Traefik that throttles its providers to 200 ms or less.
const DefaultDrainDelay = time.Second

// Drain is c's DrainDelay, or DefaultDrainDelay.
func (c Config) Drain() time.Duration {
	if c.DrainDelay > 0 {
		return c.DrainDelay
	}
	return DefaultDrainDelay
}

// ProxyAuthHeaders carry a token's ID and secret to endpoints with
// requires_proxy_auth; they are removed before a request reaches the function.
const (
	HeaderKey    = "Caravan-Key"
	HeaderSecret = "Caravan-Secret"
)

// ProbeKey is the Caravan-Key of caravan server's deploy probes. A route
// with a rate limit has a router of its own for requests that carry it
// (see probe router in route), so that the probe does not spend the
// function's budget; only the probe's credential passes that router.
const ProbeKey = "caravan-probe"

// HeaderRoute carries, from Traefik to the rate limiter, the name of the
// route a request came in on: the rate limit's buckets are keyed by it.
// Traefik sets it on every request to a rate-limited route, replacing any
// value the client sent.
const HeaderRoute = "Caravan-Route"

// Router priorities. Traefik tries the router with the highest priority
// first, and one without a priority is ranked by the length of its rule,
// which a spec chooses: a long rule (many custom domains, a long wildcard)
// would outrank a short one that matches the same host. Every router
// caravan renders has one of these instead, whatever its rule: a generated
// hostname's router above exact custom domains, those above wildcards, so
// a request for a generated hostname (or an exact custom domain) always
// reaches its own app even when another app's rule also matches it. A
// traffic split's routers rank SplitPriority above the route's own ones
// they stand in for, and below the next band. All are above any rule that
// fits in a spec would rank by length, and far below Traefik's internal
// routers (math.MaxInt - 1000).
const (
	PriorityWildcard  = 1 << 20
	PriorityCustom    = 2 << 20
	PriorityGenerated = 3 << 20
)

// Suffixes of the names of a route's routers for its custom domains: the
// generated hostname's router is named after the route alone.
const (
	customSuffix   = "--custom"
	wildcardSuffix = "--wildcard"
)

// ProxyAuthPath is where caravan server answers Traefik's forwardAuth.
const ProxyAuthPath = "/v1/auth/proxy"

// DefaultListen is caravan server's default address.
const DefaultListen = "127.0.0.1:7474"

// AuthURL is the forwardAuth address of the caravan server listening on
// addr. Router and middleware names hash it, so everything that renders
// routes for one server must agree on it.
func AuthURL(addr string) string { return "http://" + addr + ProxyAuthPath }

// DefaultAuthURL is the forwardAuth address of a caravan server on
// DefaultListen.
var DefaultAuthURL = AuthURL(DefaultListen)

// BundleURL is the base URL Nomad's clients fetch bundles from, of the
// caravan server listening on addr.
func BundleURL(addr string) string { return "http://" + addr }

// DefaultConfig is the configuration of the local stack's Traefik, with
// forwardAuth asking the caravan server on DefaultListen (which also
// serves the bundles).
var DefaultConfig = Config{Domain: "caravan.localhost", EntryPoint: "websecure", CertResolver: "caravan",
	DNSCertResolver: "caravan-dns", BodyLimitPlugin: "bodylimit", KVRoot: "traefik", AuthURL: DefaultAuthURL,
	BundleURL: BundleURL(DefaultListen), ProxyService: DefaultProxyService}

// Host is the hostname whose first label is name.
func (c Config) Host(name string) string {
	return name + "." + strings.ToLower(c.Domain)
}

// URL is the HTTPS URL of the hostname whose first label is name, with the
// port when it is not 443.
func (c Config) URL(name string) string {
	u := "https://" + c.Host(name)
	if c.HTTPSPort != 0 && c.HTTPSPort != 443 {
		u += fmt.Sprintf(":%d", c.HTTPSPort)
	}
	return u
}

// Route is how one web function is reached.
type Route struct {
	// Function is the function's name in the spec.
	Function string
	// Name names the Consul service and the Traefik service; it is also
	// the first label of Host.
	Name string
	// Router names the Traefik router of the generated hostname: Name and
	// a hash of the route's settings. Custom domains have routers of their
	// own, Name--custom-<hash> and Name--wildcard-<hash> (see
	// PriorityGenerated).
	Router string
	// Host is the generated hostname.
	Host string
	// CustomDomains are the spec's extra hostnames, lower-cased.
	CustomDomains []string
	// URL is https://Host, with the port when it is not 443.
	URL string
	// ProxyAuth is true when requests need a token (requires_proxy_auth).
	ProxyAuth bool
	// HealthPath is the path that answers 2xx when the function is up.
	HealthPath string
	// Config is the Traefik dynamic configuration for this route alone.
	Config *dynamic.Configuration
	// Proxied is true when the route's requests go through caravan's
	// proxies (see Proxied): its Config is published in Traefik's KV, not
	// as the containers' tags.
	Proxied bool
	// Preview is the route of the function's canaries under its own
	// hostname (see PreviewName), rendered for strategies that start new
	// containers beside the old ones without sending them traffic at once
	// (canary and blue-green); nil otherwise.
	Preview *Route
}

// Routes renders the route of every web function of app, in spec order.
func Routes(app *spec.App, cfg Config) []Route {
	var routes []Route
	for _, fn := range app.Functions {
		if fn.Web == nil {
			continue
		}
		r := route(app, fn, cfg, ServiceName(app, fn), fn.Web.CustomDomains)
		switch app.DeployStrategy() {
		case spec.StrategyCanary, spec.StrategyBlueGreen:
			p := route(app, fn, cfg, PreviewName(app, fn), nil)
			r.Preview = &p
		}
		routes = append(routes, r)
	}
	return routes
}

// FunctionPreview is r's preview route for a canary version that runs as
// a function of its own, the Consul service named as the preview (a
// canary deployed while r's function was at zero: orchestrator): the
// same routers, whose function middleware names that service and sets
// no HeaderSplit, so the proxy cold-starts it as any function at zero.
// nil when r is not proxied or has no preview.
func (r Route) FunctionPreview() *Route {
	if !r.Proxied || r.Preview == nil || !r.Preview.Proxied {
		return nil
	}
	p := *r.Preview
	mws := maps.Clone(p.Config.HTTP.Middlewares)
	name := p.FunctionMiddleware()
	if _, ok := mws[name]; !ok {
		return nil
	}
	mws[name] = &dynamic.Middleware{Headers: &dynamic.Headers{
		CustomRequestHeaders: map[string]string{HeaderFunction: p.Name, HeaderSplit: ""},
	}}
	hc := *p.Config.HTTP
	hc.Middlewares = mws
	p.Config = &dynamic.Configuration{HTTP: &hc}
	return &p
}

// functionSuffix ends the name of a proxied route's middleware that sets
// HeaderFunction (before versionNames adds the route's hash).
const functionSuffix = "-function"

// FunctionMiddleware is the Traefik middleware of proxied route r that
// sets HeaderFunction and HeaderSplit.
func (r Route) FunctionMiddleware() string {
	return r.Name + functionSuffix + strings.TrimPrefix(r.Router, r.Name)
}

// PreviewSuffix ends the base name of a function's canary preview
// hostname. Names cannot hold "--", so no function's own hostname ends so.
const PreviewSuffix = "--canary"

// PreviewName is the first label of the hostname on which a function's
// canaries answer, `<workspace>--<app>-<function>--canary`, before (and
// while) they take any of its traffic. It also names their Traefik service.
func PreviewName(app *spec.App, fn *spec.Function) string {
	return HostLabel(app.Workspace, app.Environment, baseName(app, fn)+PreviewSuffix)
}

// ServiceName is the Consul service name of a web function; a `caravan
// serve` copy's ends in "-dev".
func ServiceName(app *spec.App, fn *spec.Function) string {
	return HostLabel(app.Workspace, app.Environment, baseName(app, fn))
}

// baseName is `<app>-<function>` or the function's web label, with "-dev"
// for a serve copy.
func baseName(app *spec.App, fn *spec.Function) string {
	name := app.Name + "-" + fn.Name
	if fn.Web != nil && fn.Web.Label != "" {
		name = fn.Web.Label
	}
	if app.Serve {
		name += "-dev"
	}
	return name
}

// route renders the route of fn served as name (the first label of its
// hostname and the name of its Traefik service), also at customDomains.
func route(app *spec.App, fn *spec.Function, cfg Config, name string, customDomains []string) Route {
	host := cfg.Host(name)
	r := Route{Function: fn.Name, Name: name, Host: host, URL: cfg.URL(name), HealthPath: fn.Web.HealthCheckPath()}
	for _, d := range customDomains {
		r.CustomDomains = append(r.CustomDomains, strings.ToLower(strings.TrimSuffix(d, ".")))
	}

	var exact, wildcards []string
	for _, d := range r.CustomDomains {
		if parent, ok := strings.CutPrefix(d, "*."); ok {
			wildcards = append(wildcards, "HostRegexp(`^[a-z0-9-]+\\."+regexp.QuoteMeta(parent)+"$`)")
			continue
		}
		exact = append(exact, "Host(`"+d+"`)")
	}
	// The generated hostname is served by the platform's wildcard
	// certificate (see Config.GeneratedTLS); custom domains by their own.
	generatedTLS := cfg.GeneratedTLS(host)
	customTLS := &dynamic.RouterTLSConfig{CertResolver: cfg.CertResolver}
	if len(wildcards) > 0 {
		// Traefik cannot read a certificate name off a HostRegexp, so every
		// name is listed, each its own certificate, all through DNS-01.
		if cfg.DNSCertResolver == "" {
			// No wildcard for the generated hostname either: its router
			// shares this list, as every router of the route always did.
			customTLS.Domains = append(customTLS.Domains, types.Domain{Main: host})
		}
		for _, d := range r.CustomDomains {
			customTLS.Domains = append(customTLS.Domains, types.Domain{Main: d})
		}
		if cfg.DNSCertResolver != "" {
			customTLS.CertResolver = cfg.DNSCertResolver
		} else {
			generatedTLS = customTLS
		}
	}

	// One router per kind of hostname, each with its band's priority (see
	// PriorityGenerated): a priority is a router's, so a router for the
	// generated hostname and the custom domains together would rank them
	// alike, and by the rule's length.
	var routers []*dynamic.Router
	routerMap := map[string]*dynamic.Router{}
	add := func(key string, rules []string, priority int, tlsCfg *dynamic.RouterTLSConfig) {
		if len(rules) == 0 {
			return
		}
		tc := *tlsCfg
		tc.Domains = slices.Clone(tc.Domains)
		rt := &dynamic.Router{
			EntryPoints: []string{cfg.EntryPoint},
			Rule:        strings.Join(rules, " || "),
			Priority:    priority,
			Service:     name,
			TLS:         &tc,
		}
		routerMap[key] = rt
		routers = append(routers, rt)
	}
	add(name, []string{"Host(`" + host + "`)"}, PriorityGenerated, generatedTLS)
	add(name+customSuffix, exact, PriorityCustom, customTLS)
	add(name+wildcardSuffix, wildcards, PriorityWildcard, customTLS)
	use := func(mw string) {
		for _, rt := range routers {
			rt.Middlewares = append(rt.Middlewares, mw)
		}
	}

	passHost := true
	svc := &dynamic.Service{LoadBalancer: &dynamic.ServersLoadBalancer{PassHostHeader: &passHost}}
	r.Config = &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{
		Routers:     routerMap,
		Services:    map[string]*dynamic.Service{name: svc},
		Middlewares: map[string]*dynamic.Middleware{},
	}}
	if Proxied(app, fn, cfg) {
		// The proxies' service stands in for the containers': the
		// proxy finds them in Consul by the name this header carries
		// (the preview's too: canaries register as the function's
		// service), and picks among them by HeaderSplit: the live
		// ones, or on the preview hostname the canaries.
		r.Proxied = true
		r.Config.HTTP.Services = map[string]*dynamic.Service{}
		for _, rt := range routers {
			rt.Service = cfg.ProxiedService()
		}
		split := ""
		if name != ServiceName(app, fn) {
			split = SplitCanary
		}
		mw := name + functionSuffix
		r.Config.HTTP.Middlewares[mw] = &dynamic.Middleware{Headers: &dynamic.Headers{
			CustomRequestHeaders: map[string]string{HeaderFunction: ServiceName(app, fn), HeaderSplit: split},
		}}
		use(mw)
	}
	if rate, burst := fn.Web.Limits(); rate > 0 {
		// One bucket per route, shared by every client: the limit is the
		// endpoint's, not each caller's. Traefik keys buckets by a request
		// header set to the route's name first (overwriting any a client
		// sent), not by the Host header, which a client can spell many ways
		// (case, port, a trailing dot) that all reach the route.
		tag := name + "-route"
		r.Config.HTTP.Middlewares[tag] = &dynamic.Middleware{Headers: &dynamic.Headers{
			CustomRequestHeaders: map[string]string{HeaderRoute: name},
		}}
		use(tag)
		mw := name + "-ratelimit"
		// Period stays unset (Traefik's default, one second): Traefik's label
		// encoder writes durations in nanoseconds but its decoder reads a
		// bare number as seconds, so an explicit 1s would come back as 31
		// years.
		r.Config.HTTP.Middlewares[mw] = &dynamic.Middleware{RateLimit: &dynamic.RateLimit{
			Average:         int64(rate),
			Burst:           int64(burst),
			SourceCriterion: &dynamic.SourceCriterion{RequestHeaderName: HeaderRoute},
		}}
		use(mw)
	}
	if cfg.BodyLimitPlugin != "" {
		mw := name + "-bodylimit"
		r.Config.HTTP.Middlewares[mw] = &dynamic.Middleware{Plugin: map[string]dynamic.PluginConf{
			cfg.BodyLimitPlugin: {"maxBytes": strconv.FormatInt(fn.Web.BodyLimit(), 10)},
		}}
		use(mw)
	}
	if fn.Web.RequiresProxyAuth {
		r.ProxyAuth = true
		// caravan server checks the endpoint key (for this workspace).
		auth := name + "-auth"
		r.Config.HTTP.Middlewares[auth] = &dynamic.Middleware{ForwardAuth: &dynamic.ForwardAuth{
			Address: cfg.AuthURL + "?workspace=" + url.QueryEscape(app.Workspace),
		}}
		use(auth)
	}
	// Last on every route, proxy auth or not: the credential headers are
	// dropped (an empty value removes a header), so no function ever sees
	// a caller's key, nor the one that opened it.
	strip := name + "-strip-auth"
	r.Config.HTTP.Middlewares[strip] = &dynamic.Middleware{Headers: &dynamic.Headers{
		CustomRequestHeaders: map[string]string{HeaderKey: "", HeaderSecret: ""},
	}}
	use(strip)
	switch {
	case r.Proxied && cfg.ProxyPlugin != "":
		// Last: the proxy in Traefik's process takes the request (the
		// plugin needs a setting to be configured at all; it has none).
		mw := name + "-proxy"
		r.Config.HTTP.Middlewares[mw] = &dynamic.Middleware{Plugin: map[string]dynamic.PluginConf{
			cfg.ProxyPlugin: {proxyPluginKey: proxyPluginValue},
		}}
		use(mw)
	case r.Proxied:
		// Last, next to the proxies' service: a request that could not
		// reach a proxy at all (nothing of it written: the proxy died)
		// is tried again, by when Traefik's health check has failed over
		// to the next proxy. A request a proxy took is never retried.
		mw := name + "-proxy-retry"
		r.Config.HTTP.Middlewares[mw] = &dynamic.Middleware{Retry: &dynamic.Retry{
			Attempts: ProxyRetryAttempts, InitialInterval: ptypes.Duration(ProxyRetryInterval)}}
		use(mw)
	default:
		// Last, next to the containers' service: a request that reached
		// no container (its connection refused: the container died and
		// its Consul check has not failed yet) is sent again at once,
		// which the load balancer gives the next container (see
		// DirectRetryAttempts). A request a container took is never
		// resent.
		mw := name + "-retry"
		r.Config.HTTP.Middlewares[mw] = &dynamic.Middleware{Retry: &dynamic.Retry{Attempts: DirectRetryAttempts}}
		use(mw)
	}
	if rate, _ := fn.Web.Limits(); rate > 0 && cfg.AuthURL != "" {
		addProbeRouter(r.Config, name, cfg.AuthURL, name+"-auth", strip)
	}
	r.Router = versionNames(r.Config, name)
	return r
}

// probeSuffix ends the name of a route's probe router.
const probeSuffix = "--probe"

// PriorityProbe is the priority of a route's probe router: above the
// generated hostname's router it stands beside, below a traffic split's
// (SplitPriority), which takes the probe's requests like any others.
const PriorityProbe = PriorityGenerated + 1

// addProbeRouter gives the route name a router for caravan server's deploy
// probe: the generated hostname's rule and chain, for requests whose
// Caravan-Key is ProbeKey, with forwardAuth asking caravan server to accept
// the probe's credential alone (?probe=true: an HMAC of the hostname under
// a key only the server holds, see server/probe.go) in place of the
// route's own auth. Traefik keeps a rate limiter's bucket per router, so
// the probe spends this router's bucket, not the function's: a rollout
// leaves the function's whole burst to its first callers. A client that
// sends ProbeKey reaches this router and gets 401, having spent nothing of
// the function's budget either; floods of it are rate limited before they
// reach caravan server, and starve only deploy probes (as a flood of the
// route starved them before). The rule holds no secret: Consul's tags are
// readable by whoever reads the catalog.
func addProbeRouter(c *dynamic.Configuration, name, authURL, auth, strip string) {
	gen := c.HTTP.Routers[name]
	probeAuth := name + "-probe-auth"
	// Traefik's label decoder fills forwardAuth's defaults: render them, so
	// what the tags decode to is what was rendered.
	fa := &dynamic.ForwardAuth{}
	fa.SetDefaults()
	fa.Address = authURL + "?probe=true"
	c.HTTP.Middlewares[probeAuth] = &dynamic.Middleware{ForwardAuth: fa}
	p := *gen
	tc := *gen.TLS
	p.TLS = &tc
	p.Rule = gen.Rule + " && Header(`" + HeaderKey + "`, `" + ProbeKey + "`)"
	p.Priority = PriorityProbe
	p.Middlewares = nil
	for _, m := range gen.Middlewares {
		switch m {
		case auth:
		case strip:
			p.Middlewares = append(p.Middlewares, probeAuth, strip)
		default:
			p.Middlewares = append(p.Middlewares, m)
		}
	}
	c.HTTP.Routers[name+probeSuffix] = &p
}

// versionNames renames the routers and middlewares of c (all named after
// name) with a short hash of their configuration, and returns the new name
// of the generated hostname's router. During a rollout the old and the new
// containers both carry their tags; were a router or middleware named the
// same in both with different settings, Traefik would drop it as
// conflicting (every request 404s until the old containers leave). With
// the hash, an unchanged route keeps its names, and a changed one is a
// second router for the same rule, both feeding the one service. The
// service keeps its name.
func versionNames(c *dynamic.Configuration, name string) string {
	b, _ := json.Marshal(struct {
		R map[string]*dynamic.Router
		M map[string]*dynamic.Middleware
	}{c.HTTP.Routers, c.HTTP.Middlewares})
	sum := sha256.Sum256(b)
	suffix := "-" + hex.EncodeToString(sum[:])[:6]

	routers := map[string]*dynamic.Router{}
	for k, rt := range c.HTTP.Routers {
		routers[k+suffix] = rt
		for i, m := range rt.Middlewares {
			rt.Middlewares[i] = m + suffix
		}
	}
	c.HTTP.Routers = routers
	mws := map[string]*dynamic.Middleware{}
	for k, v := range c.HTTP.Middlewares {
		mws[k+suffix] = v
	}
	c.HTTP.Middlewares = mws
	return name + suffix
}

// Tags encodes the route's configuration as the Consul service tags
// Traefik's consulCatalog provider reads, sorted. Traefik must run with
// exposedByDefault = false: only services tagged traefik.enable=true are
// routed, so nothing caravan does not own is exposed.
func (r Route) Tags() ([]string, error) {
	labels, err := label.EncodeConfiguration(r.Config)
	if err != nil {
		return nil, fmt.Errorf("encoding route %s as tags: %w", r.Name, err)
	}
	tags := []string{"traefik.enable=true"}
	for k, v := range labels {
		tags = append(tags, k+"="+v)
	}
	slices.Sort(tags)
	return tags, nil
}

// KV is the route's configuration as the keys Traefik's KV provider reads
// under rootKey, for a Proxied route.
func (r Route) KV(rootKey string) (map[string]string, error) { return KV(rootKey, r.Config) }

// Merge joins the configurations of routes into the one Traefik builds from
// their tags; `caravan render --routes` prints it.
func Merge(routes []Route) *dynamic.Configuration {
	out := &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{
		Routers:  map[string]*dynamic.Router{},
		Services: map[string]*dynamic.Service{},
	}}
	for _, r := range routes {
		for k, v := range r.Config.HTTP.Routers {
			out.HTTP.Routers[k] = v
		}
		for k, v := range r.Config.HTTP.Services {
			out.HTTP.Services[k] = v
		}
		for k, v := range r.Config.HTTP.Middlewares {
			if out.HTTP.Middlewares == nil {
				out.HTTP.Middlewares = map[string]*dynamic.Middleware{}
			}
			out.HTTP.Middlewares[k] = v
		}
	}
	return out
}
