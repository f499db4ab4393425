// Package server is caravan server: a thin HTTP JSON API over the
// orchestrator (the apply stage). NewHandler serves it over injected
// dependencies (an Orchestrator and a TokenStore); Server wires the real
// ones, Nomad and Consul, and is what `caravan server` and the e2e tests
// start. The wire types and a client are in package api.
//
// Every endpoint but /v1/health, /v1/auth/proxy and a bundle's fetch
// needs a bearer token.
//
//	GET  /v1/health                 liveness, no token
//	GET  /v1/auth/proxy             ?workspace= : Traefik forwardAuth; checks an endpoint key (Caravan-Key/Caravan-Secret) or the deploy probe's
//	POST /v1/tokens                 api.TokenBody (kind api or endpoint) -> api.NewToken (secret shown once)
//	GET  /v1/tokens                 ?all=true (the revoked too) -> [api.TokenInfo]
//	DELETE /v1/tokens/{id}
//	GET  /v1/domains                -> [api.DomainBinding] (the token's workspace's; every one for "*")
//	POST /v1/domains/verify         api.DomainBody -> api.DomainBinding (checks TXT _caravan-challenge.<domain>)
//	POST /v1/domains                api.DomainBody -> api.DomainBinding (assign; a token of workspace "*" only)
//	POST /v1/bundles/missing        api.BundlesBody -> api.BundlesBody (the IDs the server lacks)
//	PUT  /v1/bundles/{id}           a bundle, gzip-compressed, streamed -> api.BundleInfo (verified against id before it is stored)
//	GET  /v1/bundles/{id}.tar       ?job=&alloc=&sig= : no token; Nomad's artifact fetch (signed URL, live allocation)
//	POST /v1/deploy                 api.DeployBody -> api.DeployResult
//	POST /v1/plan                   api.DeployBody -> api.PlanResult (changes nothing)
//	GET  /v1/apps                   -> [api.AppSummary]
//	GET  /v1/apps/{app}/history     ?workspace=&environment= -> api.History
//	GET  /v1/apps/{app}/url         ?function=&workspace=&environment= -> {"url"}
//	GET  /v1/apps/{app}/logs        ?workspace=&environment=&serve= -> text, streamed until the client leaves
//	POST /v1/apps/{app}/rollover    api.ChangeBody -> api.DeployResult
//	POST /v1/apps/{app}/rollback    api.ChangeBody -> api.DeployResult
//	POST /v1/apps/{app}/promote     api.ChangeBody -> api.DeployResult (a canary takes all traffic)
//	POST /v1/apps/{app}/abort       api.ChangeBody -> api.DeployResult (a canary is removed)
//	POST /v1/apps/{app}/stop        api.ChangeBody -> api.AppRecord
//	POST /v1/apps/{app}/run         api.RunBody -> api.RunResult (a scheduled function, now)
//	POST /v1/apps/{app}/functions/{fn}/call  ?workspace=&environment=&serve=&timeout=&spawn= ; the body is the
//	                                input (JSON, at most 16 MiB; 16 KiB isolated) -> api.CallResult (spawn=true: api.CallStatus at once)
//	POST /v1/apps/{app}/functions/{fn}/map   ?workspace=&environment=&serve=&timeout= ; the body is JSON lines,
//	                                one input each -> api.MapItem lines in input order, streamed
//	GET  /v1/calls/{id}             ?wait= -> api.CallStatus (404 once expired, after 7 days)
//	POST /v1/calls/{id}/cancel      -> api.CallStatus
//
// A spec is at most 256 KiB (spec.MaxSize: a Consul KV value holds 512 KiB,
// and a version record holds the spec), its deploy or plan body 576 KiB,
// the other JSON bodies 64 KiB, a call's body 16 MiB, a map's 64 MiB; past that the answer
// is 413 input_too_large, which says the limit. A JSON body with a field
// its endpoint does not know, or anything after it, is 400 bad_request.
// Connections have timeouts, and at most Limits.MaxConcurrent requests are
// served at once (the next gets 503 unavailable); long requests extend
// their own deadlines (see Limits).
//
// Errors are {"error": api.APIError}: a kind (api.ErrorCode), a message,
// and for invalid_spec the spec's diagnostics intact, so the CLI prints the
// same file:line errors as `caravan validate`. The kinds and their
// statuses, from api's one table (a test holds this list to it):
//
//	bad_request      400  a request that cannot be carried out as asked
//	invalid_spec     400  a spec that does not load or validate; diagnostics
//	unauthorized     401  a missing, malformed, unknown or revoked token
//	forbidden        403  the token may not act on that workspace
//	policy_denied    403  the server's policy does not let the workspace run it (a driver, a limit)
//	not_found        404  no such app, version, function or token in the token's sight
//	conflict         409  the app's state does not allow it now, or its record changed underneath, or its workspace has no Nomad namespace
//	ownership        409  a Nomad job of that name that caravan does not own
//	host_taken       409  a hostname another app serves
//	domain_unverified 409 a custom domain its workspace has not proved it controls; the TXT record to create
//	canary_pending   409  a canary awaits promote or abort
//	bundle_missing   409  a deploy or rollback names a bundle the server does not store
//	input_too_large  413  a call input over 16 MiB (16 KiB isolated), a body over its bound
//	rollout_failed   422  the version did not become healthy; function, alloc_id, version
//	internal         500  anything else (logged)
//	unavailable      503  Consul cannot be reached to check the token, or a change lost its app's lock; retry
package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/autoscaler"
	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/bundlestore"
	"github.com/caravanhq/caravan/clientcfg"
	"github.com/caravanhq/caravan/internal/leader"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/policy"
	"github.com/caravanhq/caravan/queue"
	"github.com/caravanhq/caravan/router"
	consul "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	nomad "github.com/hashicorp/nomad/api"
)

// Config wires a Server.
type Config struct {
	// Listen is the address to serve on, e.g. "127.0.0.1:7474".
	Listen string
	// Nomad and Consul say how to reach them: the official clients'
	// defaults (NOMAD_ADDR, NOMAD_TOKEN, CONSUL_HTTP_ADDR, ... from the
	// environment) under these fields (see package clientcfg).
	Nomad  clientcfg.Nomad
	Consul clientcfg.Consul
	// CreateNamespaces creates a workspace's Nomad namespace
	// (caravan-<workspace>) at its first deploy or plan; Nomad lets only
	// a management token do it. Off, a workspace whose namespace does not
	// exist is refused (409 conflict) with the command that creates it.
	CreateNamespaces bool
	// NomadAddr and ConsulAddr, when set, are Nomad.Addr and Consul.Addr.
	NomadAddr  string
	ConsulAddr string
	Router     router.Config
	// ProxyAddr is Traefik's HTTPS address; deploys wait until every web
	// function answers there. Empty skips that check.
	ProxyAddr string
	// RootCAFile verifies the proxy's certificates (Pebble's root in dev).
	RootCAFile string
	// TraefikAPI is the base URL of Traefik's API, which shows when a
	// traffic split is applied; empty waits a fixed time instead.
	TraefikAPI string
	// DNSResolver is the DNS server ("127.0.0.1:8053") that answers the
	// TXT lookups proving control of custom domains; empty uses the
	// system's resolver.
	DNSResolver string
	// Policy says what each workspace may run; nil is policy.Default():
	// no raw_exec anywhere.
	Policy *policy.Policy
	Logger hclog.Logger
	// Limits bound requests: timeouts and how many are served at once
	// (zero fields: DefaultLimits).
	Limits Limits

	// Bundles keeps code bundles; nil keeps them in BundleDir.
	Bundles bundlestore.Store
	// BundleDir is the local bundle store's directory (when Bundles is
	// nil); empty: DefaultBundleDir().
	BundleDir string
	// BundleLimits bound a bundle (zero fields: 256 MiB, 4096 files).
	BundleLimits bundle.Limits
	// BundleGC is how often bundles no version references are deleted
	// (those stored at least that long ago); 0: DefaultBundleGC, negative:
	// never.
	BundleGC time.Duration

	// NATS is where warm calls queue (default: a NATS server embedded in
	// this one).
	NATS NATSConfig
	// MaxStarting is how many containers this server's rollouts start in
	// Nomad at once; past it a rollout waits its turn before reaching
	// Nomad. 0: orchestrator.DefaultMaxStarting; negative: no limit.
	MaxStarting int
	// AgentBinary is the caravan binary served to tasks (package agent);
	// empty: agent.BinaryName beside this process's executable, else the
	// executable itself (agent.LocateBinary).
	AgentBinary string
}

// DefaultBundleGC is how often caravan server collects unreferenced
// bundles, and how old one must be to go.
const DefaultBundleGC = time.Hour

// DefaultBundleDir is where a caravan server without a bundle store
// keeps bundles: $XDG_DATA_HOME/caravan/bundles (~/.local/share/...).
func DefaultBundleDir() string {
	base := os.Getenv("XDG_DATA_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(base, "caravan", "bundles")
}

// Server is caravan server, startable in-process (the e2e tests do).
type Server struct {
	// orch runs the background work (resumed rollouts, canary timers)
	// besides answering the handler.
	orch    *orchestrator.Orchestrator
	tokens  *Tokens
	handler http.Handler
	log     hclog.Logger
	http    *http.Server
	ln      net.Listener
	// stop ends background work (resumed rollouts) on Shutdown.
	ctx    context.Context
	cancel context.CancelFunc
	// bundleGC is how often unreferenced bundles are collected.
	bundleGC time.Duration
	// scaler is the autoscaler, active in one server of the cluster at a
	// time (autoscaler.RunLeader).
	consul *consul.Client
	nomad  *nomad.Client
	scaler *autoscaler.Scaler
	// kvRoot is Traefik's KV root, where the proxies' service goes.
	kvRoot string
	// proxyPlugin is router.Config.ProxyPlugin: the routes of autoscaled
	// functions need a proxy inside Traefik.
	proxyPlugin string
	// queue carries warm calls; nats is the embedded NATS, when there is
	// one; worker is how workers reach the queue.
	queue  *queue.Queue
	nats   *queue.Embedded
	worker router.Worker
	natsW  NATSWorkers
}

// New wires a Server from cfg and opens its listener; Start serves it.
// Unless cfg.Router.AuthURL is set, Traefik's forwardAuth is pointed at this
// server's own /v1/auth/proxy. It reads from Consul what every server of
// the cluster shares (cluster.go), and refuses with a *RouterMismatchError
// route settings that are not the cluster's.
func New(cfg Config) (_ *Server, err error) {
	log := cfg.Logger
	if log == nil {
		log = hclog.New(&hclog.LoggerOptions{Name: "caravan", Level: hclog.Info})
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	// A configuration refused below must not keep the port.
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()
	if cfg.Router.AuthURL == "" {
		cfg.Router.AuthURL = router.AuthURL(ln.Addr().String())
	}
	if cfg.Router.BundleURL == "" {
		cfg.Router.BundleURL = router.BundleURL(ln.Addr().String())
	}
	store := cfg.Bundles
	if store == nil {
		dir := cfg.BundleDir
		if dir == "" {
			dir = DefaultBundleDir()
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("bundle directory: %w", err)
		}
		store = &bundlestore.Local{Dir: dir}
	}
	if cfg.NomadAddr != "" {
		cfg.Nomad.Addr = cfg.NomadAddr
	}
	if cfg.ConsulAddr != "" {
		cfg.Consul.Addr = cfg.ConsulAddr
	}
	nc, err := cfg.Nomad.Client()
	if err != nil {
		return nil, err
	}
	cc, err := cfg.Consul.Client()
	if err != nil {
		return nil, err
	}
	log.Info("nomad", cfg.Nomad.Describe()...)
	log.Info("consul", cfg.Consul.Describe()...)
	var roots *x509.CertPool
	if cfg.RootCAFile != "" {
		pem, err := os.ReadFile(cfg.RootCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading root CA: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificates in %s", cfg.RootCAFile)
		}
	}
	// What every server of the cluster shares, from Consul KV (see
	// cluster.go): a server that cannot read it does not start.
	kv := ConsulKV{KV: cc.KV()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// probeSecret keys the deploy probes' credentials, each bound to the
	// hostname it probes (ProbeHeader): every server accepts the probes of
	// any other.
	probeSecret, err := sharedProbeKey(ctx, kv)
	if err != nil {
		return nil, err
	}
	// Every server renders an app's routes alike, or one would find the
	// job another registered "another version" (and forwardAuth would ask
	// whichever server rendered last): a server whose settings are not the
	// cluster's does not start.
	host, _ := os.Hostname()
	if err := agreeRouter(ctx, kv, cfg.Router, "caravan server "+ln.Addr().String()+" on "+host, time.Now()); err != nil {
		return nil, err
	}
	q, emb, worker, natsWorkers, err := startQueue(ctx, cfg.NATS)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			q.Close()
			if emb != nil {
				emb.Shutdown()
			}
		}
	}()
	cfg.Router.Worker = worker
	var prober orchestrator.Prober
	if cfg.ProxyAddr != "" {
		prober = &orchestrator.HTTPSProber{Addr: cfg.ProxyAddr, Roots: roots,
			Auth: func(host string) http.Header { return ProbeHeader(probeSecret, host) }}
	}
	var proxy orchestrator.Proxy
	if cfg.TraefikAPI != "" {
		proxy = orchestrator.TraefikAPI{Addr: cfg.TraefikAPI}
	}
	clients := &autoscaler.Clients{Consul: cc, Nomad: nc, Log: log.Named("autoscaler")}
	scaler := &autoscaler.Scaler{Backend: clients, Queues: workerQueues{nomad: nc, queue: q}, Log: log.Named("autoscaler")}
	orch, err := orchestrator.New(orchestrator.Config{Nomad: orchestrator.NomadClient{Client: nc, Namespaces: &orchestrator.Namespaces{Create: cfg.CreateNamespaces}}, Consul: orchestrator.ConsulClient{Client: cc},
		Router: cfg.Router, Prober: prober, Proxy: proxy, Sessions: orchestrator.ConsulClient{Client: cc}, Store: &orchestrator.ConsulStore{Client: cc},
		Resolver: orchestrator.DNSResolver{Server: cfg.DNSResolver}, Policy: cfg.Policy, Logger: log.Named("orchestrator"),
		Bundles: store, BundleLimits: cfg.BundleLimits,
		Calls: orchestrator.QueueCalls{Queue: q}, CallsFunc: queue.FuncConfig{AckWait: cfg.NATS.AckWait, MaxAttempts: cfg.NATS.MaxAttempts},
		CallQueued: scaler.Wake, MaxStarting: cfg.MaxStarting})
	if err != nil {
		return nil, err
	}
	agentBinary := cfg.AgentBinary
	if agentBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("agent binary: %w (set --agent-binary)", err)
		}
		var beside bool
		if agentBinary, beside = agent.LocateBinary(exe); !beside {
			log.Info("no "+agent.BinaryName+" beside this executable: tasks fetch this one, which is larger (slower cold starts); ship "+
				agent.BinaryName+" beside caravan or set --agent-binary", "agent_binary", agentBinary)
		}
	}
	log.Info("agent binary", "path", agentBinary)
	gc := cfg.BundleGC
	if gc == 0 {
		gc = DefaultBundleGC
	}
	s := &Server{
		orch:        orch,
		tokens:      &Tokens{KV: kv},
		log:         log,
		ln:          ln,
		bundleGC:    gc,
		consul:      cc,
		nomad:       nc,
		kvRoot:      cfg.Router.KVRoot,
		proxyPlugin: cfg.Router.ProxyPlugin,
		queue:       q,
		nats:        emb,
		worker:      worker,
		natsW:       natsWorkers,
	}
	s.scaler = scaler
	s.handler = NewHandler(Deps{Orchestrator: orch, Tokens: s.tokens, Logger: log, ProbeSecret: probeSecret, Limits: cfg.Limits,
		BundleLimits: cfg.BundleLimits, Agents: orch, AgentBinary: agentBinary, Drainer: &ProxyDrainer{Consul: cc}, Loads: clients,
		NATSWorkers: natsWorkers})
	s.http = &http.Server{Addr: cfg.Listen, Handler: s.handler}
	cfg.Limits.Apply(s.http)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Tokens is the server's token store.
func (s *Server) Tokens() *Tokens { return s.tokens }

// Start listens and serves in the background, resumes any rollout a
// previous server (or another beside it) left unfinished, and publishes the router of the
// platform's wildcard certificate.
func (s *Server) Start() error {
	s.log.Info("serving", "addr", s.ln.Addr().String())
	go func() {
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "error", err)
		}
	}()
	go leader.Run(s.ctx, leader.ConsulLock(s.consul, CanaryWatcherKey, "caravan canary watcher", "10s"),
		func(ctx context.Context) { s.orch.WatchCanaries(ctx, 2*time.Second) }, s.log.Named("canaries"))
	if s.bundleGC > 0 {
		go s.collectBundles()
	}
	go autoscaler.RunLeader(s.ctx, s.consul, s.scaler, s.log.Named("autoscaler"))
	if s.kvRoot != "" {
		go s.publishProxies(s.kvRoot)
	}
	go s.publishWildcard()
	go s.warnLegacyJobs()
	go s.resumeLoop(ResumeInterval)
	return nil
}

// CanaryWatcherKey is the Consul lock the server that watches canaries
// holds: one server at a time promotes them on time, aborts failing ones
// and removes stale splits (orchestrator.WatchCanaries), as one runs the
// autoscaler (autoscaler.LeaderKey); another takes over within the lock's
// TTL when it stops.
const CanaryWatcherKey = "caravan/canaries/leader"

// ResumeInterval is how often a server looks for rollouts another left
// pending.
const ResumeInterval = 5 * time.Second

// resumeLoop resumes the rollouts a server left pending, at start (one
// that stopped before this one started) and every interval after (one of
// the servers beside this one that died mid-rollout: once its lock's
// session expires, this server takes the lock and follows Nomad's
// deployment to the end). A rollout a live server runs holds its app's
// lock all along: Resume waits for it, then finds the version settled and
// leaves it (orchestrator.Resume re-reads it under the lock).
func (s *Server) resumeLoop(interval time.Duration) {
	for {
		if err := s.orch.Resume(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Error("resuming interrupted rollouts", "error", err)
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// publishWildcard publishes the router of the platform's wildcard
// certificate (see orchestrator.PublishWildcardCertificate), retrying while
// Consul cannot take it, until the server stops.
func (s *Server) publishWildcard() {
	wait := time.Second
	for {
		err := s.orch.PublishWildcardCertificate(s.ctx)
		if err == nil || s.ctx.Err() != nil {
			return
		}
		s.log.Error("publishing the wildcard certificate's router; retrying", "error", err, "in", wait)
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// collectBundles deletes unreferenced bundles every bundleGC, until the
// server stops.
func (s *Server) collectBundles() {
	t := time.NewTicker(s.bundleGC)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.orch.CollectBundles(s.ctx, s.bundleGC); err != nil && s.ctx.Err() == nil {
			s.log.Error("collecting unreferenced bundles", "error", err)
		}
	}
}

// Orchestrator is the server's orchestrator (the e2e tests count its
// bundle uploads and collect its bundles).
func (s *Server) Orchestrator() *orchestrator.Orchestrator { return s.orch }

// Addr is the address Start listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops serving, letting requests in flight finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancel()
	err := s.http.Shutdown(ctx)
	s.queue.Close()
	if s.nats != nil {
		s.nats.Shutdown()
	}
	return err
}

// Worker is how workers start: the binary, their lease and retry limit.
func (s *Server) Worker() router.Worker { return s.worker }

// NATS is this server's NATS URL and admin token (another caravan
// server of the cluster may use them as --nats-url, --nats-token-file).
func (s *Server) NATS() (url, token string) { return s.natsW.URL, s.natsW.Key }

// Handler routes the API.
func (s *Server) Handler() http.Handler { return s.handler }
