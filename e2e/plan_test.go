package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPlan runs `caravan plan` (the real binary, for its exit codes) before
// and after deploys: changes exit 2 and list the job diff and hostnames
// (and no certificate: the wildcard covers a generated hostname); no changes exit 0; a function that cannot be placed exits 1,
// named with what it needs; nothing is changed by any of it.
func TestPlan(t *testing.T) {
	purge(t, "e2e--planned")
	dir := t.TempDir()
	path := filepath.Join(dir, "planned.hcl")
	plan := func(src string) (string, int) {
		t.Helper()
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return runCLI(t, "plan", path)
	}
	v1 := nodeServer("planned", "one\n", false)

	out, code := plan(v1)
	host := "e2e--planned-web." + env.stack.Domain
	// The platform's wildcard serves the generated hostname: no
	// certificate to order for it.
	if code != 2 || !strings.Contains(out, "version 1 of app planned") || !strings.Contains(out, "created web (1 to place)") ||
		!strings.Contains(out, "+ hostname "+host) || strings.Contains(out, "New certificates") {
		t.Fatalf("plan of a new app (exit %d):\n%s", code, out)
	}
	if _, _, err := env.nomad.Jobs().Info("e2e--planned", nsq("e2e--planned")); err == nil {
		t.Fatal("plan registered a job")
	}

	// Deployed as plan plans it: by the CLI, with the directory's bundle.
	if out, code := runCLI(t, "deploy", path); code != 0 {
		t.Fatalf("deploy (exit %d):\n%s", code, out)
	}
	if out, code = plan(v1); code != 0 || !strings.Contains(out, "No changes") {
		t.Fatalf("plan of the deployed spec (exit %d):\n%s", code, out)
	}

	v2 := strings.Replace(v1, "memory = 64", "memory = 64\n    }\n    env = {\n      GREETING = \"hi\"", 1)
	out, code = plan(v2)
	if code != 2 || !strings.Contains(out, "replacing version 1") || !strings.Contains(out, `Env[GREETING]: "hi"`) ||
		!strings.Contains(out, "updated web") || strings.Contains(out, "caravan.version") {
		t.Fatalf("plan of a changed spec (exit %d):\n%s", code, out)
	}

	gpu := strings.Replace(v1, "memory = 64", "memory = 64\n      gpu = \"H100:3\"", 1)
	out, code = plan(gpu)
	if code != 1 || !strings.Contains(out, `function "web" cannot be placed: no node has 3 nvidia/gpu of model H100`) {
		t.Fatalf("plan needing GPUs (exit %d):\n%s", code, out)
	}
	job, _, err := env.nomad.Jobs().Info("e2e--planned", nsq("e2e--planned"))
	if err != nil || *job.Version != 0 {
		t.Fatalf("after plans, the Nomad job is at version %v (%v), want 0", job.Version, err)
	}
}
