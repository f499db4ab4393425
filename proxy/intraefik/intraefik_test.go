package intraefik_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/proxy/intraefik"
	consul "github.com/hashicorp/consul/api"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigFromEnv(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want intraefik.Config
		ok   bool
	}{
		{name: "unset: no proxy", env: nil, want: intraefik.Config{Register: true, LogLevel: "info"}},
		{name: "admin address alone", env: map[string]string{intraefik.EnvAdminListen: " 127.0.0.1:7484 "},
			want: intraefik.Config{AdminListen: "127.0.0.1:7484", Register: true, LogLevel: "info"}, ok: true},
		{name: "every setting", env: map[string]string{intraefik.EnvAdminListen: "127.0.0.1:0", intraefik.EnvDomain: "caravan.localhost",
			intraefik.EnvRegister: "false", intraefik.EnvLogLevel: "debug"},
			want: intraefik.Config{AdminListen: "127.0.0.1:0", Domain: "caravan.localhost", LogLevel: "debug"}, ok: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := intraefik.ConfigFromEnv(env(c.env))
			if got != c.want || ok != c.ok {
				t.Errorf("ConfigFromEnv = %+v, %v; want %+v, %v", got, ok, c.want, c.ok)
			}
		})
	}
}

func TestPluginName(t *testing.T) {
	if n := intraefik.PluginName(env(nil)); n != intraefik.Name {
		t.Errorf("PluginName unset = %q, want %q", n, intraefik.Name)
	}
	if n := intraefik.PluginName(env(map[string]string{intraefik.EnvPluginName: " caravan-proxy "})); n != "caravan-proxy" {
		t.Errorf("PluginName = %q, want caravan-proxy", n)
	}
}

// TestPluginUnconfigured: a route that uses the plugin in a Traefik whose
// environment configures no proxy fails to build, saying what to set.
func TestPluginUnconfigured(t *testing.T) {
	_, err := intraefik.FromEnv(env(nil), io.Discard).Handler(map[string]any{"in": "traefik"})
	if err == nil || !strings.Contains(err.Error(), intraefik.EnvAdminListen) {
		t.Errorf("Handler: %v, want an error naming %s", err, intraefik.EnvAdminListen)
	}
}

// TestPluginStartsTheProxyOnce: every middleware of the plugin shares one
// proxy, started by the first; its admin side answers; a request that
// names no function is the proxy's own 404.
func TestPluginStartsTheProxyOnce(t *testing.T) {
	cc, err := consul.NewClient(&consul.Config{Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	starts := 0
	p := intraefik.NewPlugin(func() (*intraefik.Embedded, error) {
		starts++
		return intraefik.Start(intraefik.Config{AdminListen: "127.0.0.1:0", Domain: "caravan.localhost"}, cc, io.Discard)
	})
	h1, err := p.Handler(nil)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := p.Handler(map[string]any{"in": "traefik"})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := p.Started()
	t.Cleanup(func() { e.Close(context.Background()) })
	if starts != 1 || h1 != h2 {
		t.Errorf("%d starts, handlers the same: %v; want one proxy for every middleware", starts, h1 == h2)
	}
	resp, err := http.Get("http://" + e.AdminAddr() + proxy.HealthPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("admin %s: %s", proxy.HealthPath, resp.Status)
	}
	rec := httptest.NewRecorder()
	h1.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://elsewhere.example/", nil))
	if rec.Code != http.StatusNotFound || rec.Header().Get(proxy.HeaderError) != proxy.ErrorNoFunction {
		t.Errorf("a request for no function: %d %s, want 404 %s", rec.Code, rec.Header().Get(proxy.HeaderError), proxy.ErrorNoFunction)
	}
	if err := e.Deregister(); err != nil {
		t.Errorf("Deregister without a registration: %v", err)
	}
}

// TestStartFailsOnATakenAddress: an admin address in use is an error that
// names the setting.
// TestRegistersOnceConsulAnswers: a Consul that refuses at first does not
// fail the start; the proxy registers (with its admin address and
// MetaInTraefik) once Consul answers, and Deregister takes it out.
func TestRegistersOnceConsulAnswers(t *testing.T) {
	var mu sync.Mutex
	up := false
	var regs []consul.AgentServiceRegistration
	deregs := 0
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case !up:
			http.Error(w, "Consul is starting", http.StatusInternalServerError)
		case r.URL.Path == "/v1/agent/service/register":
			var reg consul.AgentServiceRegistration
			json.NewDecoder(r.Body).Decode(&reg)
			regs = append(regs, reg)
		case strings.HasPrefix(r.URL.Path, "/v1/agent/service/deregister/"):
			deregs++
		}
	}))
	defer fake.Close()
	cc, err := consul.NewClient(&consul.Config{Address: strings.TrimPrefix(fake.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	e, err := intraefik.Start(intraefik.Config{AdminListen: "127.0.0.1:0", Register: true}, cc, io.Discard)
	if err != nil {
		t.Fatalf("Start with Consul refusing: %v", err)
	}
	defer e.Close(context.Background())
	select {
	case <-e.Registered():
		t.Fatal("registered while Consul refused")
	case <-time.After(100 * time.Millisecond):
	}
	mu.Lock()
	up = true
	mu.Unlock()
	select {
	case <-e.Registered():
	case <-time.After(10 * time.Second):
		t.Fatal("not registered 10 s after Consul answered")
	}
	mu.Lock()
	reg := regs[len(regs)-1]
	mu.Unlock()
	if reg.Name != proxy.ServiceName || reg.Meta[proxy.MetaInTraefik] != "true" || reg.Meta[proxy.MetaAdmin] != "http://"+e.AdminAddr() {
		t.Errorf("registration %+v: want %s with its admin address and %s", reg, proxy.ServiceName, proxy.MetaInTraefik)
	}
	if err := e.Deregister(); err != nil {
		t.Fatal(err)
	}
	e.Deregister()
	mu.Lock()
	defer mu.Unlock()
	if deregs != 1 {
		t.Errorf("%d deregistrations, want 1", deregs)
	}
}

func TestStartFailsOnATakenAddress(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	cc, _ := consul.NewClient(&consul.Config{Address: "127.0.0.1:1"})
	_, err := intraefik.Start(intraefik.Config{AdminListen: strings.TrimPrefix(srv.URL, "http://")}, cc, io.Discard)
	if err == nil || !strings.Contains(err.Error(), intraefik.EnvAdminListen) {
		t.Errorf("Start on a taken address: %v", err)
	}
}
