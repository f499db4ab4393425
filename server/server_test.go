package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/router"
	consul "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
)

// fakeConsul serves the part of Consul's KV HTTP API that ConsulKV uses,
// so the adapter and the wiring run without a Consul agent.
func fakeConsul(t *testing.T) *httptest.Server {
	var mu sync.Mutex
	kv := map[string][]byte{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		key, ok := strings.CutPrefix(r.URL.Path, "/v1/kv/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		switch r.Method {
		case http.MethodGet:
			var pairs []*consul.KVPair
			for k, v := range kv {
				if k == key || (q.Has("recurse") && strings.HasPrefix(k, key)) {
					pairs = append(pairs, &consul.KVPair{Key: k, Value: v, ModifyIndex: 1})
				}
			}
			if len(pairs) == 0 {
				http.NotFound(w, r)
				return
			}
			json.NewEncoder(w).Encode(pairs)
		case http.MethodPut:
			b, _ := io.ReadAll(r.Body)
			if _, exists := kv[key]; q.Get("cas") == "0" && exists {
				io.WriteString(w, "false")
				return
			}
			kv[key] = b
			io.WriteString(w, "true")
		case http.MethodDelete:
			delete(kv, key)
			io.WriteString(w, "true")
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestConsulKV(t *testing.T) {
	cc, err := consul.NewClient(&consul.Config{Address: fakeConsul(t).URL})
	if err != nil {
		t.Fatal(err)
	}
	kv := ConsulKV{KV: cc.KV()}
	ctx := context.Background()
	if v, err := kv.Get(ctx, "a/x"); v != nil || err != nil {
		t.Errorf("get of nothing: %q, %v", v, err)
	}
	for _, k := range []string{"a/x", "a/y", "b/z"} {
		if ok, err := kv.Create(ctx, k, []byte(k)); !ok || err != nil {
			t.Fatalf("create %s: %v, %v", k, ok, err)
		}
	}
	if ok, err := kv.Create(ctx, "a/x", []byte("again")); ok || err != nil {
		t.Errorf("create over a key: %v, %v; want false", ok, err)
	}
	if v, err := kv.Get(ctx, "a/x"); string(v) != "a/x" || err != nil {
		t.Errorf("get: %q, %v", v, err)
	}
	if vs, err := kv.List(ctx, "a/"); len(vs) != 2 || err != nil {
		t.Errorf("list: %q, %v", vs, err)
	}
	if err := kv.Put(ctx, "a/x", []byte("over")); err != nil {
		t.Fatal(err)
	}
	if v, _ := kv.Get(ctx, "a/x"); string(v) != "over" {
		t.Errorf("a key put over reads %q", v)
	}

	down := ConsulKV{KV: mustConsul(t, "127.0.0.1:1").KV()}
	if _, err := down.Get(ctx, "k"); err == nil {
		t.Error("get from no Consul succeeded")
	}
	if _, err := down.List(ctx, "k"); err == nil {
		t.Error("list from no Consul succeeded")
	}
}

func mustConsul(t *testing.T, addr string) *consul.Client {
	cc, err := consul.NewClient(&consul.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// The wiring `caravan server` and the e2e tests start: tokens in Consul,
// the handler on its listener, forwardAuth pointed at itself.
func TestServerWiring(t *testing.T) {
	consulSrv := fakeConsul(t)
	nomadSrv := httptest.NewServer(http.NotFoundHandler())
	defer nomadSrv.Close()
	s, err := New(Config{Listen: "127.0.0.1:0", NomadAddr: nomadSrv.URL, ConsulAddr: consulSrv.URL,
		ProxyAddr: "127.0.0.1:1", Router: router.DefaultConfig, Logger: hclog.NewNullLogger(), NATS: NATSConfig{Dir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	token, err := s.Tokens().Create("admin", "*")
	if err != nil {
		t.Fatal(err)
	}
	c := &api.Client{Addr: "http://" + s.Addr(), Token: token}
	list, err := c.Tokens(context.Background())
	if err != nil || len(list) != 1 || list[0].Name != "admin" {
		t.Errorf("tokens through the wired server: %+v, %v", list, err)
	}
	if s.Handler() == nil {
		t.Error("no handler")
	}
}

func TestNewRefusesABadRootCA(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{filepath.Join(dir, "missing.pem"): "reading root CA", junk: "no certificates"} {
		// A fixed port: a refused configuration must give it back.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, err = New(Config{Listen: addr, ProxyAddr: "127.0.0.1:1", RootCAFile: file, Logger: hclog.NewNullLogger()})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("root CA %s: %v, want %q", filepath.Base(file), err, want)
		}
		if ln, err := net.Listen("tcp", addr); err != nil {
			t.Errorf("after a refused configuration the port is still held: %v", err)
		} else {
			ln.Close()
		}
	}
	if _, err := New(Config{Listen: "256.0.0.1:0"}); err == nil {
		t.Error("listening on a bad address succeeded")
	}
}

// A second server of a cluster renders the first's routes or does not
// start: on another --listen without --auth-url, its forwardAuth address
// would be its own. With the first's --auth-url it starts.
func TestNewRefusesAnotherClustersRouteSettings(t *testing.T) {
	consulSrv := fakeConsul(t)
	cfg := func(authURL string) Config {
		rc := router.DefaultConfig
		rc.AuthURL = authURL
		return Config{Listen: "127.0.0.1:0", NomadAddr: "http://127.0.0.1:1", ConsulAddr: consulSrv.URL, Router: rc, Logger: hclog.NewNullLogger(),
			NATS: NATSConfig{Dir: t.TempDir()}}
	}
	a, err := New(cfg(""))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	_, err = New(cfg(""))
	var mm *RouterMismatchError
	if !errors.As(err, &mm) || len(mm.Settings) != 1 || mm.Settings[0].Flag != "--auth-url" ||
		mm.Settings[0].Cluster != router.AuthURL(a.Addr()) || !strings.Contains(mm.By, a.Addr()) {
		t.Fatalf("a second server on its own address: %v, want a mismatch of --auth-url with %s", err, router.AuthURL(a.Addr()))
	}
	b, err := New(cfg(router.AuthURL(a.Addr())))
	if err != nil {
		t.Fatalf("a second server with the first's --auth-url: %v", err)
	}
	b.Shutdown(context.Background())
}
