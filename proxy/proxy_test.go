package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/proxy"
	"github.com/gorilla/websocket"
)

func TestFunctionOf(t *testing.T) {
	tests := []struct {
		host, header, domain, want string
	}{
		{"dev--hello-web.caravan.localhost", "", "", "dev--hello-web"},
		{"dev--hello-web.caravan.localhost:8443", "", "", "dev--hello-web"},
		{"DEV--Hello-Web.caravan.localhost.", "", "caravan.localhost", "dev--hello-web"},
		{"dev--hello-web.caravan.localhost", "", "caravan.localhost", "dev--hello-web"},
		{"dev--hello-web.other.example", "", "caravan.localhost", ""},
		{"a.b.caravan.localhost", "", "caravan.localhost", ""},
		{"caravan.localhost", "", "caravan.localhost", ""},
		{"api.example.com", "dev--api", "caravan.localhost", "dev--api"},
		{"anything", " Dev--API ", "", "dev--api"},
		{"x", "bad name!", "", ""},
		{"-x.example.com", "", "", ""},
		{"127.0.0.1:8080", "", "", ""},
		{"[::1]:8080", "", "", ""},
		{"10.0.0.1", "fn", "", "fn"},
		{"", "", "", ""},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = tt.host
		if tt.header != "" {
			r.Header.Set(proxy.HeaderFunction, tt.header)
		}
		if got := proxy.FunctionOf(r, tt.domain); got != tt.want {
			t.Errorf("FunctionOf(host %q, header %q, domain %q) = %q, want %q", tt.host, tt.header, tt.domain, got, tt.want)
		}
	}
}

func TestSettingsMeta(t *testing.T) {
	s := proxy.Settings{MaxInputs: 4, QueueMax: 20, QueueTimeout: 90 * time.Second, HealthPath: "/healthz"}
	got, ok := proxy.SettingsFromMeta(s.Meta())
	if !ok || got != s {
		t.Errorf("SettingsFromMeta(Meta()) = %+v, %v; want %+v", got, ok, s)
	}
	if _, ok := proxy.SettingsFromMeta(map[string]string{"other": "x"}); ok {
		t.Error("SettingsFromMeta without caravan keys says ok")
	}
	if got := (proxy.Settings{}).Meta(); got[proxy.MetaMaxInputs] != "1" || got[proxy.MetaQueueMax] != "1000" || got[proxy.MetaQueueTimeout] != "1m0s" {
		t.Errorf("defaults' Meta() = %v", got)
	}
	if _, ok := (proxy.Settings{}).Meta()[proxy.MetaHealthPath]; ok {
		t.Error("Meta() without a health path has the key")
	}
}

func TestProxiesRequest(t *testing.T) {
	disc := newFakeDiscovery()
	var seen http.Header
	var host string
	b := newBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		seen, host = r.Header.Clone(), r.Host
		w.Header().Set("X-From", "backend")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, r.Method+" "+r.URL.RequestURI())
	})
	disc.Set("fn", nil, b.instance())
	_, srv := newProxy(t, disc)

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/path?q=1", strings.NewReader("body"))
	req.Host = "fn.caravan.localhost"
	req.Header.Set(proxy.HeaderFunction, "fn")
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Forwarded-Proto", "https")
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusTeapot || string(body) != "POST /path?q=1" || res.Header.Get("X-From") != "backend" {
		t.Fatalf("answer %d %q %v", res.StatusCode, body, res.Header)
	}
	if host != "fn.caravan.localhost" {
		t.Errorf("backend saw Host %q, want the client's", host)
	}
	if seen.Get(proxy.HeaderFunction) != "" {
		t.Errorf("backend saw %s: %q", proxy.HeaderFunction, seen.Get(proxy.HeaderFunction))
	}
	if got := seen.Get("X-Forwarded-For"); got != "203.0.113.7, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", got)
	}
	if got := seen.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto = %q, want Traefik's https", got)
	}
}

func TestNoFunction(t *testing.T) {
	disc := newFakeDiscovery()
	p := proxy.New(proxy.Config{Discovery: disc, Domain: "caravan.localhost"})
	t.Cleanup(p.Close)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Host = "elsewhere.example.com"
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound || res.Header.Get(proxy.HeaderError) != proxy.ErrorNoFunction {
		t.Errorf("answer %d %s=%q, want 404 no_function", res.StatusCode, proxy.HeaderError, res.Header.Get(proxy.HeaderError))
	}
}

// TestMaxInputsUnderLoad: many concurrent requests over three containers
// of max_inputs 2: none ever serves more than 2 at once, every request is
// answered 200 (the rest queue), and the load spreads.
func TestMaxInputsUnderLoad(t *testing.T) {
	disc := newFakeDiscovery()
	var backends []*backend
	var instances []proxy.Instance
	for i := range 3 {
		b := newBackend(t, fmt.Sprintf("c%d", i), func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Millisecond) // hold the slot a moment, so requests overlap
			io.WriteString(w, "ok")
		})
		backends = append(backends, b)
		instances = append(instances, b.instance())
	}
	disc.Set("fn", &proxy.Settings{MaxInputs: 2, QueueMax: 1000, QueueTimeout: time.Minute}, instances...)
	p, srv := newProxy(t, disc)
	srv.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = 100

	const n = 300
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, _ := get(t, srv, "fn", strconv.Itoa(i)); res != nil {
				codes[i] = res.StatusCode
			}
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Fatalf("request %d answered %d", i, c)
		}
	}
	var total int64
	for _, b := range backends {
		if peak := b.peak.Load(); peak > 2 {
			t.Errorf("container %s served %d at once, over max_inputs 2", b.name, peak)
		}
		if b.served.Load() == 0 {
			t.Errorf("container %s served nothing", b.name)
		}
		total += b.served.Load()
	}
	if total != n {
		t.Errorf("containers served %d requests, want %d", total, n)
	}
	if fl := load(p, "fn"); fl.InFlight != 0 || fl.Queued != 0 || fl.Ready != 3 {
		t.Errorf("load after the burst = %+v, want nothing in flight or queued, 3 ready", fl)
	}
}

// TestLeastLoaded: with one container busy, the next request goes to the
// idle one.
func TestLeastLoaded(t *testing.T) {
	disc := newFakeDiscovery()
	busy := newBackend(t, "busy", nil)
	busy.hold = make(chan struct{})
	disc.Set("fn", &proxy.Settings{MaxInputs: 10}, busy.instance())
	p, srv := newProxy(t, disc)
	done := make(chan struct{})
	go func() { defer close(done); get(t, srv, "fn", "held") }()
	eventually(t, "the first request in flight", func() bool { return busy.cur.Load() == 1 })

	idle := newBackend(t, "idle", nil)
	disc.Set("fn", &proxy.Settings{MaxInputs: 10}, busy.instance(), idle.instance())
	eventually(t, "two containers", func() bool { return load(p, "fn").Ready == 2 })
	for i := range 3 {
		if _, body := get(t, srv, "fn", strconv.Itoa(i)); body != "idle "+strconv.Itoa(i) {
			t.Errorf("request %d answered %q, want the idle container", i, body)
		}
	}
	close(busy.hold)
	<-done
}

// TestQueueFIFO: requests that queue behind a busy container reach it in
// the order they arrived.
func TestQueueFIFO(t *testing.T) {
	disc := newFakeDiscovery()
	b := newBackend(t, "a", nil)
	b.hold = make(chan struct{})
	b.arrived = make(chan string, 100)
	disc.Set("fn", &proxy.Settings{MaxInputs: 1}, b.instance())
	p, srv := newProxy(t, disc)
	srv.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = 100

	var wg sync.WaitGroup
	send := func(seq string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, body := get(t, srv, "fn", seq); res == nil || res.StatusCode != 200 || body != "a "+seq {
				t.Errorf("request %s answered %v %q", seq, res, body)
			}
		}()
	}
	send("0")
	if got := <-b.arrived; got != "0" {
		t.Fatalf("first arrival %q", got)
	}
	const n = 8
	for i := 1; i <= n; i++ {
		send(strconv.Itoa(i))
		eventually(t, fmt.Sprintf("%d queued", i), func() bool { return load(p, "fn").Queued == i })
	}
	var order []string
	for range n {
		b.hold <- struct{}{} // let one request end
		order = append(order, <-b.arrived)
	}
	b.hold <- struct{}{}
	wg.Wait()
	want := []string{"1", "2", "3", "4", "5", "6", "7", "8"}
	if !slices.Equal(order, want) {
		t.Errorf("queued requests arrived in order %v, want %v", order, want)
	}
}

// TestQueueFull: past max_requests queued, 503 with Retry-After; counted.
func TestQueueFull(t *testing.T) {
	disc := newFakeDiscovery()
	b := newBackend(t, "a", nil)
	b.hold = make(chan struct{})
	disc.Set("fn", &proxy.Settings{MaxInputs: 1, QueueMax: 2}, b.instance())
	p, srv := newProxy(t, disc)
	p.Watch("fn") // so that the first request finds its container known
	eventually(t, "the container known", func() bool { return load(p, "fn").Ready == 1 })

	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); get(t, srv, "fn", strconv.Itoa(i)) }()
	}
	eventually(t, "1 in flight and 2 queued", func() bool {
		fl := load(p, "fn")
		return fl.InFlight == 1 && fl.Queued == 2
	})
	res, body := get(t, srv, "fn", "over")
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") != "1" || res.Header.Get(proxy.HeaderError) != proxy.ErrorQueueFull {
		t.Errorf("over the bound: %d Retry-After %q %s %q (%q), want 503, 1, queue_full", res.StatusCode, res.Header.Get("Retry-After"), proxy.HeaderError, res.Header.Get(proxy.HeaderError), body)
	}
	close(b.hold)
	wg.Wait()
	m := metricsText(t, p)
	wantMetric(t, m, `caravan_proxy_queue_full_total{function="fn"} 1`)
	wantMetric(t, m, `caravan_proxy_requests_total{code="503",function="fn"} 1`)
	wantMetric(t, m, `caravan_proxy_requests_total{code="200",function="fn"} 3`)
	wantMetric(t, m, `caravan_proxy_queued_total{function="fn"} 2`)
}

// TestQueueTimeout: a request that waits past the queue timeout is 504;
// counted; the one in flight is untouched.
func TestQueueTimeout(t *testing.T) {
	disc := newFakeDiscovery()
	b := newBackend(t, "a", nil)
	b.hold = make(chan struct{})
	disc.Set("fn", &proxy.Settings{MaxInputs: 1, QueueTimeout: 20 * time.Millisecond}, b.instance())
	p, srv := newProxy(t, disc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if res, _ := get(t, srv, "fn", "held"); res == nil || res.StatusCode != 200 {
			t.Errorf("the request in flight: %v", res)
		}
	}()
	eventually(t, "one in flight", func() bool { return b.cur.Load() == 1 })
	res, _ := get(t, srv, "fn", "waits")
	if res.StatusCode != http.StatusGatewayTimeout || res.Header.Get(proxy.HeaderError) != proxy.ErrorQueueTimeout {
		t.Errorf("waited past the limit: %d %q, want 504 queue_timeout", res.StatusCode, res.Header.Get(proxy.HeaderError))
	}
	if fl := load(p, "fn"); fl.Queued != 0 {
		t.Errorf("queued after the timeout = %d", fl.Queued)
	}
	close(b.hold)
	<-done
	wantMetric(t, metricsText(t, p), `caravan_proxy_queue_timeouts_total{function="fn"} 1`)
}

// TestColdStart: requests to a function with no container wait until one
// appears, then all are served, each counted as a cold start.
func TestColdStart(t *testing.T) {
	disc := newFakeDiscovery()
	disc.Set("fn", &proxy.Settings{MaxInputs: 1}) // known, at zero
	p, srv := newProxy(t, disc)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, body := get(t, srv, "fn", strconv.Itoa(i)); res == nil || res.StatusCode != 200 || !strings.HasPrefix(body, "late ") {
				t.Errorf("request %d at zero: %v %q", i, res, body)
			}
		}()
	}
	eventually(t, "3 queued at zero", func() bool { return load(p, "fn").Queued == 3 })
	late := newBackend(t, "late", nil)
	disc.Set("fn", &proxy.Settings{MaxInputs: 1}, late.instance())
	wg.Wait()
	m := metricsText(t, p)
	wantMetric(t, m, `caravan_proxy_cold_start_waits_total{function="fn"} 3`)
	wantMetric(t, m, `caravan_proxy_queue_wait_seconds_count{function="fn"} 3`)
}

// TestDrain: a draining container gets no new requests; Drain returns
// once its last request ends; Undrain gives it requests again.
func TestDrain(t *testing.T) {
	disc := newFakeDiscovery()
	old := newBackend(t, "old", nil)
	old.hold = make(chan struct{})
	disc.Set("fn", &proxy.Settings{MaxInputs: 5}, old.instance())
	p, srv := newProxy(t, disc)
	held := make(chan struct{})
	go func() { defer close(held); get(t, srv, "fn", "long") }()
	eventually(t, "the long request in flight", func() bool { return old.cur.Load() == 1 })

	fresh := newBackend(t, "new", nil)
	disc.Set("fn", &proxy.Settings{MaxInputs: 5}, old.instance(), fresh.instance())
	eventually(t, "two containers", func() bool { return load(p, "fn").Ready == 2 })

	drained := make(chan int, 1)
	go func() {
		n, err := p.Drain(context.Background(), "fn", "old")
		if err != nil {
			t.Errorf("Drain: %v", err)
		}
		drained <- n
	}()
	eventually(t, "old draining", func() bool { return load(p, "fn").Draining == 1 })
	for i := range 5 {
		if _, body := get(t, srv, "fn", strconv.Itoa(i)); !strings.HasPrefix(body, "new ") {
			t.Errorf("request %d while old drains went to %q", i, body)
		}
	}
	select {
	case n := <-drained:
		t.Fatalf("Drain returned %d while a request was in flight", n)
	default:
	}
	close(old.hold)
	<-held
	if n := <-drained; n != 0 {
		t.Errorf("Drain returned %d in flight, want 0", n)
	}
	if _, err := p.Drain(context.Background(), "fn", "nope"); err == nil {
		t.Error("Drain of an unknown container: no error")
	}
	if err := p.Undrain("fn", "old"); err != nil {
		t.Fatal(err)
	}
	if fl := load(p, "fn"); fl.Ready != 2 || fl.Draining != 0 {
		t.Errorf("after Undrain: %+v", fl)
	}
}

// TestDrainWaitBounded: Drain gives up when its context ends, saying how
// many requests are still in flight.
func TestDrainWaitBounded(t *testing.T) {
	disc := newFakeDiscovery()
	b := newBackend(t, "a", nil)
	b.hold = make(chan struct{})
	disc.Set("fn", nil, b.instance())
	p, srv := newProxy(t, disc)
	done := make(chan struct{})
	go func() { defer close(done); get(t, srv, "fn", "x") }()
	eventually(t, "in flight", func() bool { return b.cur.Load() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := p.Drain(ctx, "fn", "a"); err != nil || n != 1 {
		t.Errorf("Drain with an ended context = %d, %v; want 1 in flight", n, err)
	}
	close(b.hold)
	<-done
}

// TestRemovedContainerFinishesItsRequests: a container discovery drops
// serves its requests to the end and gets no new ones; queued requests
// wait for the next.
func TestRemovedContainerFinishesItsRequests(t *testing.T) {
	disc := newFakeDiscovery()
	old := newBackend(t, "old", nil)
	old.hold = make(chan struct{})
	disc.Set("fn", nil, old.instance())
	p, srv := newProxy(t, disc)
	first := make(chan string, 1)
	go func() { _, body := get(t, srv, "fn", "1"); first <- body }()
	eventually(t, "in flight", func() bool { return old.cur.Load() == 1 })
	disc.Set("fn", nil) // a recreate: the old container leaves first
	eventually(t, "old draining", func() bool { return load(p, "fn").Draining == 1 })
	second := make(chan string, 1)
	go func() { _, body := get(t, srv, "fn", "2"); second <- body }()
	eventually(t, "the second queued", func() bool { return load(p, "fn").Queued == 1 })
	close(old.hold)
	if body := <-first; body != "old 1" {
		t.Errorf("the request in flight answered %q", body)
	}
	fresh := newBackend(t, "new", nil)
	disc.Set("fn", nil, fresh.instance())
	if body := <-second; body != "new 2" {
		t.Errorf("the queued request answered %q", body)
	}
	eventually(t, "old forgotten", func() bool { return len(load(p, "fn").Instances) == 1 })
}

// TestFailedContainer: a container that drops the connection gives its
// request a clean 502; requests after it go to another container.
func TestFailedContainer(t *testing.T) {
	disc := newFakeDiscovery()
	broken := newBackend(t, "broken", func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	disc.Set("fn", nil, broken.instance())
	p, srv := newProxy(t, disc)
	res, _ := get(t, srv, "fn", "1")
	if res.StatusCode != http.StatusBadGateway || res.Header.Get(proxy.HeaderError) != proxy.ErrorUpstreamFailed {
		t.Fatalf("a failed container: %d %q, want 502 upstream_failed", res.StatusCode, res.Header.Get(proxy.HeaderError))
	}
	good := newBackend(t, "good", nil)
	disc.Set("fn", nil, broken.instance(), good.instance())
	eventually(t, "two containers", func() bool { return len(load(p, "fn").Instances) == 2 })
	for i := range 5 {
		if res, body := get(t, srv, "fn", strconv.Itoa(i)); res.StatusCode != 200 || body != "good "+strconv.Itoa(i) {
			t.Errorf("request %d after the failure: %d %q", i, res.StatusCode, body)
		}
	}
	if fl := load(p, "fn"); !fl.Instances[0].Ejected || fl.Ready != 1 {
		t.Errorf("load = %+v, want broken ejected", fl)
	}
	wantMetric(t, metricsText(t, p), `caravan_proxy_upstream_errors_total{function="fn"} 1`)
}

// TestQueuedGoElsewhereAfterFailure: a request queued behind a container
// that fails is served by another that appears.
func TestQueuedGoElsewhereAfterFailure(t *testing.T) {
	disc := newFakeDiscovery()
	release := make(chan struct{})
	broken := newBackend(t, "broken", func(w http.ResponseWriter, r *http.Request) {
		<-release
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	})
	disc.Set("fn", &proxy.Settings{MaxInputs: 1}, broken.instance())
	p, srv := newProxy(t, disc)
	first := make(chan int, 1)
	go func() { res, _ := get(t, srv, "fn", "1"); first <- res.StatusCode }()
	eventually(t, "in flight", func() bool { return broken.cur.Load() == 1 })
	second := make(chan string, 1)
	go func() { _, body := get(t, srv, "fn", "2"); second <- body }()
	eventually(t, "queued", func() bool { return load(p, "fn").Queued == 1 })
	close(release)
	if c := <-first; c != http.StatusBadGateway {
		t.Errorf("the failed request: %d", c)
	}
	good := newBackend(t, "good", nil)
	disc.Set("fn", &proxy.Settings{MaxInputs: 1}, broken.instance(), good.instance())
	if body := <-second; body != "good 2" {
		t.Errorf("the queued request answered %q, want the good container", body)
	}
}

// TestWebSocket: an upgrade passes through, both ways, and holds the
// container's slot while open: a second request queues until it closes.
func TestWebSocket(t *testing.T) {
	disc := newFakeDiscovery()
	up := websocket.Upgrader{}
	b := newBackend(t, "ws", func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			io.WriteString(w, "plain")
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, append([]byte("echo "), msg...))
		}
	})
	disc.Set("fn", &proxy.Settings{MaxInputs: 1}, b.instance())
	p, srv := newProxy(t, disc)

	h := http.Header{}
	h.Set(proxy.HeaderFunction, "fn")
	c, res, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", h)
	if err != nil {
		t.Fatalf("dial through the proxy: %v (%v)", err, res)
	}
	for _, m := range []string{"one", "two"} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.ReadMessage(); err != nil || string(got) != "echo "+m {
			t.Fatalf("read %q, %v", got, err)
		}
	}
	if fl := load(p, "fn"); fl.InFlight != 1 {
		t.Errorf("an open WebSocket: %d in flight, want 1", fl.InFlight)
	}
	plain := make(chan string, 1)
	go func() { _, body := get(t, srv, "fn", "p"); plain <- body }()
	eventually(t, "a request queued behind the WebSocket", func() bool { return load(p, "fn").Queued == 1 })
	c.Close()
	if body := <-plain; body != "plain" {
		t.Errorf("after the WebSocket closed: %q", body)
	}
	eventually(t, "nothing in flight", func() bool { return load(p, "fn").InFlight == 0 })
}

// TestStreaming: server-sent events reach the client as they are written,
// and a request body reaches the container before the client has sent it
// all: nothing is buffered whole.
func TestStreaming(t *testing.T) {
	disc := newFakeDiscovery()
	next := make(chan struct{})
	got := make(chan string, 1)
	b := newBackend(t, "s", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				http.NewResponseController(w).Flush()
				<-next
			}
		case "/upload":
			buf := make([]byte, 5)
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				return
			}
			got <- string(buf)
			rest, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%d", len(buf)+len(rest))
		}
	})
	disc.Set("fn", nil, b.instance())
	_, srv := newProxy(t, disc)

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/events", nil)
	req.Header.Set(proxy.HeaderFunction, "fn")
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(res.Body)
	for i := range 3 {
		line, err := rd.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: %d\n", i) {
			t.Fatalf("event %d: %q, %v", i, line, err)
		}
		rd.ReadString('\n')
		next <- struct{}{} // the next event is written only after this one arrived
	}
	res.Body.Close()

	pr, pw := io.Pipe()
	req, _ = http.NewRequest(http.MethodPost, srv.URL+"/upload", pr)
	req.Header.Set(proxy.HeaderFunction, "fn")
	answer := make(chan string, 1)
	go func() {
		res, err := srv.Client().Do(req)
		if err != nil {
			answer <- err.Error()
			return
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		answer <- string(body)
	}()
	pw.Write([]byte("hello"))
	select {
	case first := <-got:
		if first != "hello" {
			t.Errorf("the container read %q first", first)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the container never saw the body's first bytes while the client held the rest")
	}
	big := strings.Repeat("x", 1<<20)
	pw.Write([]byte(big))
	pw.Close()
	if a := <-answer; a != strconv.Itoa(5+len(big)) {
		t.Errorf("upload answered %q, want %d", a, 5+len(big))
	}
}

// TestClientGoneWhileQueued: a queued request whose client leaves leaves
// the queue, and takes no slot.
func TestClientGoneWhileQueued(t *testing.T) {
	disc := newFakeDiscovery()
	b := newBackend(t, "a", nil)
	b.hold = make(chan struct{})
	disc.Set("fn", &proxy.Settings{MaxInputs: 1}, b.instance())
	p, srv := newProxy(t, disc)
	done := make(chan struct{})
	go func() { defer close(done); get(t, srv, "fn", "held") }()
	eventually(t, "in flight", func() bool { return b.cur.Load() == 1 })

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n%s: fn\r\n\r\n", proxy.HeaderFunction)
	eventually(t, "queued", func() bool { return load(p, "fn").Queued == 1 })
	conn.Close()
	eventually(t, "the queue emptied", func() bool { return load(p, "fn").Queued == 0 })
	close(b.hold)
	<-done
	if fl := load(p, "fn"); fl.InFlight != 0 {
		t.Errorf("in flight after all ended: %d", fl.InFlight)
	}
}

// TestDiscoveryErrorKeepsContainers: discovery failing leaves the known
// containers serving.
func TestDiscoveryErrorKeepsContainers(t *testing.T) {
	disc := &flakyDiscovery{fakeDiscovery: newFakeDiscovery()}
	b := newBackend(t, "a", nil)
	disc.Set("fn", nil, b.instance())
	p, srv := newProxy(t, disc)
	if res, _ := get(t, srv, "fn", "1"); res.StatusCode != 200 {
		t.Fatalf("first: %d", res.StatusCode)
	}
	disc.fail.Store(true)
	disc.Set("fn", nil) // would empty it, but discovery now fails
	eventually(t, "discovery failing", func() bool { return disc.failures.Load() > 0 })
	if res, _ := get(t, srv, "fn", "2"); res.StatusCode != 200 {
		t.Errorf("with discovery down: %d", res.StatusCode)
	}
	if fl := load(p, "fn"); fl.Ready != 1 {
		t.Errorf("load = %+v", fl)
	}
}

// TestUnknownFunction: a function discovery does not know is 404 at once,
// and requests queued for one that goes away are 404 too.
func TestUnknownFunction(t *testing.T) {
	disc := newFakeDiscovery()
	p, srv := newProxy(t, disc)
	for i := range 2 {
		res, _ := get(t, srv, "nope", strconv.Itoa(i))
		if res.StatusCode != http.StatusNotFound || res.Header.Get(proxy.HeaderError) != proxy.ErrorNoFunction {
			t.Errorf("unknown function, request %d: %d %q", i, res.StatusCode, res.Header.Get(proxy.HeaderError))
		}
	}
	disc.Set("fn", nil)
	done := make(chan *http.Response, 1)
	go func() { res, _ := get(t, srv, "fn", "q"); done <- res }()
	eventually(t, "queued at zero", func() bool { return load(p, "fn").Queued == 1 })
	disc.Forget("fn")
	if res := <-done; res.StatusCode != http.StatusNotFound {
		t.Errorf("queued for a function that went away: %d", res.StatusCode)
	}
	// It comes back: served again.
	b := newBackend(t, "a", nil)
	disc.Set("fn", nil, b.instance())
	eventually(t, "known again", func() bool { return load(p, "fn").Ready == 1 })
	if res, _ := get(t, srv, "fn", "back"); res.StatusCode != 200 {
		t.Errorf("after it came back: %d", res.StatusCode)
	}
}

// TestIdleFunctionsForgotten: a function with no container and no request
// for IdleAfter is no longer watched; a request watches it anew.
func TestIdleFunctionsForgotten(t *testing.T) {
	disc := newFakeDiscovery()
	p := proxy.New(proxy.Config{Discovery: disc, IdleAfter: 5 * time.Millisecond})
	t.Cleanup(p.Close)
	p.Watch("gone")
	b := newBackend(t, "a", nil)
	disc.Set("busy", nil, b.instance())
	p.Watch("busy")
	eventually(t, "the idle function forgotten", func() bool {
		r := p.Load()
		return len(r.Functions) == 1 && r.Functions[0].Function == "busy"
	})
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	disc.Set("gone", nil, b.instance())
	if res, _ := get(t, srv, "gone", "1"); res.StatusCode != 200 {
		t.Errorf("a forgotten function's next request: %d", res.StatusCode)
	}
}

// TestUnknownFunctionRechecked: a function whose settings record appears
// while the proxy's watch of it blocks (Consul's blocking query is on its
// instances) is not 404 for long: a request after RecheckUnknown reads
// discovery again and queues for it at zero.
func TestUnknownFunctionRechecked(t *testing.T) {
	disc := newFakeDiscovery()
	p := proxy.New(proxy.Config{Discovery: disc, RecheckUnknown: 20 * time.Millisecond})
	srv := httptest.NewServer(p)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close(); p.Close() })
	if res, _ := get(t, srv, "fn", "0"); res.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown function: %d", res.StatusCode)
	}
	disc.SetQuietly("fn", &proxy.Settings{MaxInputs: 1})
	done := make(chan int, 1)
	go func() {
		for {
			res, _ := get(t, srv, "fn", "again")
			if res.StatusCode != http.StatusNotFound {
				done <- res.StatusCode
				return
			}
		}
	}()
	eventually(t, "a request queued at zero", func() bool { return load(p, "fn").Queued == 1 })
	b := newBackend(t, "a", nil)
	disc.Set("fn", &proxy.Settings{MaxInputs: 1}, b.instance())
	if got := <-done; got != http.StatusOK {
		t.Errorf("the queued request: %d, want 200", got)
	}
}
