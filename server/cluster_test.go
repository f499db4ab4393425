package server

import (
	"context"
	"errors"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/router"
)

// raceKV is memKV whose first Create loses to another server's, which
// writes its own value just before.
type raceKV struct {
	*memKV
	theirs []byte
	raced  bool
}

func (k *raceKV) Create(ctx context.Context, key string, value []byte) (bool, error) {
	if !k.raced {
		k.raced = true
		k.memKV.Create(ctx, key, k.theirs)
	}
	return k.memKV.Create(ctx, key, value)
}

// TestProbeKeyIsTheCluster's: every server reads the one key the first
// made, so a probe one server made passes another's forwardAuth; a server
// that loses the race to make it takes the winner's.
func TestProbeKeyIsTheClusters(t *testing.T) {
	ctx := context.Background()
	kv := newMemKV()
	a, err := sharedProbeKey(ctx, kv)
	if err != nil || len(a) != 64 {
		t.Fatalf("first server: %q, %v", a, err)
	}
	b, err := sharedProbeKey(ctx, kv)
	if err != nil || b != a {
		t.Fatalf("second server: %q, %v; want the first's", b, err)
	}
	host := "e2e--shop-web.caravan.localhost"
	r := httptest.NewRequest("GET", router.ProxyAuthPath, nil)
	r.Header = ProbeHeader(a, host)
	r.Header.Set("X-Forwarded-Host", host)
	if !validProbe(b, r, time.Now()) {
		t.Error("server B refuses server A's probe")
	}

	race := &raceKV{memKV: newMemKV(), theirs: []byte("theirs")}
	if got, err := sharedProbeKey(ctx, race); err != nil || got != "theirs" {
		t.Errorf("losing the race: %q, %v; want the winner's", got, err)
	}

	down := newMemKV()
	down.fail(errors.New("connection refused"))
	if _, err := sharedProbeKey(ctx, down); err == nil || !strings.Contains(err.Error(), kvProbeSecret) {
		t.Errorf("Consul down: %v, want an error naming %s", err, kvProbeSecret)
	}
}

// TestServersAgreeOnRouteSettings: the first server records its route
// settings; a later one with the same starts, one with others is refused
// with every setting that differs, its flag, both values, and how to fix
// it.
func TestServersAgreeOnRouteSettings(t *testing.T) {
	ctx := context.Background()
	kv := newMemKV()
	first := router.DefaultConfig
	first.AuthURL = router.AuthURL("127.0.0.1:7474")
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if err := agreeRouter(ctx, kv, first, "server A", at); err != nil {
		t.Fatal(err)
	}
	if err := agreeRouter(ctx, kv, first, "server B", at.Add(time.Hour)); err != nil {
		t.Fatalf("the same settings: %v", err)
	}

	other := first
	other.AuthURL = router.AuthURL("127.0.0.1:7475")
	other.Domain = "apps.example.com"
	err := agreeRouter(ctx, kv, other, "server C", at.Add(time.Hour))
	var mm *RouterMismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("other settings: %v, want a *RouterMismatchError", err)
	}
	want := []SettingMismatch{
		{"--domain", "apps.example.com", "caravan.localhost"},
		{"--auth-url", "http://127.0.0.1:7475/v1/auth/proxy", "http://127.0.0.1:7474/v1/auth/proxy"},
	}
	if !reflect.DeepEqual(mm.Settings, want) || mm.By != "server A" || !mm.At.Equal(at) {
		t.Errorf("mismatch %+v, want %+v by server A at %v", mm, want, at)
	}
	for _, s := range []string{"--domain", `"apps.example.com"`, `"caravan.localhost"`, "--auth-url", "server A", kvRouterConfig,
		"load balancer", "consul kv delete " + kvRouterConfig, "caravan app rollover"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("the error does not say %s:\n%s", s, err)
		}
	}

	// Only a different forwardAuth address is told about load balancers.
	domainOnly := first
	domainOnly.Domain = "apps.example.com"
	if err := agreeRouter(ctx, kv, domainOnly, "server F", at); err == nil || strings.Contains(err.Error(), "load balancer") {
		t.Errorf("another domain alone: %v, want a mismatch that says nothing of --auth-url", err)
	}

	// Two servers starting at once: the one that loses the race compares
	// with the winner's.
	race := &raceKV{memKV: newMemKV()}
	race.theirs = kv.m[kvRouterConfig]
	if err := agreeRouter(ctx, race, other, "server D", at); !errors.As(err, &mm) {
		t.Errorf("losing the race with other settings: %v, want a *RouterMismatchError", err)
	}

	down := newMemKV()
	down.fail(errors.New("connection refused"))
	if err := agreeRouter(ctx, down, first, "server E", at); err == nil || !strings.Contains(err.Error(), kvRouterConfig) {
		t.Errorf("Consul down: %v, want an error naming %s", err, kvRouterConfig)
	}
}

// TestEveryRouteSettingIsCompared: a field added to router.Config without
// a flag in routerSettings would let two servers that differ in it share
// a cluster.
func TestEveryRouteSettingIsCompared(t *testing.T) {
	typ := reflect.TypeOf(router.Config{})
	for i := range typ.NumField() {
		if typ.Field(i).Tag.Get("json") == "-" {
			continue // not recorded: no route setting (router.Config.Worker)
		}
		var c router.Config
		f := reflect.ValueOf(&c).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Int, reflect.Int64: // an int64 is a time.Duration
			f.SetInt(int64(3 * time.Second))
		default:
			t.Fatalf("router.Config.%s is a %s: teach this test (and routerSettings) about it", typ.Field(i).Name, f.Kind())
		}
		if len(routerDiff(c, router.Config{})) != 1 {
			t.Errorf("router.Config.%s is not compared by routerSettings", typ.Field(i).Name)
		}
	}
}
