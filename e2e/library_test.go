package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/api"
)

// TestLibraryExampleRuns runs examples/library, which deploys with the
// orchestrator package directly, against the stack.
func TestLibraryExampleRuns(t *testing.T) {
	purge(t, "e2e--library")
	path, _ := specFile(t, "library.hcl", nodeServer("library", "from Go\n", false))
	cmd := exec.Command("go", "run", "../examples/library", path)
	cmd.Env = append(os.Environ(), "NOMAD_ADDR="+env.stack.NomadAddr(), "CONSUL_HTTP_ADDR="+env.stack.ConsulAddr(),
		"CARAVAN_DOMAIN="+env.stack.Domain, "CARAVAN_POLICY="+policyPath(), "CARAVAN_HTTPS_PORT="+strconv.Itoa(env.stack.Ports.TraefikWebsecure), "CARAVAN_AUTH_URL="+clusterAuthURL())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "app library is at version 1 (changed: true)") {
		t.Fatalf("go run ./examples/library: %v\n%s", err, out)
	}
	h := history(t, "library")
	if len(h.Versions) != 1 || h.Versions[0].Who != "library-example" || h.Versions[0].Status != "live" {
		t.Fatalf("history after the library deploy: %+v", h.Versions)
	}
	url := strings.Fields(string(out)[strings.Index(string(out), "https://"):])[0]
	answers(t, url, "from Go\n")
}

// TestRecreateStrategy: with --strategy recreate every old container is
// replaced and only the new version answers afterwards.
func TestRecreateStrategy(t *testing.T) {
	purge(t, "e2e--recreate")
	first := deploy(t, "recreate.hcl", nodeServer("recreate", "old\n", false), api.DeployBody{})
	before := allocIDs(t, "e2e--recreate")
	second := deploy(t, "recreate.hcl", nodeServer("recreate", "new\n", false), api.DeployBody{Strategy: "recreate"})
	if second.Version != 2 {
		t.Fatalf("version %d, want 2", second.Version)
	}
	for id := range allocIDs(t, "e2e--recreate") {
		if before[id] {
			t.Errorf("allocation %s survived a recreate", id)
		}
	}
	for range 20 {
		if status, body, err := get(t, first.Functions[0].URL); err != nil || status != 200 || body != "new\n" {
			t.Fatalf("after recreate: %d %q %v, want only the new version", status, body, err)
		}
	}
	h := history(t, "recreate")
	if h.Versions[1].Strategy != "recreate" || h.Versions[0].Strategy != "rolling" {
		t.Fatalf("strategies recorded: %s, %s", h.Versions[0].Strategy, h.Versions[1].Strategy)
	}
	var apiErr *api.APIError
	_, err := env.client.DeployBody(context.Background(), api.DeployBody{Filename: "x.hcl",
		Spec: nodeServer("recreate", "new\n", false), Strategy: "sideways"})
	if !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Fatalf("unknown strategy: %v, want 400", err)
	}
}
