package proxy_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravanhq/caravan/proxy"
)

// startingContainer is a container whose /healthz answers 200 once up is
// set (503 before), and whose other paths count the requests it serves,
// at once and at most at once.
type startingContainer struct {
	name           string
	srv            *httptest.Server
	up             atomic.Bool
	probes, served atomic.Int64
	cur, peak      atomic.Int64
	hold           chan struct{} // app requests wait for its close, when set
}

func newStartingContainer(t *testing.T, name string) *startingContainer {
	t.Helper()
	c := &startingContainer{name: name}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			c.probes.Add(1)
			if !c.up.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok")
			return
		}
		defer enter(&c.cur, &c.peak)()
		c.served.Add(1)
		if c.hold != nil {
			select {
			case <-c.hold:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, name+" "+r.Header.Get("X-Seq"))
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *startingContainer) instance() proxy.Instance {
	return proxy.Instance{ID: c.name, Addr: c.srv.Listener.Addr().String(), HealthPath: "/healthz"}
}

// starting is a snapshot where Consul lists cs but passes none.
func starting(settings *proxy.Settings, cs ...*startingContainer) proxy.Snapshot {
	snap := proxy.Snapshot{Known: true, Settings: settings, Starting: len(cs)}
	for _, c := range cs {
		snap.Pending = append(snap.Pending, c.instance())
	}
	return snap
}

// sendAll sends n requests for fn at once, and returns a function that
// waits for them and returns their status codes and bodies.
func sendAll(t *testing.T, srv *httptest.Server, fn string, n int) func() ([]int, []string) {
	t.Helper()
	codes, bodies := make([]int, n), make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, body := get(t, srv, fn, strconv.Itoa(i)); res != nil {
				codes[i], bodies[i] = res.StatusCode, body
			}
		}()
	}
	return func() ([]int, []string) { wg.Wait(); return codes, bodies }
}

// TestStartingContainerTakesQueuedRequests: requests queued at zero go to
// a container Consul lists as starting as soon as its health path
// answers 2xx to the proxy's own probes, before Consul passes it, and
// max_inputs holds for it.
func TestStartingContainerTakesQueuedRequests(t *testing.T) {
	disc := newFakeDiscovery()
	settings := &proxy.Settings{MaxInputs: 2, QueueTimeout: time.Minute}
	disc.Set("fn", settings) // known, at zero
	p, srv := newProxy(t, disc)
	srv.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = 100
	const n = 20
	wait := sendAll(t, srv, "fn", n)
	eventually(t, "requests queued at zero", func() bool { return load(p, "fn").Queued == n })

	c := newStartingContainer(t, "c0")
	c.hold = make(chan struct{})
	disc.Publish("fn", starting(settings, c))
	eventually(t, "the proxy probing the starting container", func() bool { return c.probes.Load() >= 3 })
	if got := c.served.Load(); got != 0 {
		t.Fatalf("a container whose health path answers 503 served %d requests", got)
	}
	if fl := load(p, "fn"); fl.Starting != 1 || fl.Ready != 0 || fl.Queued != n {
		t.Errorf("load while it is not up = %+v, want 1 starting, 0 ready, %d queued", fl, n)
	}

	c.up.Store(true) // it listens; Consul still says critical
	eventually(t, "the starting container taking max_inputs requests", func() bool { return c.cur.Load() == 2 })
	if fl := load(p, "fn"); fl.Starting != 0 || fl.Ready != 1 || fl.InFlight != 2 || fl.Queued != n-2 {
		t.Errorf("load once probed up = %+v, want 0 starting, 1 ready, 2 in flight, %d queued", fl, n-2)
	}
	close(c.hold)
	codes, bodies := wait()
	for i := range n {
		if codes[i] != http.StatusOK || !strings.HasPrefix(bodies[i], "c0 ") {
			t.Errorf("request %d: %d %q, want 200 from c0", i, codes[i], bodies[i])
		}
	}
	if peak := c.peak.Load(); peak > 2 {
		t.Errorf("c0 served %d at once, over max_inputs 2", peak)
	}

	// Consul passes it: nothing changes for requests, and the probes end.
	disc.Set("fn", settings, c.instance())
	eventually(t, "1 ready once Consul passes it", func() bool { fl := load(p, "fn"); return fl.Ready == 1 && fl.Starting == 0 })
	if res, body := get(t, srv, "fn", "after"); res == nil || res.StatusCode != 200 || body != "c0 after" {
		t.Errorf("after Consul passed it: %v %q", res, body)
	}
}

// TestStartingContainerNotAnsweringGetsNothing: a starting container
// whose health path never answers 2xx gets no request; the queued ones
// wait for one that is up.
func TestStartingContainerNotAnsweringGetsNothing(t *testing.T) {
	disc := newFakeDiscovery()
	settings := &proxy.Settings{MaxInputs: 1, QueueTimeout: time.Minute}
	disc.Set("fn", settings)
	p, srv := newProxy(t, disc)
	const n = 3
	wait := sendAll(t, srv, "fn", n)
	eventually(t, "requests queued at zero", func() bool { return load(p, "fn").Queued == n })

	down := newStartingContainer(t, "down") // answers 503, never up
	refusing := proxy.Instance{ID: "refusing", Addr: "127.0.0.1:1", HealthPath: "/healthz"}
	snap := starting(settings, down)
	snap.Pending, snap.Starting = append(snap.Pending, refusing), 2
	disc.Publish("fn", snap)
	eventually(t, "the proxy probing the starting container", func() bool { return down.probes.Load() >= 5 })
	if fl := load(p, "fn"); fl.Starting != 2 || fl.Ready != 0 || fl.Queued != n {
		t.Errorf("load = %+v, want 2 starting, 0 ready, %d queued", fl, n)
	}

	up := newStartingContainer(t, "up")
	up.up.Store(true)
	snap.Pending, snap.Starting = append(snap.Pending, up.instance()), 3
	disc.Publish("fn", snap)
	codes, bodies := wait()
	for i := range n {
		if codes[i] != http.StatusOK || !strings.HasPrefix(bodies[i], "up ") {
			t.Errorf("request %d: %d %q, want 200 from the container that is up", i, codes[i], bodies[i])
		}
	}
	if got := down.served.Load(); got != 0 {
		t.Errorf("the container whose health path answers 503 served %d requests", got)
	}
}

// TestCriticalAfterPassingIsNotReady: once Consul has passed a container,
// Consul decides: critical again means no new requests, even though the
// container's health path answers 2xx to the proxy, until Consul passes it
// again.
func TestCriticalAfterPassingIsNotReady(t *testing.T) {
	disc := newFakeDiscovery()
	settings := &proxy.Settings{MaxInputs: 1, QueueTimeout: time.Minute}
	c := newStartingContainer(t, "c0")
	c.up.Store(true)
	disc.Set("fn", settings, c.instance()) // Consul passes it
	p, srv := newProxy(t, disc)
	if res, body := get(t, srv, "fn", "1"); res == nil || body != "c0 1" {
		t.Fatalf("while passing: %v %q", res, body)
	}

	disc.Publish("fn", starting(settings, c)) // Consul: critical
	eventually(t, "no container ready", func() bool { fl := load(p, "fn"); return fl.Ready == 0 && fl.Starting == 1 })
	wait := sendAll(t, srv, "fn", 1)
	eventually(t, "the request queued", func() bool { return load(p, "fn").Queued == 1 })
	if fl := load(p, "fn"); fl.Ready != 0 {
		t.Errorf("load with the request queued = %+v: a container Consul failed after passing it is ready", fl)
	}
	if got := c.probes.Load(); got != 0 {
		t.Errorf("the proxy probed a container Consul had passed %d times; Consul decides for it", got)
	}

	disc.Set("fn", settings, c.instance()) // passing again
	codes, bodies := wait()
	if codes[0] != http.StatusOK || bodies[0] != "c0 0" {
		t.Errorf("once Consul passed it again: %d %q", codes[0], bodies[0])
	}
}

// blockingProber is a Prober whose probes fail when their context ends,
// which it reports on ended, until up is set: then they pass at once.
type blockingProber struct {
	up    atomic.Bool
	calls atomic.Int64
	ended chan error
}

func (b *blockingProber) Probe(ctx context.Context, addr, path string) bool {
	b.calls.Add(1)
	if b.up.Load() {
		return true
	}
	<-ctx.Done()
	b.ended <- ctx.Err()
	return false
}

// TestProbesRunOut: the probes stop after ProbeFor; a container that comes
// up only later waits for Consul.
func TestProbesRunOut(t *testing.T) {
	disc := newFakeDiscovery()
	settings := &proxy.Settings{MaxInputs: 1, QueueTimeout: 200 * time.Millisecond}
	disc.Publish("fn", starting(settings, newStartingContainer(t, "c0")))
	prober := &blockingProber{ended: make(chan error, 1)}
	p := proxy.New(proxy.Config{Discovery: disc, Prober: prober, ProbeFor: 50 * time.Millisecond})
	srv := httptest.NewServer(p)
	t.Cleanup(func() { srv.Close(); p.Close() })
	p.Watch("fn")
	select {
	case err := <-prober.ended:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the probe ended with %v, want its deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the probes to run out")
	}
	prober.up.Store(true)
	calls := prober.calls.Load()
	// The queue timeout passes with no container ready: 504, and no
	// probe since the probes ran out.
	if res, _ := get(t, srv, "fn", "1"); res == nil || res.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("a request once the probes ran out: %v, want 504 (no container ready)", res)
	}
	if got := prober.calls.Load(); got != calls {
		t.Errorf("%d probes after they ran out", got-calls)
	}
	if fl := load(p, "fn"); fl.Ready != 0 || fl.Starting != 1 {
		t.Errorf("load after the probes ran out = %+v, want 0 ready, 1 starting", fl)
	}
}
