package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravanhq/caravan/proxy"
)

// flakyDiscovery fails every Watch while fail is set.
type flakyDiscovery struct {
	*fakeDiscovery
	fail     atomic.Bool
	failures atomic.Int64
}

func (f *flakyDiscovery) Watch(ctx context.Context, name string, index uint64) (proxy.Snapshot, uint64, error) {
	if f.fail.Load() {
		f.failures.Add(1)
		return proxy.Snapshot{}, index, io.ErrUnexpectedEOF
	}
	snap, next, err := f.fakeDiscovery.Watch(ctx, name, index)
	if f.fail.Load() { // failed while it waited
		f.failures.Add(1)
		return proxy.Snapshot{}, index, io.ErrUnexpectedEOF
	}
	return snap, next, err
}

func metricsText(t *testing.T, p *proxy.Proxy) string {
	t.Helper()
	rec := httptest.NewRecorder()
	p.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, proxy.MetricsPath, nil))
	if rec.Code != 200 {
		t.Fatalf("metrics: %d", rec.Code)
	}
	return rec.Body.String()
}

func wantMetric(t *testing.T, text, line string) {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return
		}
	}
	t.Errorf("metrics have no line %q:\n%s", line, text)
}

func TestAdmin(t *testing.T) {
	disc := newFakeDiscovery()
	b := newBackend(t, "a", nil)
	b.hold = make(chan struct{})
	disc.Set("fn", &proxy.Settings{MaxInputs: 1}, b.instance())
	p, srv := newProxy(t, disc)
	admin := httptest.NewServer(p.AdminHandler())
	t.Cleanup(admin.Close)

	done := make(chan struct{})
	go func() { defer close(done); get(t, srv, "fn", "1") }()
	eventually(t, "in flight", func() bool { return b.cur.Load() == 1 })
	queued := make(chan struct{})
	go func() { defer close(queued); get(t, srv, "fn", "2") }()
	eventually(t, "queued", func() bool { return load(p, "fn").Queued == 1 })

	r, err := proxy.FetchLoad(context.Background(), admin.Client(), admin.URL)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Functions) != 1 || r.Functions[0].Function != "fn" || r.Functions[0].InFlight != 1 || r.Functions[0].Queued != 1 ||
		r.Functions[0].Ready != 1 || r.Functions[0].MaxInputs != 1 || len(r.Functions[0].Instances) != 1 || r.Functions[0].Instances[0].ID != "a" {
		t.Errorf("load report = %+v", r)
	}
	m := metricsText(t, p)
	wantMetric(t, m, `caravan_proxy_in_flight{function="fn"} 1`)
	wantMetric(t, m, `caravan_proxy_queued{function="fn"} 1`)
	wantMetric(t, m, `caravan_proxy_containers_ready{function="fn"} 1`)

	post := func(query string) (int, proxy.DrainResult) {
		res, err := admin.Client().Post(admin.URL+proxy.DrainPath+"?"+query, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var dr proxy.DrainResult
		json.NewDecoder(res.Body).Decode(&dr)
		return res.StatusCode, dr
	}
	if code, _ := post("function=fn&instance=nope"); code != http.StatusNotFound {
		t.Errorf("drain of an unknown container: %d", code)
	}
	if code, _ := post("function=fn&instance=a&wait=forever"); code != http.StatusBadRequest {
		t.Errorf("drain with a bad wait: %d", code)
	}
	if code, dr := post("function=fn&instance=a&wait=0s"); code != 200 || dr.Drained || dr.InFlight != 1 {
		t.Errorf("drain while busy, no wait: %d %+v", code, dr)
	}
	req, _ := http.NewRequest(http.MethodDelete, admin.URL+proxy.DrainPath+"?function=fn&instance=a", nil)
	if res, err := admin.Client().Do(req); err != nil || res.StatusCode != http.StatusNoContent {
		t.Errorf("undrain: %v %v", res, err)
	}
	close(b.hold)
	<-done
	<-queued
	if code, dr := post("function=fn&instance=a"); code != 200 || !dr.Drained {
		t.Errorf("drain when idle: %d %+v", code, dr)
	}
	res, err := admin.Client().Get(admin.URL + proxy.HealthPath)
	if err != nil || res.StatusCode != 200 {
		t.Errorf("health: %v %v", res, err)
	}
}

// TestWatchLoad: the long poll of the load report answers once a queue
// starts (a cold start the autoscaler must hear of now), or when its wait
// ends.
func TestWatchLoad(t *testing.T) {
	disc := newFakeDiscovery()
	disc.Set("fn", nil) // known, at zero
	p, srv := newProxy(t, disc)
	admin := httptest.NewServer(p.AdminHandler())
	t.Cleanup(admin.Close)

	r, err := proxy.FetchLoad(context.Background(), admin.Client(), admin.URL)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := proxy.WatchLoad(context.Background(), admin.Client(), admin.URL, r.Index, 0); err != nil || r.Index != 0 {
		t.Fatalf("a poll that waits 0s: %+v, %v", r, err)
	}
	got := make(chan proxy.Report, 1)
	go func() {
		r, err := proxy.WatchLoad(context.Background(), admin.Client(), admin.URL, r.Index, time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	done := make(chan struct{})
	go func() { defer close(done); get(t, srv, "fn", "cold") }()
	r = <-got
	if r.Index != 1 || len(r.Functions) != 1 || r.Functions[0].Queued != 1 {
		t.Errorf("the poll answered %+v, want index 1 and the request queued", r)
	}
	b := newBackend(t, "a", nil)
	disc.Set("fn", nil, b.instance())
	<-done
	res, err := admin.Client().Get(admin.URL + proxy.LoadPath + "?index=x")
	if err != nil || res.StatusCode != http.StatusBadRequest {
		t.Errorf("a bad index: %v %v", res, err)
	}
}
