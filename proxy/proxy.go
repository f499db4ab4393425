// Package proxy owns caravan's request-path data plane: an HTTP reverse
// proxy between Traefik and the containers of autoscaled functions. It
// knows every container of a function from discovery (Consul blocking
// queries), sends each request to the least-loaded one, never gives one
// more than the function's max_inputs at once, and holds requests in a
// bounded FIFO queue per function while none has room: at zero, during a
// cold start, at max_containers, in a recreate's gap. It counts what the
// autoscaler needs (requests in flight and queued, per function) and
// exports it as JSON and as Prometheus metrics.
//
// Answers of its own, each with a Caravan-Error header naming it:
//
//	404 no_function     the request names no function (Host or Caravan-Function),
//	                    or discovery knows none of that name
//	502 upstream_failed the container failed the request (it is then given none
//	                    for a few seconds, so queued requests go elsewhere)
//	503 queue_full      the queue holds max_requests; Retry-After: 1
//	504 queue_timeout   the request waited the queue timeout
//
// Everything else is the function's own answer. Bodies stream both ways,
// server-sent events are flushed as they come, and a WebSocket (any
// Upgrade) holds its container's slot for as long as it is open.
package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// HeaderFunction names the function (its Consul service name) a request
// is for. Traefik sets it on every request it routes to the proxy,
// replacing any a client sent; without it the proxy routes by the first
// label of Host. The function never sees it.
const HeaderFunction = "Caravan-Function"

// HeaderError names the proxy's own error answers (see the package doc).
const HeaderError = "Caravan-Error"

// Error names of HeaderError.
const (
	ErrorNoFunction     = "no_function"
	ErrorUpstreamFailed = "upstream_failed"
	ErrorQueueFull      = "queue_full"
	ErrorQueueTimeout   = "queue_timeout"
)

// Config configures a Proxy.
type Config struct {
	// Discovery lists each function's containers (required).
	Discovery Discovery
	// Domain, when set, is the parent of the hostnames a request without
	// HeaderFunction may be routed by; other hosts are 404.
	Domain string
	// Transport carries requests to containers (default: one tuned for
	// many concurrent requests to few hosts).
	Transport http.RoundTripper
	// EjectFor is how long a container that failed a request gets no new
	// ones (default 5 s), unless discovery lists it anew.
	EjectFor time.Duration
	// MaxFunctions bounds the functions the proxy watches (default
	// 10,000); a request for one more is 404.
	MaxFunctions int
	// IdleAfter is how long a function with no container and no request
	// stays watched (default 10 minutes); the next request watches it
	// anew.
	IdleAfter time.Duration
	// Prober probes a container Consul lists but does not pass yet, at
	// its HealthPath; its first 2xx gives it requests (default:
	// HTTPProber). ProbeEvery is how often (default 10 ms), ProbeFor for
	// how long at most before only Consul decides (default 30 s).
	Prober     Prober
	ProbeEvery time.Duration
	ProbeFor   time.Duration
	// Registerer takes the proxy's Prometheus metrics (default: a
	// registry of its own, served by AdminHandler).
	Registerer prometheus.Registerer
	Logger     hclog.Logger
	// RecheckUnknown is how old the snapshot of a function that was
	// unknown (no container, no settings record) may be when a request
	// for it comes before the proxy reads discovery again for that
	// request (default 500 ms). A blocking query on a function's
	// instances does not return when only its settings record appears
	// (a function deployed at zero again after a stop, a canary at zero
	// deployed again), so without it such a function stays 404 until
	// its first container registers.
	RecheckUnknown time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Proxy is the data plane: an http.Handler for the requests Traefik
// routes to functions, plus the admin side (AdminHandler) for the load
// report, drains and metrics.
type Proxy struct {
	cfg      Config
	rp       *httputil.ReverseProxy
	metrics  *metrics
	registry *prometheus.Registry
	log      hclog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	pools map[string]*watched

	// demand counts the times a function's queue started, for the
	// autoscaler's long poll of the load report (Report.Index).
	demandMu sync.Mutex
	demand   uint64
	demandCh chan struct{} // closed when demand next changes
}

// watched is a pool and the end of its watch.
type watched struct {
	*pool
	stop context.CancelFunc
}

// New makes a Proxy; Close stops its watches.
func New(cfg Config) *Proxy {
	if cfg.EjectFor <= 0 {
		cfg.EjectFor = 5 * time.Second
	}
	if cfg.MaxFunctions <= 0 {
		cfg.MaxFunctions = 10_000
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = 10 * time.Minute
	}
	if cfg.Prober == nil {
		cfg.Prober = &HTTPProber{}
	}
	if cfg.ProbeEvery <= 0 {
		cfg.ProbeEvery = 10 * time.Millisecond
	}
	if cfg.ProbeFor <= 0 {
		cfg.ProbeFor = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RecheckUnknown <= 0 {
		cfg.RecheckUnknown = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Transport == nil {
		std := defaultTransport()
		cfg.Transport = newH1Transport(std, std.DialContext)
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger, pools: map[string]*watched{}, demandCh: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.collect()
	reg := cfg.Registerer
	if reg == nil {
		p.registry = prometheus.NewRegistry()
		reg = p.registry
	}
	p.metrics = newMetrics(reg, p)
	p.rp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    cfg.Transport,
		ErrorHandler: p.upstreamError,
		BufferPool:   &bufferPool{},
		ErrorLog:     cfg.Logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	return p
}

func defaultTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          10_000,
		MaxIdleConnsPerHost:   1_000,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// A proxy passes bodies as they are: no Accept-Encoding of its
		// own, no decompressing a container's gzip.
		DisableCompression: true,
	}
}

// Close stops watching functions. Requests in flight go on.
func (p *Proxy) Close() {
	p.cancel()
	p.wg.Wait()
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// FunctionOf is the function r is for: HeaderFunction, or the first label
// of its Host (under domain, when domain is set); "" when it names none
// (an IP address names none).
func FunctionOf(r *http.Request, domain string) string {
	name := strings.ToLower(strings.TrimSpace(r.Header.Get(HeaderFunction)))
	if name == "" {
		host := strings.ToLower(r.Host)
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(host, ".")
		if net.ParseIP(strings.Trim(host, "[]")) != nil {
			return "" // an address names no function
		}
		first, rest, ok := strings.Cut(host, ".")
		if domain != "" && (!ok || rest != strings.ToLower(strings.TrimSuffix(domain, "."))) {
			return ""
		}
		name = first
	}
	if !nameRE.MatchString(name) {
		return ""
	}
	return name
}

// pool is function's pool, made (and watched) on first use; nil past
// MaxFunctions.
func (p *Proxy) pool(function string) *pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w, ok := p.pools[function]; ok {
		if !w.unknownBefore(p.cfg.Now().Add(-p.cfg.RecheckUnknown)) {
			w.touch()
			return w.pool
		}
		// Unknown a while ago: watch it afresh, and let this request
		// wait for the new first snapshot.
		w.stop()
		delete(p.pools, function)
	}
	if len(p.pools) >= p.cfg.MaxFunctions || p.ctx.Err() != nil {
		return nil
	}
	pl := newPool(function, p.cfg.Now, p.cfg.EjectFor)
	pl.used = p.cfg.Now()
	pl.onQueue = p.queueStarted
	pl.metrics = p.metrics.function(function)
	ctx, stop := context.WithCancel(p.ctx)
	pl.probing.prober, pl.probing.every, pl.probing.limit, pl.probing.ctx = p.cfg.Prober, p.cfg.ProbeEvery, p.cfg.ProbeFor, ctx
	p.pools[function] = &watched{pool: pl, stop: stop}
	p.wg.Add(1)
	go p.watch(ctx, pl)
	return pl
}

// collect stops watching functions idle for IdleAfter, until Close.
func (p *Proxy) collect() {
	defer p.wg.Done()
	t := time.NewTicker(min(p.cfg.IdleAfter, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		before := p.cfg.Now().Add(-p.cfg.IdleAfter)
		p.mu.Lock()
		for name, w := range p.pools {
			// A request takes its pool under p.mu and marks it used, so
			// none can be on its way into a pool dropped here.
			if w.idleSince(before) {
				w.stop()
				delete(p.pools, name)
			}
		}
		p.mu.Unlock()
	}
}

// Watch starts watching function before any request for it arrives, so
// the first one finds its containers known.
func (p *Proxy) Watch(function string) { p.pool(function) }

// watch feeds pl from discovery until Close. On an error it keeps what
// it knows (containers keep serving while Consul is away) and retries
// with backoff.
func (p *Proxy) watch(ctx context.Context, pl *pool) {
	defer p.wg.Done()
	defer pl.stopProbes() // they end with ctx
	var index uint64
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		snap, next, err := p.cfg.Discovery.Watch(ctx, pl.name, index)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log.Warn("discovery failed; retrying", "function", pl.name, "error", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if next < index {
			next = 0 // Consul's index went back: start over
		}
		index = next
		pl.update(snap)
		p.log.Debug("containers", "function", pl.name, "count", len(snap.Instances), "index", index)
	}
}

// request is a request's state between ServeHTTP and the reverse proxy.
type request struct {
	in     *instance
	failed bool
}

type requestKey struct{}

// rewrite points the outgoing request at its container, keeping the Host
// and the X-Forwarded headers Traefik set (and adding the hop it came
// from), without HeaderFunction.
func rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(requestKey{}).(*request)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = st.in.addr
	pr.Out.Host = pr.In.Host
	for _, h := range []string{"X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port"} {
		if v, ok := pr.In.Header[h]; ok {
			pr.Out.Header[h] = v
		}
	}
	xff := pr.In.Header.Values("X-Forwarded-For")
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		xff = append(slices.Clone(xff), ip)
	}
	if len(xff) > 0 {
		pr.Out.Header["X-Forwarded-For"] = []string{strings.Join(xff, ", ")}
	}
	if _, ok := pr.In.Header["X-Forwarded-Proto"]; !ok {
		pr.Out.Header.Set("X-Forwarded-Proto", "http")
	}
	pr.Out.Header.Del(HeaderFunction)
	pr.Out.Header.Del(HeaderSplit)
}

// upstreamError answers a request its container failed: 502, unless the
// client went away (nothing to answer).
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	st := r.Context().Value(requestKey{}).(*request)
	st.failed = true
	p.log.Warn("container failed a request", "container", st.in.id, "addr", st.in.addr, "error", err)
	fail(w, http.StatusBadGateway, ErrorUpstreamFailed, "the function's container failed the request")
}

func fail(w http.ResponseWriter, status int, name, msg string) {
	w.Header().Set(HeaderError, name)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}

// ServeHTTP proxies r to a container of its function; see the package doc.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := p.cfg.Now()
	name := FunctionOf(r, p.cfg.Domain)
	var pl *pool
	if name != "" {
		pl = p.pool(name)
	}
	if pl == nil {
		fail(w, http.StatusNotFound, ErrorNoFunction, "no such function")
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		pl.metrics.answered(sw.code(), p.cfg.Now().Sub(start).Seconds())
	}()

	sp := parseSplit(r.Header.Get(HeaderSplit))
	if sp.function != "" {
		// A split to another function: its share goes to that
		// function's pool (which queues it through that function's cold
		// start), the rest to this one's live containers.
		to, fn := pl.turnTo(sp.weight), sp.function
		sp = split{}
		if to {
			name = fn
			if pl = p.pool(name); pl == nil {
				fail(w, http.StatusNotFound, ErrorNoFunction, "no such function")
				return
			}
		}
	}
	got, err := pl.acquire(r.Context(), sp)
	if got.queued {
		p.metrics.queuedTotal.WithLabelValues(name).Inc()
		p.metrics.queueWait.WithLabelValues(name).Observe(got.waited.Seconds())
		if got.cold {
			p.metrics.coldStarts.WithLabelValues(name).Inc()
		}
	}
	switch {
	case errors.Is(err, ErrQueueFull):
		p.metrics.queueFull.WithLabelValues(name).Inc()
		sw.Header().Set("Retry-After", "1")
		fail(sw, http.StatusServiceUnavailable, ErrorQueueFull, "the function's queue is full; retry later")
		return
	case errors.Is(err, ErrNoFunction):
		fail(sw, http.StatusNotFound, ErrorNoFunction, "no such function")
		return
	case errors.Is(err, ErrQueueTimeout):
		p.metrics.queueTimeouts.WithLabelValues(name).Inc()
		fail(sw, http.StatusGatewayTimeout, ErrorQueueTimeout, "no container of the function had room in time")
		return
	case err != nil:
		return // the client went away while queued
	}

	st := &request{in: got.in}
	defer func() {
		v := recover()
		// A response cut off mid-body aborts the handler; unless the
		// client left, the container failed.
		if v != nil && r.Context().Err() == nil {
			st.failed = true
		}
		if st.failed {
			p.metrics.upstreamErrs.WithLabelValues(name).Inc()
		}
		pl.release(got.in, st.failed)
		if v != nil {
			panic(v)
		}
	}()
	p.rp.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), requestKey{}, st)))
}

// statusWriter notes the status code; Unwrap lets ReverseProxy flush and
// hijack (WebSockets) through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) code() int {
	if s.status == 0 {
		return 499 // nothing was answered: the client went away
	}
	return s.status
}

// queueStarted notes that a function's queue started.
func (p *Proxy) queueStarted() {
	p.demandMu.Lock()
	defer p.demandMu.Unlock()
	p.demand++
	close(p.demandCh)
	p.demandCh = make(chan struct{})
}

// WaitLoad is Load once Report.Index is past index, or once ctx ends: a
// long poll that lets the autoscaler, between its samples, hear at once
// of requests waiting (a cold start).
func (p *Proxy) WaitLoad(ctx context.Context, index uint64) Report {
	p.demandMu.Lock()
	cur, ch := p.demand, p.demandCh
	p.demandMu.Unlock()
	if cur == index {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	return p.Load()
}

// Load is every known function's load, by name.
func (p *Proxy) Load() Report {
	p.mu.Lock()
	pools := make([]*pool, 0, len(p.pools))
	for _, w := range p.pools {
		pools = append(pools, w.pool)
	}
	p.mu.Unlock()
	slices.SortFunc(pools, func(a, b *pool) int { return strings.Compare(a.name, b.name) })
	p.demandMu.Lock()
	index := p.demand
	p.demandMu.Unlock()
	r := Report{At: p.cfg.Now(), Index: index, Functions: make([]FunctionLoad, 0, len(pools))}
	for _, pl := range pools {
		r.Functions = append(r.Functions, pl.load())
	}
	return r
}

// ErrUnknown: Drain named a function the proxy does not watch or a
// container it does not know.
var ErrUnknown = errors.New("unknown function or container")

// Drain stops giving the container id of function new requests and waits
// until it serves none here, or ctx ends; it returns how many it still
// serves. A container discovery no longer lists drains on its own.
func (p *Proxy) Drain(ctx context.Context, function, id string) (int, error) {
	p.mu.Lock()
	w := p.pools[function]
	p.mu.Unlock()
	if w == nil || !w.setDraining(id, true) {
		p.log.Info("drain of an unknown container", "function", function, "container", id)
		return 0, ErrUnknown
	}
	start := p.cfg.Now()
	before := w.inFlight(id)
	n := w.waitIdle(ctx, id)
	p.log.Info("drained", "function", function, "container", id, "in_flight_before", before, "in_flight", n, "took", p.cfg.Now().Sub(start))
	return n, nil
}

// Undrain gives a drained container requests again (a scale-down called
// off).
func (p *Proxy) Undrain(function, id string) error {
	p.mu.Lock()
	w := p.pools[function]
	p.mu.Unlock()
	if w == nil || !w.setDraining(id, false) {
		return ErrUnknown
	}
	return nil
}

// bufferPool reuses the reverse proxy's copy buffers (32 KiB each) across
// requests.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
