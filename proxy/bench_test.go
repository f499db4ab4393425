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
