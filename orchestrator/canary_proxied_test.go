package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/router"
)

// proxiedRouter renders autoscaled functions' routes through caravan's
// proxies.
var proxiedRouter = func() router.Config {
	c := testRouter
	c.ProxyService = router.DefaultProxyService
	return c
}()

// scaledBirdsSpec is birdsSpec autoscaled: from 2 containers up to 4.
func scaledBirdsSpec(strategy, arg string) []byte {
	return []byte(strings.Replace(string(birdsSpec(strategy, arg)), "min_containers = 2", "min_containers = 2\n    max_containers = 4", 1))
}

// splitHeader is the Caravan-Split value Consul KV holds for the birds'
// split, "" when none.
func (h *harness) splitHeader() string {
	h.consul.mu.Lock()
	defer h.consul.mu.Unlock()
	return h.consul.kv["traefik/http/middlewares/"+birdsService+"-split/headers/customRequestHeaders/"+router.HeaderSplit]
}

// routeKeys are the KV keys of the birds' own proxied routes (theirs and
// their preview's), split keys aside.
func (h *harness) routeKeys() []string {
	var out []string
	for _, k := range h.consul.keys() {
		if strings.Contains(k, "-split") {
			continue
		}
		if strings.HasPrefix(k, "traefik/http/") || strings.HasPrefix(k, proxy.SettingsKVPrefix) {
			out = append(out, k)
		}
	}
	return out
}

func TestCanaryOfAnAutoscaledFunctionSplitsThroughTheProxy(t *testing.T) {
	h := newHarnessFor(t, proxiedRouter)
	h.mustDeploy(scaledBirdsSpec("canary", "v1"))
	for i := range 2 {
		h.consul.register(birdsService, fakeInstance{Instance: Instance{ID: fmt.Sprintf("_nomad-task-old%d", i), Address: "127.0.0.1", Port: 10000 + i}, passing: true})
	}
	h.canaryNomad()
	live := h.routeKeys()
	if !slices.ContainsFunc(live, func(k string) bool { return strings.Contains(k, "--canary") }) {
		t.Fatalf("the preview's routers are not published with the route: %v", live)
	}

	res := h.mustDeploy(scaledBirdsSpec("canary", "v2"))
	if res.Canary == nil || res.Canary.Traffic != 10 {
		t.Fatalf("canary = %+v", res.Canary)
	}
	if got, want := h.splitHeader(), "10;127.0.0.1:20000,127.0.0.1:20001"; got != want {
		t.Errorf("split header = %q, want %q", got, want)
	}
	for _, k := range res.Canary.Keys {
		if strings.Contains(k, "/services/") {
			t.Errorf("a proxied split published service key %s: it sends to the proxies", k)
		}
	}

	if _, err := h.o.Promote(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "birds"}}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	if got := h.splitHeader(); got != "" {
		t.Errorf("split header after the promotion = %q, want the split removed", got)
	}
	// The route's own routers and middlewares stay: removing the split
	// takes only its own keys.
	if got := h.routeKeys(); len(got) == 0 || !slices.Equal(got, live) {
		t.Errorf("route keys after the promotion:\n%v\nwant\n%v", got, live)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
		t.Errorf("history = %v", got)
	}
}

func TestAbortOfAnAutoscaledCanaryKeepsTheLiveRoute(t *testing.T) {
	h := newHarnessFor(t, proxiedRouter)
	h.mustDeploy(scaledBirdsSpec("canary", "v1"))
	for i := range 2 {
		h.consul.register(birdsService, fakeInstance{Instance: Instance{ID: fmt.Sprintf("_nomad-task-old%d", i), Address: "127.0.0.1", Port: 10000 + i}, passing: true})
	}
	h.canaryNomad()
	live := h.routeKeys()
	// The canary changes the route's settings: its routers and
	// middlewares are others, published at its deploy.
	v2 := strings.Replace(string(scaledBirdsSpec("canary", "v2")), "web {}", "web {\n      rate_limit = 5\n    }", 1)
	h.mustDeploy([]byte(v2))
	if got := h.routeKeys(); slices.Equal(got, live) {
		t.Fatalf("the canary's deploy left the route's keys as they were: %v", got)
	}
	if _, err := h.o.Abort(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "birds"}}); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if got := h.splitHeader(); got != "" {
		t.Errorf("split header after the abort = %q", got)
	}
	if got := h.routeKeys(); !slices.Equal(got, live) {
		t.Errorf("route keys after the abort:\n%v\nwant the live version's\n%v", got, live)
	}
	if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:aborted"}) {
		t.Errorf("history = %v", got)
	}
}

func TestDiscardedCanaryOfAnAutoscaledFunctionLeavesTheLiveRoute(t *testing.T) {
	for _, tc := range []struct {
		name, strategy string
		fail           func(h *harness)
	}{
		// Before any split: the preview's probe fails.
		{"preview never answers", "canary", func(h *harness) { h.prober.fail["web"] = errors.New("status 404") }},
		// After the split sent every request to the new set.
		{"Nomad refuses the switch", "blue-green", func(h *harness) { h.nomad.promoteErr = errors.New("no such deployment") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarnessFor(t, proxiedRouter)
			h.mustDeploy(scaledBirdsSpec(tc.strategy, "v1"))
			for i := range 2 {
				h.consul.register(birdsService, fakeInstance{Instance: Instance{ID: fmt.Sprintf("_nomad-task-old%d", i), Address: "127.0.0.1", Port: 10000 + i}, passing: true})
			}
			h.canaryNomad()
			live := h.routeKeys()
			liveKV := h.consul.snapshot(live)
			// The new version's route has other settings: its deploy
			// published other routers and middlewares.
			v2 := strings.Replace(string(scaledBirdsSpec(tc.strategy, "v2")), "web {}", "web {\n      rate_limit = 5\n    }", 1)
			tc.fail(h)
			var re *RolloutError
			if _, err := h.deploy([]byte(v2)); !errors.As(err, &re) {
				t.Fatalf("deploy: err = %v, want *RolloutError", err)
			}
			if got := h.splitHeader(); got != "" {
				t.Errorf("split header after the discard = %q, want none", got)
			}
			for _, k := range h.consul.keys() {
				if strings.Contains(k, "-split") {
					t.Errorf("split key %s left after the discard", k)
				}
			}
			if got := h.routeKeys(); !slices.Equal(got, live) {
				t.Errorf("route keys after the discard:\n%v\nwant the live version's\n%v", got, live)
			}
			if got := h.consul.snapshot(live); !maps.Equal(got, liveKV) {
				t.Errorf("route values after the discard:\n%v\nwant the live version's\n%v", got, liveKV)
			}
			if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:live", "2:failed"}) {
				t.Errorf("history = %v", got)
			}
		})
	}
}

// zeroBirdsSpec is birdsSpec autoscaled from zero.
func zeroBirdsSpec(strategy, arg string) []byte {
	return []byte(strings.Replace(string(birdsSpec(strategy, arg)), "min_containers = 2", "min_containers = 0\n    max_containers = 4", 1))
}

func TestSplitDeployOfAFunctionAtZeroGoesLive(t *testing.T) {
	for _, tc := range []struct {
		strategy string
		warned   bool
	}{
		// A canary at zero is a canary (TestCanaryAtZeroRunsAsAJobOfItsOwn).
		{"blue-green", true},
		{"rolling", false},
	} {
		t.Run(tc.strategy, func(t *testing.T) {
			h := newHarnessFor(t, proxiedRouter)
			if res := h.mustDeploy(zeroBirdsSpec(tc.strategy, "v1")); len(res.Warnings) != 0 {
				t.Errorf("first deploy warned %+v: nothing ran before it", res.Warnings)
			}
			live := h.routeKeys()
			res := h.mustDeploy(zeroBirdsSpec(tc.strategy, "v2"))
			if res.Canary != nil {
				t.Fatalf("canary = %+v, want none at zero", res.Canary)
			}
			warned := slices.ContainsFunc(res.Warnings, func(d Diagnostic) bool { return strings.Contains(d.Summary, "at zero") })
			if warned != tc.warned {
				t.Errorf("warnings = %+v, want the at-zero warning: %v", res.Warnings, tc.warned)
			}
			if got := h.statuses("dev--birds"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
				t.Errorf("history = %v", got)
			}
			if got := h.splitHeader(); got != "" {
				t.Errorf("split header = %q, want none", got)
			}
			if got := h.routeKeys(); !slices.Equal(got, live) {
				t.Errorf("route keys:\n%v\nwant\n%v", got, live)
			}
			if job := h.nomad.jobs["dev--birds"]; *job.TaskGroups[0].Count != 0 || *job.TaskGroups[0].Update.Canary != 0 {
				t.Errorf("registered count %d, canaries %d; want 0 and 0", *job.TaskGroups[0].Count, *job.TaskGroups[0].Update.Canary)
			}
		})
	}
}
