// Package acl holds the Nomad and Consul ACL policies caravan's parts
// need (the *.policy.hcl files beside this one); its test holds them to
// the code's calls.
package acl

import (
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/caravanhq/caravan/orchestrator"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// nomadCalls is the capability each method of orchestrator.Nomad (and the
// autoscaler's two calls) needs in a workspace's namespace, as Nomad 1.11
// checks it. A method missing here fails the test: a new Nomad call needs
// its line here and, if new, its capability in the policy.
var nomadCalls = map[string]string{
	"Job": "read-job", "Summary": "read-job", "JobAllocations": "read-job", "LatestDeployment": "read-job",
	"Allocation": "read-job", "Deployment": "read-job", "DeploymentAllocations": "read-job", "Evaluation": "read-job",
	"Jobs": "list-jobs",
	// Namespaces().Info: Nomad answers a token with any capability in it.
	"Namespace": "read-job",
	"Plan":      "submit-job", "Register": "submit-job", "Revert": "submit-job", "Deregister": "submit-job",
	"FailDeployment": "submit-job", "PromoteDeployment": "submit-job", "SetAllocHealth": "submit-job", "ForcePeriodic": "submit-job",
	"Dispatch":   "dispatch-job",
	"ReadFile":   "read-fs",
	"FollowLogs": "read-logs",
	// autoscaler.Clients
	"autoscaler Scale": "scale-job", "autoscaler ScaleStatus": "read-job",
}

func TestNomadPolicyCoversEveryCall(t *testing.T) {
	body := parse(t, "nomad-caravan-server.policy.hcl")
	var caps []string
	var nodeRead bool
	for _, b := range body.Blocks {
		switch {
		case b.Type == "namespace" && len(b.Labels) == 1 && b.Labels[0] == "caravan-*":
			caps = strings(t, b.Body, "capabilities")
		case b.Type == "node":
			nodeRead = str(t, b.Body, "policy") == "read"
		default:
			t.Errorf("unexpected block %s %v: least privilege says no more than the calls need", b.Type, b.Labels)
		}
	}
	iface := reflect.TypeOf((*orchestrator.Nomad)(nil)).Elem()
	for i := range iface.NumMethod() {
		if _, ok := nomadCalls[iface.Method(i).Name]; !ok {
			t.Errorf("orchestrator.Nomad.%s: which Nomad capability does it need? Add it to nomadCalls and the policy", iface.Method(i).Name)
		}
	}
	need := map[string]bool{}
	for call, c := range nomadCalls {
		need[c] = true
		if !slices.Contains(caps, c) {
			t.Errorf("%s needs %s, which the policy does not grant in caravan-*", call, c)
		}
	}
	for _, c := range caps {
		if !need[c] {
			t.Errorf("the policy grants %s, which no call needs", c)
		}
	}
	if !nodeRead {
		t.Error("node read (AllocFS looks the allocation's node up) is missing")
	}
}

// consulRules is each policy file's rules, as "<block> <label> <policy>".
var consulRules = map[string][]string{
	"consul-caravan-server.policy.hcl": {`key_prefix "caravan/" write`, `key_prefix "traefik/" write`, `session_prefix "" write`,
		`service_prefix "" read`, `node_prefix "" read`},
	"consul-caravan-proxy.policy.hcl": {`service_prefix "" read`, `node_prefix "" read`, `key_prefix "caravan/proxy/functions/" read`,
		`service "caravan-proxy" write`},
	"consul-traefik.policy.hcl": {`service_prefix "" read`, `node_prefix "" read`, `key_prefix "traefik/" read`},
}

// The Consul policies hold exactly the rules their comments derive from
// the calls (and parse as HCL, as `consul acl policy create` wants).
func TestConsulPolicies(t *testing.T) {
	for file, want := range consulRules {
		var got []string
		for _, b := range parse(t, file).Blocks {
			if len(b.Labels) != 1 {
				t.Errorf("%s: block %s has labels %v", file, b.Type, b.Labels)
				continue
			}
			got = append(got, b.Type+` "`+b.Labels[0]+`" `+str(t, b.Body, "policy"))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", file, got, want)
		}
	}
}

func parse(t *testing.T, name string) *hclsyntax.Body {
	t.Helper()
	src, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return f.Body.(*hclsyntax.Body)
}

func value(t *testing.T, b *hclsyntax.Body, name string) cty.Value {
	t.Helper()
	a, ok := b.Attributes[name]
	if !ok {
		t.Fatalf("no %s at %s", name, b.SrcRange)
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return v
}

func str(t *testing.T, b *hclsyntax.Body, name string) string { return value(t, b, name).AsString() }

func strings(t *testing.T, b *hclsyntax.Body, name string) []string {
	var out []string
	for _, v := range value(t, b, name).AsValueSlice() {
		out = append(out, v.AsString())
	}
	return out
}
