package proxy_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravanhq/caravan/proxy"
)

// leanFront serves p as `caravan proxy` does (h1Server) until b ends, and
// returns its URL.
func leanFront(b *testing.B, p http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(proxy.ServeLean(ln, p))
	return "http://" + ln.Addr().String()
}

// BenchmarkWarmPath is the proxy's cost on the warm path: one request at
// a time to a container that answers at once, directly and through the
// proxy (served as `caravan proxy` serves it, and by net/http's Server),
// side by side. A figure, never an assertion:
//
//	go test -run '^$' -bench WarmPath ./proxy
func BenchmarkWarmPath(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	disc := newFakeDiscovery()
	disc.Set("fn", &proxy.Settings{MaxInputs: 8}, proxy.Instance{ID: "a", Addr: backend.Listener.Addr().String()})
	p := proxy.New(proxy.Config{Discovery: disc})
	defer p.Close()
	front := httptest.NewServer(p)
	defer front.Close()
	lean := leanFront(b, p)

	run := func(b *testing.B, url string) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set(proxy.HeaderFunction, "fn")
		b.ResetTimer()
		for range b.N {
			res, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, backend.URL) })
	b.Run("proxy", func(b *testing.B) { run(b, lean) })
	b.Run("proxy-net-http-server", func(b *testing.B) { run(b, front.URL) })
}

// BenchmarkWarmPathParallel is BenchmarkWarmPath with 16 clients at once
// (the throughput side of `just bench`'s warm path): ns/op is the
// machine's time per request, the proxy's CPU included.
//
//	go test -run '^$' -bench WarmPathParallel -benchmem ./proxy
func BenchmarkWarmPathParallel(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	disc := newFakeDiscovery()
	disc.Set("fn", &proxy.Settings{MaxInputs: 64}, proxy.Instance{ID: "a", Addr: backend.Listener.Addr().String()})
	p := proxy.New(proxy.Config{Discovery: disc})
	defer p.Close()
	front := httptest.NewServer(p)
	defer front.Close()
	lean := leanFront(b, p)

	run := func(b *testing.B, url string) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
		b.SetParallelism(8) // × GOMAXPROCS (2): 16 clients
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set(proxy.HeaderFunction, "fn")
			for pb.Next() {
				res, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		})
	}
	b.Run("direct", func(b *testing.B) { run(b, backend.URL) })
	b.Run("proxy", func(b *testing.B) { run(b, lean) })
	b.Run("proxy-net-http-server", func(b *testing.B) { run(b, front.URL) })
}

// BenchmarkWarmPathRounds is BenchmarkWarmPath made to compare on a
// shared, noisy machine: b.N rounds, each of 300 sequential requests
// directly, through the proxy as `caravan proxy` serves it (h1Server) and
// through the proxy under net/http's Server, in an order rotated each
// round, then 16 clients for 300 ms the same way; it reports the medians
// of the per-round p50 differences from direct (µs) and of the per-round
// throughputs as a share of direct's, the change of the machine's load
// weighing on all alike. Here the proxy, its client and the container
// share one process.
//
//	go test -run '^$' -bench WarmPathRounds -benchtime 20x ./proxy
func BenchmarkWarmPathRounds(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	disc := newFakeDiscovery()
	disc.Set("fn", &proxy.Settings{MaxInputs: 8}, proxy.Instance{ID: "a", Addr: backend.Listener.Addr().String()})
	p := proxy.New(proxy.Config{Discovery: disc})
	defer p.Close()
	front := httptest.NewServer(p)
	defer front.Close()
	urls := []string{backend.URL, leanFront(b, p), front.URL}
	clients := make([]*http.Client, len(urls))
	for i := range clients {
		clients[i] = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	}
	p50 := func(i, n int) time.Duration {
		req, _ := http.NewRequest(http.MethodGet, urls[i], nil)
		req.Header.Set(proxy.HeaderFunction, "fn")
		lat := make([]time.Duration, 0, n)
		for range n {
			began := time.Now()
			res, err := clients[i].Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			lat = append(lat, time.Since(began))
		}
		slices.Sort(lat)
		return lat[len(lat)/2]
	}
	// rps is the requests a second of 16 clients for d.
	rps := func(i int, d time.Duration) float64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		end := time.Now().Add(d)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, urls[i], nil)
				req.Header.Set(proxy.HeaderFunction, "fn")
				for time.Now().Before(end) {
					res, err := clients[i].Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		return float64(n.Load()) / d.Seconds()
	}
	for i := range urls {
		p50(i, 100) // warm
		rps(i, 100*time.Millisecond)
	}
	var lean, std, leanT, stdT []float64
	b.ResetTimer()
	for r := range b.N {
		var got [3]time.Duration
		var tput [3]float64
		for k := range urls {
			i := (r + k) % len(urls)
			got[i] = p50(i, 300)
			tput[i] = rps(i, 300*time.Millisecond)
		}
		lean = append(lean, float64(got[1]-got[0])/1e3)
		std = append(std, float64(got[2]-got[0])/1e3)
		leanT = append(leanT, 100*tput[1]/tput[0])
		stdT = append(stdT, 100*tput[2]/tput[0])
	}
	med := func(xs []float64) float64 { slices.Sort(xs); return xs[len(xs)/2] }
	b.ReportMetric(med(lean), "added-µs-p50")
	b.ReportMetric(med(std), "added-µs-p50-net/http-server")
	b.ReportMetric(med(leanT), "throughput-%")
	b.ReportMetric(med(stdT), "throughput-%-net/http-server")
	b.ReportMetric(0, "ns/op")
}
