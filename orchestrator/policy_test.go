package orchestrator

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/policy"
)

// harnessPolicy lets the harness's apps (workspace dev, raw_exec) run.
const harnessPolicy = `workspace "*" {
  drivers = ["raw_exec", "exec", "docker"]
}
`

func mustPolicy(t *testing.T, src string) *policy.Policy {
	t.Helper()
	p, diags := policy.Parse([]byte(src), "policy.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return p
}

// TestPolicyRefusalChangesNothing: a version its workspace's policy does
// not allow is refused before Nomad hears of it, before a version number
// is handed out and before a hostname is claimed, whether it is a new
// app, a change, a rollover or a rollback; plan reports it as a problem.
func TestPolicyRefusalChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	h.mustDeploy(shopSpec("hello"))
	h.o.policy = mustPolicy(t, "workspace \"dev\" {\n  drivers = [\"exec\", \"docker\"]\n}\n")
	calls, hosts := slices.Clone(h.nomad.calls), h.store.heldHosts("dev--shop")
	before := h.record("dev--shop")

	check := func(what string, err error) {
		t.Helper()
		var pe *PolicyError
		if !errors.As(err, &pe) {
			t.Fatalf("%s: err = %v, want *PolicyError", what, err)
		}
		if pe.Policy != `workspace "dev" (policy.hcl:1)` || pe.Workspace != "dev" || pe.App != "shop" ||
			len(pe.Violations) != 1 || pe.Violations[0].Function != "web" || pe.Violations[0].Limit != "drivers" {
			t.Errorf("%s: %+v", what, pe)
		}
		for _, want := range []string{`workspace "dev" (policy.hcl:1)`, `function "web"`, `driver "raw_exec"`, "drivers = "} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q does not say %s", what, err, want)
			}
		}
	}
	_, err := h.deploy(shopSpec("changed"))
	check("deploy", err)
	_, err = h.o.Rollover(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "shop"}})
	check("rollover", err)
	_, err = h.o.Rollback(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "shop"}})
	check("rollback", err)

	if !slices.Equal(h.nomad.calls, calls) {
		t.Errorf("Nomad calls after the refusals: %v, before %v", h.nomad.calls[len(calls):], calls)
	}
	if after := h.record("dev--shop"); after.LatestVersion != before.LatestVersion || after.LiveVersion != before.LiveVersion {
		t.Errorf("a refusal handed out a version: latest %d live %d, before %d %d", after.LatestVersion, after.LiveVersion,
			before.LatestVersion, before.LiveVersion)
	}
	if got := h.statuses("dev--shop"); !slices.Equal(got, []string{"1:superseded", "2:live"}) {
		t.Errorf("history = %v", got)
	}
	if got := h.store.heldHosts("dev--shop"); !slices.Equal(got, hosts) {
		t.Errorf("hosts = %v, before %v", got, hosts)
	}

	// A new app: no record, no claim.
	_, err = h.deploy([]byte(strings.Replace(twoDomains, `app "shop"`, `app "mall"`, 1)))
	var pe *PolicyError
	if !errors.As(err, &pe) {
		t.Fatalf("new app: err = %v", err)
	}
	if rec, _, _ := h.store.App(context.Background(), "dev--mall"); rec != nil {
		t.Errorf("a refused new app has a record: %+v", rec)
	}
	if got := h.store.heldHosts("dev--mall"); len(got) != 0 {
		t.Errorf("a refused new app claimed %v", got)
	}

	// Plan says so, as a problem, and still shows the rest.
	p, err := h.o.Plan(context.Background(), ci, DeployRequest{Spec: shopSpec("changed")})
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	if len(p.Problems) != 1 || !strings.Contains(p.Problems[0], `function "web": driver "raw_exec" is not allowed`) ||
		!strings.Contains(p.Problems[0], `workspace "dev" (policy.hcl:1)`) || !p.Changed {
		t.Errorf("plan = %+v", p)
	}
	if h.nomad.count("register") != 2 {
		t.Errorf("registered %d times, want the 2 allowed versions", h.nomad.count("register"))
	}
}

// TestNoPolicyAllowsNoRawExec: an orchestrator without a Policy holds
// every workspace to policy.Default.
func TestNoPolicyAllowsNoRawExec(t *testing.T) {
	h := newHarness(t)
	o, err := New(Config{Nomad: h.nomad, Consul: h.consul, Store: h.store, Router: testRouter})
	if err != nil {
		t.Fatal(err)
	}
	_, err = o.Deploy(context.Background(), ci, DeployRequest{Spec: shopSpec("hi"), Filename: "app.hcl"})
	var pe *PolicyError
	if !errors.As(err, &pe) || pe.Policy != `workspace "*" (built-in)` {
		t.Fatalf("err = %v, want the built-in policy's refusal", err)
	}
	if len(h.nomad.calls) != 0 {
		t.Errorf("Nomad calls: %v", h.nomad.calls)
	}
}
