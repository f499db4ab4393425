package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/proxy"
)

func TestWithLoad(t *testing.T) {
	apps := func() []api.AppSummary {
		return []api.AppSummary{{App: "shop", Functions: []api.FunctionSummary{
			{Name: "web", Service: "shop-web", Autoscaled: true},
			{Name: "api", Service: "shop-api", Autoscaled: true},
			{Name: "fixed", Service: "shop-fixed"},
		}}}
	}
	report := func(fns ...proxy.FunctionLoad) proxy.Report { return proxy.Report{Functions: fns} }
	for _, c := range []struct {
		name    string
		reports []proxy.Report
		known   int
		want    []*api.FunctionLoad // web, api, fixed
	}{
		{"no report: unknown", nil, 2, []*api.FunctionLoad{nil, nil, nil}},
		{"summed over the proxies; a function no proxy knows holds none", []proxy.Report{
			report(proxy.FunctionLoad{Function: "shop-web", InFlight: 2, Queued: 1}, proxy.FunctionLoad{Function: "shop-fixed", InFlight: 9}),
			report(proxy.FunctionLoad{Function: "shop-web", InFlight: 1, Queued: 4}),
		}, 2, []*api.FunctionLoad{{InFlight: 3, Queued: 5, Proxies: 2, ProxiesKnown: 2}, {Proxies: 2, ProxiesKnown: 2}, nil}},
		{"one proxy of two answered", []proxy.Report{report(proxy.FunctionLoad{Function: "shop-api", Queued: 3})}, 2,
			[]*api.FunctionLoad{{Proxies: 1, ProxiesKnown: 2}, {Queued: 3, Proxies: 1, ProxiesKnown: 2}, nil}},
	} {
		a := apps()
		withLoad(a, c.reports, c.known)
		for i, f := range a[0].Functions {
			if !reflect.DeepEqual(f.Load, c.want[i]) {
				t.Errorf("%s: %s: %+v, want %+v", c.name, f.Name, f.Load, c.want[i])
			}
		}
	}
}

// fakeLoads answers Load from reports by admin URL; an admin without one
// fails.
type fakeLoads struct {
	admins  []string
	reports map[string]proxy.Report
	err     error
	calls   int
}

func (f *fakeLoads) Proxies(context.Context) ([]string, error) { f.calls++; return f.admins, f.err }

func (f *fakeLoads) Load(_ context.Context, admin string) (proxy.Report, error) {
	r, ok := f.reports[admin]
	if !ok {
		return proxy.Report{}, errors.New("connection refused")
	}
	return r, nil
}

func TestAppListCarriesTheProxiesLoad(t *testing.T) {
	e := newEnv(t)
	e.orch.apps = []api.AppSummary{{Workspace: "shop", App: "demo", Functions: []api.FunctionSummary{
		{Name: "web", Service: "shop--demo-web", Autoscaled: true, Running: 1, Desired: 2}}}}
	loads := &fakeLoads{admins: []string{"http://a", "http://b"}, reports: map[string]proxy.Report{
		"http://a": {Functions: []proxy.FunctionLoad{{Function: "shop--demo-web", InFlight: 1, Queued: 6}}}}}
	srv := httptest.NewServer(NewHandler(Deps{Orchestrator: e.orch, Tokens: e.tokens, Loads: loads}))
	t.Cleanup(srv.Close)
	e.srv = srv
	a := e.as(e.shop, "GET", "/v1/apps", "")
	var apps []api.AppSummary
	if err := json.Unmarshal(a.body, &apps); a.status != 200 || err != nil {
		t.Fatalf("GET /v1/apps: %d %v %s", a.status, err, a.body)
	}
	want := &api.FunctionLoad{InFlight: 1, Queued: 6, Proxies: 1, ProxiesKnown: 2}
	if got := apps[0].Functions[0].Load; !reflect.DeepEqual(got, want) {
		t.Fatalf("load: %+v, want %+v", got, want)
	}

	// Consul away: the list still answers, without the load.
	loads.err = errors.New("consul down")
	e.orch.apps[0].Functions[0].Load = nil // the fake hands out the same slice
	a = e.as(e.shop, "GET", "/v1/apps", "")
	apps = nil
	if err := json.Unmarshal(a.body, &apps); a.status != 200 || err != nil || apps[0].Functions[0].Load != nil {
		t.Fatalf("GET /v1/apps with Consul away: %d %v %s", a.status, err, a.body)
	}

	// No autoscaled function: the proxies are not asked.
	e.orch.apps[0].Functions[0].Autoscaled = false
	calls := loads.calls
	e.as(e.shop, "GET", "/v1/apps", "")
	if loads.calls != calls {
		t.Error("the proxies were asked for a list without autoscaled functions")
	}
}
