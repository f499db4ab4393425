package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/clientcfg"
	"github.com/caravanhq/caravan/proxy"
	consul "github.com/hashicorp/consul/api"
)

// fakeConsul answers /v1/health/service/<name> and /v1/kv/<key> as Consul
// does, noting each health query's index and wait.
type fakeConsul struct {
	entries []*consul.ServiceEntry
	kv      map[string]string
	index   uint64
	queries []string // each health query's index and wait
}

func (f *fakeConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v1/health/service/fn":
		f.queries = append(f.queries, r.URL.Query().Get("index")+" "+r.URL.Query().Get("wait")+" passing="+strconv.FormatBool(r.URL.Query().Has("passing")))
		w.Header().Set("X-Consul-Index", strconv.FormatUint(f.index, 10))
		json.NewEncoder(w).Encode(f.entries)
	case len(r.URL.Path) > len("/v1/kv/"):
		v, ok := f.kv[r.URL.Path[len("/v1/kv/"):]]
		if !ok {
			w.Header().Set("X-Consul-Index", "1")
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Consul-Index", "1")
		json.NewEncoder(w).Encode([]*consul.KVPair{{Key: r.URL.Path[len("/v1/kv/"):], Value: []byte(v)}})
	default:
		http.NotFound(w, r)
	}
}

func TestConsulDiscovery(t *testing.T) {
	fc := &fakeConsul{index: 42, kv: map[string]string{}, entries: []*consul.ServiceEntry{
		{Node: &consul.Node{Address: "10.0.0.9"}, Service: &consul.AgentService{ID: "_nomad-task-1", Port: 23001,
			Meta: map[string]string{proxy.MetaMaxInputs: "4", proxy.MetaQueueMax: "10", proxy.MetaQueueTimeout: "2m"}}},
		{Node: &consul.Node{Address: "10.0.0.9"}, Service: &consul.AgentService{ID: "_nomad-task-2", Address: "10.0.0.7", Port: 23002},
			Checks: consul.HealthChecks{{Status: consul.HealthPassing}}},
		{Node: &consul.Node{Address: "10.0.0.8"}, Service: &consul.AgentService{ID: "_nomad-task-3", Port: 23003,
			Meta: map[string]string{proxy.MetaMaxInputs: "8", proxy.MetaHealthPath: "/healthz"}},
			Checks: consul.HealthChecks{{Status: consul.HealthCritical}}},
	}}
	srv := httptest.NewServer(fc)
	t.Cleanup(srv.Close)
	client, err := consul.NewClient(&consul.Config{Address: srv.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	d := &proxy.Consul{Client: client, WaitTime: 30 * time.Second}

	snap, idx, err := d.Watch(context.Background(), "fn", 7)
	if err != nil {
		t.Fatal(err)
	}
	if idx != 42 {
		t.Errorf("index = %d, want 42", idx)
	}
	want := []proxy.Instance{{ID: "_nomad-task-1", Addr: "10.0.0.9:23001"}, {ID: "_nomad-task-2", Addr: "10.0.0.7:23002"}}
	if !slices.Equal(snap.Instances, want) {
		t.Errorf("instances = %+v, want %+v", snap.Instances, want)
	}
	if !snap.Known || snap.Starting != 1 {
		t.Errorf("known %v, starting = %d, want known and 1 (the instance whose check is critical)", snap.Known, snap.Starting)
	}
	if want := []proxy.Instance{{ID: "_nomad-task-3", Addr: "10.0.0.8:23003", HealthPath: "/healthz"}}; !slices.Equal(snap.Pending, want) {
		t.Errorf("pending = %+v, want %+v (the starting one, with its health path)", snap.Pending, want)
	}
	if snap.Settings == nil || *snap.Settings != (proxy.Settings{MaxInputs: 4, QueueMax: 10, QueueTimeout: 2 * time.Minute}) {
		t.Errorf("settings = %+v, want a passing container's", snap.Settings)
	}

	if want := []string{"7 30000ms passing=false"}; !slices.Equal(fc.queries, want) {
		t.Errorf("health queries = %q, want %q (a blocking query of every instance)", fc.queries, want)
	}

	// At a cold start only a starting container says the settings.
	all := fc.entries
	fc.entries = all[2:]
	if snap, _, err = d.Watch(context.Background(), "fn", 42); err != nil || snap.Settings == nil || *snap.Settings != (proxy.Settings{MaxInputs: 8, HealthPath: "/healthz"}) {
		t.Errorf("starting only: settings %+v, %v; want the starting container's", snap.Settings, err)
	}
	fc.entries = all

	// At zero, the settings come from KV, when it has them.
	fc.entries = nil
	fc.kv[proxy.SettingsKVPrefix+"fn"] = `{"max_inputs": 3, "queue_max": 5, "queue_timeout": "10s"}`
	snap, _, err = d.Watch(context.Background(), "fn", 42)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Instances) != 0 || !snap.Known || snap.Settings == nil || *snap.Settings != (proxy.Settings{MaxInputs: 3, QueueMax: 5, QueueTimeout: 10 * time.Second}) {
		t.Errorf("at zero: %+v, settings %+v", snap.Instances, snap.Settings)
	}
	delete(fc.kv, proxy.SettingsKVPrefix+"fn")
	if snap, _, err = d.Watch(context.Background(), "fn", 42); err != nil || snap.Settings != nil || snap.Known {
		t.Errorf("no instance, no record: settings %+v, known %v, %v; want an unknown function", snap.Settings, snap.Known, err)
	}
}

// A client built by clientcfg (caravan proxy's) sends its ACL token on
// every blocking query and settings read.
func TestConsulDiscoveryCarriesTheToken(t *testing.T) {
	fc := &fakeConsul{index: 7, kv: map[string]string{}}
	var tokens []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokens = append(tokens, r.URL.Path+" "+r.Header.Get("X-Consul-Token"))
		fc.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("CONSUL_HTTP_TOKEN", "proxy-secret")
	client, err := clientcfg.Consul{Addr: srv.Listener.Addr().String()}.Client()
	if err != nil {
		t.Fatal(err)
	}
	d := &proxy.Consul{Client: client, WaitTime: time.Second}
	if _, _, err := d.Watch(context.Background(), "fn", 3); err != nil {
		t.Fatal(err)
	}
	if len(tokens) == 0 {
		t.Fatal("no request reached Consul")
	}
	for _, tok := range tokens {
		if !strings.HasSuffix(tok, " proxy-secret") {
			t.Errorf("a request without the token: %s", tok)
		}
	}
	if len(fc.queries) != 1 || !strings.HasPrefix(fc.queries[0], "3 ") {
		t.Errorf("health queries %q, want one blocking at index 3", fc.queries)
	}
}
