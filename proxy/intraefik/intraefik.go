// Package intraefik runs caravan's proxy inside Traefik's process, as the
// middleware plugin Name of caravan's Traefik build (tools/traefik-caravan:
// Traefik, pinned, with this plugin compiled in). A proxied route then
// ends in that plugin, which hands the request to the proxy (package
// proxy) in the same process: Traefik → container, with the proxy's
// counting, max_inputs and queue on the way, and one process fewer on the
// warm path than Traefik → caravan proxy → container.
//
// The proxy starts with Traefik when CARAVAN_PROXY_ADMIN_LISTEN is set
// (see Config): it serves its admin side there (the load report the
// autoscaler reads, drains, metrics, /healthz) and registers in Consul as
// proxy.ServiceName with proxy.MetaInTraefik. Consul is reached as
// Consul's own clients are configured (CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN, CONSUL_CACERT, ...).
//
// Every caravan proxy holds a container to max_inputs by its own count,
// so one Traefik (or one standalone proxy) carries a function's requests
// at a time; several Traefiks in front of one function would each give
// its containers max_inputs.
package intraefik

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caravanhq/caravan/proxy"
	consul "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
)

// Name is the plugin's name in Traefik's dynamic configuration: a route's
// middleware `plugin: {caravan: {...}}` (router.Config.ProxyPlugin).
const Name = "caravan"

// Environment of the Traefik process that configures the proxy.
const (
	// EnvAdminListen is the proxy's admin address; unset, the proxy does
	// not start and a route that uses the plugin fails to build.
	EnvAdminListen = "CARAVAN_PROXY_ADMIN_LISTEN"
	// EnvDomain is the parent domain of the hostnames routed by Host
	// (as caravan proxy's --domain).
	EnvDomain = "CARAVAN_PROXY_DOMAIN"
	// EnvRegister, "false", leaves the Consul registration to someone
	// else (a Nomad job's service block); anything else registers.
	EnvRegister = "CARAVAN_PROXY_REGISTER"
	// EnvLogLevel is the proxy's log level (default info).
	EnvLogLevel = "CARAVAN_PROXY_LOG_LEVEL"
	// EnvPluginName is the plugin's name in Traefik's dynamic
	// configuration, when not Name (caravan server's --proxy-plugin).
	EnvPluginName = "CARAVAN_PROXY_PLUGIN_NAME"
)

// PluginName is the plugin's name in the Traefik whose environment
// getenv reads: EnvPluginName, else Name.
func PluginName(getenv func(string) string) string {
	if n := strings.TrimSpace(getenv(EnvPluginName)); n != "" {
		return n
	}
	return Name
}

// Config is the proxy's configuration, read from the environment.
type Config struct {
	AdminListen string
	Domain      string
	Register    bool
	LogLevel    string
}

// ConfigFromEnv reads Config; ok is false when EnvAdminListen is unset.
func ConfigFromEnv(getenv func(string) string) (cfg Config, ok bool) {
	cfg = Config{
		AdminListen: strings.TrimSpace(getenv(EnvAdminListen)),
		Domain:      getenv(EnvDomain),
		Register:    getenv(EnvRegister) != "false",
		LogLevel:    getenv(EnvLogLevel),
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	return cfg, cfg.AdminListen != ""
}

// Embedded is the proxy running in Traefik's process.
type Embedded struct {
	Proxy      *proxy.Proxy
	admin      *http.Server
	ln         net.Listener
	log        hclog.Logger
	stop       context.CancelFunc // ends the registration's attempts
	registered chan struct{}

	mu         sync.Mutex
	deregister func() error
	deregOnce  sync.Once
	deregErr   error
}

// Start starts the proxy of cfg: its admin listener and, with
// cfg.Register, its Consul registration (made in the background, kept
// until Deregister or Close). Only a listener that cannot listen fails it.
func Start(cfg Config, cc *consul.Client, logOut io.Writer) (*Embedded, error) {
	log := hclog.New(&hclog.LoggerOptions{Name: "caravan-proxy", Level: hclog.LevelFromString(cfg.LogLevel), Output: logOut})
	p := proxy.New(proxy.Config{Discovery: &proxy.Consul{Client: cc}, Domain: cfg.Domain, Logger: log})
	ln, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("caravan proxy in Traefik: %s=%s: %w", EnvAdminListen, cfg.AdminListen, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	e := &Embedded{Proxy: p, ln: ln, log: log, stop: stop,
		admin: &http.Server{Handler: p.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := e.admin.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener failed", "error", err)
		}
	}()
	log.Info("serving inside Traefik", "admin", e.AdminAddr())
	if cfg.Register {
		// Registered in the background, again until Consul takes it: a
		// Consul agent not up yet delays the autoscaler's view of this
		// proxy, not Traefik's start (nor the requests it proxies).
		e.registered = make(chan struct{})
		go e.register(ctx, cc)
	}
	return e, nil
}

// registerRetry is how long register waits between attempts.
const registerRetry = time.Second

// register registers the proxy in Consul, trying again every
// registerRetry until it succeeds or ctx ends, and closes e.registered.
func (e *Embedded) register(ctx context.Context, cc *consul.Client) {
	for attempt := 1; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		dereg, err := proxy.RegisterInTraefik(rctx, cc, e.AdminAddr())
		cancel()
		if err == nil {
			e.mu.Lock()
			e.deregister = dereg
			e.mu.Unlock()
			close(e.registered)
			e.log.Info("registered in Consul", "service", proxy.ServiceName, "attempts", attempt)
			return
		}
		if attempt == 1 || attempt%30 == 0 {
			e.log.Warn("registering in Consul; trying again", "error", err, "attempts", attempt)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(registerRetry):
		}
	}
}

// Registered is closed once the proxy is registered in Consul (nil when
// it does not register itself).
func (e *Embedded) Registered() <-chan struct{} { return e.registered }

// AdminAddr is the admin listener's address.
func (e *Embedded) AdminAddr() string { return e.ln.Addr().String() }

// Handler is the plugin's handler: every request it gets goes to the
// proxy (Traefik's next handler, the route's service, is never called).
func (e *Embedded) Handler() http.Handler { return e.Proxy }

// Deregister takes the proxy out of Consul (once) and stops registering
// it: Traefik calls it when told to stop, while it still serves the
// requests it holds.
func (e *Embedded) Deregister() error {
	e.deregOnce.Do(func() {
		e.stop()
		e.mu.Lock()
		dereg := e.deregister
		e.mu.Unlock()
		if dereg != nil {
			e.deregErr = dereg()
		}
	})
	return e.deregErr
}

// Close deregisters the proxy and stops it.
func (e *Embedded) Close(ctx context.Context) error {
	errs := []error{e.Deregister()}
	errs = append(errs, e.admin.Shutdown(ctx))
	e.Proxy.Close()
	return errors.Join(errs...)
}

// Plugin builds the plugin's handlers for Traefik, starting the proxy once,
// on the first route that uses it (see FromEnv).
type Plugin struct {
	once  sync.Once
	start func() (*Embedded, error)
	e     *Embedded
	err   error
}

// NewPlugin makes a Plugin whose proxy start calls start.
func NewPlugin(start func() (*Embedded, error)) *Plugin { return &Plugin{start: start} }

// FromEnv is the Plugin of Traefik's process: its proxy is configured by
// the environment (ConfigFromEnv) and logs to logOut. Without
// EnvAdminListen, Handler answers an error naming it.
func FromEnv(getenv func(string) string, logOut io.Writer) *Plugin {
	return NewPlugin(func() (*Embedded, error) {
		cfg, ok := ConfigFromEnv(getenv)
		if !ok {
			return nil, fmt.Errorf("caravan proxy in Traefik is not configured: set %s in Traefik's environment (the proxy's admin address, such as 127.0.0.1:7484)", EnvAdminListen)
		}
		cc, err := consul.NewClient(consul.DefaultConfig())
		if err != nil {
			return nil, fmt.Errorf("caravan proxy in Traefik: consul: %w", err)
		}
		return Start(cfg, cc, logOut)
	})
}

// Started starts the proxy now if it is not running yet (Traefik's start
// calls it when the environment configures one, so the autoscaler sees
// the proxy before any route uses it).
func (p *Plugin) Started() (*Embedded, error) {
	p.once.Do(func() { p.e, p.err = p.start() })
	return p.e, p.err
}

// Handler is the handler of one plugin middleware. Its configuration
// (config, from the route) has no settings of the proxy's: the route's
// headers name the function (proxy.HeaderFunction, proxy.HeaderSplit).
func (p *Plugin) Handler(config map[string]any) (http.Handler, error) {
	e, err := p.Started()
	if err != nil {
		return nil, err
	}
	return e.Handler(), nil
}
