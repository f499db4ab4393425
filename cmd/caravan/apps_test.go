package main

import (
	"strings"
	"testing"

	"github.com/caravanhq/caravan/api"
)

func TestContainersColumn(t *testing.T) {
	for _, c := range []struct {
		name string
		f    api.FunctionSummary
		want string
	}{
		{"fixed count reached", api.FunctionSummary{Running: 2, Desired: 2}, "2 running"},
		{"fixed count on its way", api.FunctionSummary{Running: 1, Desired: 3}, "1 of 3 running"},
		{"autoscaled at zero", api.FunctionSummary{Autoscaled: true, Load: &api.FunctionLoad{Proxies: 2, ProxiesKnown: 2}},
			"0 of 0 running, 0 in flight, 0 queued"},
		{"autoscaled scaling up", api.FunctionSummary{Autoscaled: true, Running: 1, Desired: 3,
			Load: &api.FunctionLoad{InFlight: 4, Queued: 7, Proxies: 2, ProxiesKnown: 2}}, "1 of 3 running, 4 in flight, 7 queued"},
		{"a proxy did not answer", api.FunctionSummary{Autoscaled: true, Running: 2, Desired: 2,
			Load: &api.FunctionLoad{InFlight: 2, Proxies: 1, ProxiesKnown: 2}}, "2 of 2 running, 2 in flight, 0 queued (1 of 2 proxies answered)"},
		{"no proxy answered", api.FunctionSummary{Autoscaled: true, Running: 1, Desired: 1}, "1 of 1 running, load unknown"},
	} {
		if got := containersColumn(c.f); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestAppListShowsLoad(t *testing.T) {
	srv, _ := fakeServer(t, map[string]any{"GET /v1/apps": []api.AppSummary{{
		Workspace: "dev", App: "shop", State: api.StateDeployed, Version: 2, LatestVersion: 2,
		Functions: []api.FunctionSummary{
			{Name: "web", URL: "https://dev--shop-web.caravan.localhost", Service: "dev--shop-web", Running: 1, Desired: 2,
				Autoscaled: true, Load: &api.FunctionLoad{InFlight: 3, Queued: 5, Proxies: 2, ProxiesKnown: 2}},
			{Name: "admin", Running: 1, Desired: 1},
		}}}})
	out, _, err := runCLI(t, "--addr", srv.URL, "app", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"web (1 of 2 running, 3 in flight, 5 queued) https://dev--shop-web.caravan.localhost", "admin (1 running)"} {
		if !strings.Contains(out, want) {
			t.Errorf("app list lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCLI(t, "--addr", srv.URL, "app", "list", "--json")
	if err != nil || !strings.Contains(out, `"queued": 5`) || !strings.Contains(out, `"desired": 2`) {
		t.Errorf("app list --json: %v\n%s", err, out)
	}
}
