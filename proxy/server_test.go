package proxy_test

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/caravanhq/caravan/proxy"
)

// TestServer: the Server `caravan proxy` runs serves the data plane and
// the admin side on their own addresses, and shuts down.
func TestServer(t *testing.T) {
	disc := newFakeDiscovery()
	b := newBackend(t, "a", nil)
	disc.Set("fn", nil, b.instance())
	s := proxy.NewServer(proxy.ServerConfig{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", Proxy: proxy.Config{Discovery: disc}})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr()+"/", nil)
	req.Header.Set(proxy.HeaderFunction, "fn")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "a " {
		t.Errorf("data plane: %d %q", res.StatusCode, body)
	}
	r, err := proxy.FetchLoad(context.Background(), http.DefaultClient, "http://"+s.AdminAddr())
	if err != nil || len(r.Functions) != 1 {
		t.Errorf("admin load: %+v, %v", r, err)
	}
	// The data plane has no admin paths: /v1/load there is the function's.
	req, _ = http.NewRequest(http.MethodGet, "http://"+s.Addr()+proxy.LoadPath, nil)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get(proxy.HeaderError) != proxy.ErrorNoFunction {
		t.Errorf("the data plane answered %s without a function: %d %q", proxy.LoadPath, res.StatusCode, res.Header.Get(proxy.HeaderError))
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
