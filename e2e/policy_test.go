package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPolicyRefusesRawExec: on the real stack, with the tests' policy
// (e2ePolicy), `caravan deploy` of a raw_exec app in a workspace the policy
// gives no raw_exec fails with the policy's error and exit 1, registers no
// Nomad job and writes no record; `caravan plan` says so too. The same app
// in workspace e2e, which may use raw_exec, deploys and answers.
func TestPolicyRefusesRawExec(t *testing.T) {
	purge(t, "sandbox--fenced")
	purge(t, "e2e--fenced")
	dir := t.TempDir()
	caravan := func(verb, ws string) (string, int) {
		t.Helper()
		path := filepath.Join(dir, ws+".hcl")
		src := strings.Replace(nodeServer("fenced", "inside\n", false), `workspace = "e2e"`, `workspace = "`+ws+`"`, 1)
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return runCLI(t, verb, path)
	}

	out, code := caravan("deploy", "sandbox")
	for _, want := range []string{`policy workspace "*" (policy.hcl:9)`, `app "fenced" of workspace "sandbox"`,
		`function "web": driver "raw_exec" is not allowed (drivers = ["exec", "docker"])`} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("deploy to sandbox (exit %d) does not say %s:\n%s", code, want, out)
		}
	}
	if _, _, err := env.nomad.Jobs().Info("sandbox--fenced", nsq("sandbox--fenced")); err == nil {
		t.Error("the refused app's job is registered in Nomad")
	}
	if kvs, _, err := env.consul.KV().List("caravan/apps/sandbox--fenced/", nil); err != nil || len(kvs) > 0 {
		t.Errorf("the refused app has records: %d keys (%v)", len(kvs), err)
	}
	out, code = caravan("plan", "sandbox")
	if code != 1 || !strings.Contains(out, `✗ policy workspace "*" (policy.hcl:9)`) {
		t.Errorf("plan in sandbox (exit %d):\n%s", code, out)
	}

	out, code = caravan("deploy", "e2e")
	if code != 0 || !strings.Contains(out, "Version 1 is live") {
		t.Fatalf("deploy to e2e (exit %d):\n%s", code, out)
	}
	answers(t, "https://e2e--fenced-web."+env.stack.Domain+":"+strconv.Itoa(env.stack.Ports.TraefikWebsecure), "inside\n")
}
