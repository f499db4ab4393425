package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caravanhq/caravan/proxy"
)

// BenchmarkWarmPath is the proxy's cost on the warm path: one request at
// a time to a container that answers at once, directly and through the
// proxy, side by side. A figure, never an assertion:
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
	b.Run("proxy", func(b *testing.B) { run(b, front.URL) })
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
	b.Run("proxy", func(b *testing.B) { run(b, front.URL) })
}
