package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravanhq/caravan/proxy"
)

// fakeDiscovery is Discovery from a map the test sets: each Set is a new
// index, and Watch blocks until one past its index.
type fakeDiscovery struct {
	mu    sync.Mutex
	fns   map[string]*fakeFunction
	calls atomic.Int64
}

type fakeFunction struct {
	index   uint64
	snap    proxy.Snapshot
	changed chan struct{}
}

func newFakeDiscovery() *fakeDiscovery { return &fakeDiscovery{fns: map[string]*fakeFunction{}} }

func (f *fakeDiscovery) fn(name string) *fakeFunction {
	ff, ok := f.fns[name]
	if !ok {
		ff = &fakeFunction{index: 1, changed: make(chan struct{})}
		f.fns[name] = ff
	}
	return ff
}

// Set publishes the function's containers (and settings, when non-nil);
// the function is known from then on, even with none.
func (f *fakeDiscovery) Set(name string, settings *proxy.Settings, instances ...proxy.Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ff := f.fn(name)
	ff.index++
	ff.snap = proxy.Snapshot{Known: true, Instances: instances, Settings: settings}
	close(ff.changed)
	ff.changed = make(chan struct{})
}

// Publish publishes a whole snapshot (starting containers, say).
func (f *fakeDiscovery) Publish(name string, snap proxy.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ff := f.fn(name)
	ff.index++
	ff.snap = snap
	close(ff.changed)
	ff.changed = make(chan struct{})
}

// SetQuietly changes the function's snapshot without waking a Watch or
// moving its index, as Consul's settings record changes under a blocking
// query on the function's instances.
func (f *fakeDiscovery) SetQuietly(name string, settings *proxy.Settings) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fn(name).snap = proxy.Snapshot{Known: true, Settings: settings}
}

// Forget makes the function unknown, as if it had been removed.
func (f *fakeDiscovery) Forget(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ff := f.fn(name)
	ff.index++
	ff.snap = proxy.Snapshot{}
	close(ff.changed)
	ff.changed = make(chan struct{})
}

func (f *fakeDiscovery) Watch(ctx context.Context, name string, index uint64) (proxy.Snapshot, uint64, error) {
	f.calls.Add(1)
	for {
		f.mu.Lock()
		ff := f.fn(name)
		if ff.index > index {
			snap, idx := ff.snap, ff.index
			f.mu.Unlock()
			return snap, idx, nil
		}
		ch := ff.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return proxy.Snapshot{}, index, ctx.Err()
		}
	}
}

// backend is a container: a real HTTP server on 127.0.0.1 that counts the
// requests it serves at once and the most it ever served at once.
type backend struct {
	name string
	srv  *httptest.Server
	cur  atomic.Int64
	peak atomic.Int64
	// hold, when set, makes each request wait for a value (or its close).
	hold chan struct{}
	// arrived gets each request's X-Seq as it arrives, when set.
	arrived chan string
	served  atomic.Int64
}

func newBackend(t *testing.T, name string, handler http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer enter(&b.cur, &b.peak)()
		b.served.Add(1)
		if b.arrived != nil {
			b.arrived <- r.Header.Get("X-Seq")
		}
		if b.hold != nil {
			select {
			case <-b.hold:
			case <-r.Context().Done():
				return
			}
		}
		if handler != nil {
			handler(w, r)
			return
		}
		w.Header().Set("X-Backend", name)
		fmt.Fprintf(w, "%s %s", name, r.Header.Get("X-Seq"))
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) instance() proxy.Instance {
	return proxy.Instance{ID: b.name, Addr: b.srv.Listener.Addr().String()}
}

// newProxy serves a Proxy over disc on 127.0.0.1, as `caravan proxy`
// serves its data plane (h1Server, which hands Upgrades to net/http's
// Server). The httptest.Server is its URL and client: its own server
// accepts nothing.
func newProxy(t *testing.T, disc proxy.Discovery) (*proxy.Proxy, *httptest.Server) {
	t.Helper()
	p := proxy.New(proxy.Config{Discovery: disc})
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	stop := proxy.ServeLean(srv.Listener, p)
	srv.Listener = &idleListener{addr: srv.Listener.Addr(), done: make(chan struct{})}
	srv.Start()
	t.Cleanup(func() {
		stop()
		srv.Close()
		p.Close()
	})
	return p, srv
}

// idleListener accepts nothing until closed.
type idleListener struct {
	addr net.Addr
	done chan struct{}
	once sync.Once
}

func (l *idleListener) Accept() (net.Conn, error) {
	<-l.done
	return nil, net.ErrClosed
}

func (l *idleListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *idleListener) Addr() net.Addr { return l.addr }

// get sends a GET for function fn through the proxy.
func get(t *testing.T, srv *httptest.Server, fn, seq string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	req.Header.Set(proxy.HeaderFunction, fn)
	req.Header.Set("X-Seq", seq)
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Errorf("GET %s #%s: %v", fn, seq, err)
		return nil, ""
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, strings.TrimSpace(string(body))
}

// eventually polls cond until it holds, failing the test after a
// generous deadline: never a timed assertion, only a bound on a hang.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// load is fn's load at p (zero when p does not know fn).
func load(p *proxy.Proxy, fn string) proxy.FunctionLoad {
	for _, fl := range p.Load().Functions {
		if fl.Function == fn {
			return fl
		}
	}
	return proxy.FunctionLoad{}
}

// enter counts a request in cur, raising peak to cur's highest, and
// returns what counts it out.
func enter(cur, peak *atomic.Int64) (leave func()) {
	n := cur.Add(1)
	for {
		p := peak.Load()
		if n <= p || peak.CompareAndSwap(p, n) {
			break
		}
	}
	return func() { cur.Add(-1) }
}
