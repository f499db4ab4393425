package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/devstack"
)

// TestDevUpStatusDown runs what `just up` runs, the real caravan binary:
// dev up starts a second stack (on free ports, beside the tests' own),
// deploys examples/hello.hcl and prints a URL and a curl line that reach it;
// dev status lists the processes; dev down stops exactly those.
func TestDevUpStatusDown(t *testing.T) {
	bin := caravanBinary(t)
	state := t.TempDir()
	caravan := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"--state-dir", state}, args...)...)
		cmd.Dir = ".." // the repository root, where tools/ and examples/ are
		cmd.Env = append(os.Environ(), "CARAVAN_ADDR=", "CARAVAN_TOKEN=")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	t.Cleanup(func() { caravan("dev", "down") })

	out, err := caravan("dev", "up", "--random-ports")
	if err != nil {
		t.Fatalf("dev up: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`curl --cacert (\S+) --resolve (\S+):127\.0\.0\.1 (https://\S+)/`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("dev up printed no curl line:\n%s", out)
	}
	root, url := m[1], m[3]
	if !strings.Contains(url, "https://dev--hello-web.caravan.localhost:") {
		t.Fatalf("dev up URL %s is not hello's", url)
	}
	// Follow the printed curl line: verify against the printed root, and
	// connect to 127.0.0.1 as --resolve says.
	stack, err := devstack.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(root)
	if err != nil {
		t.Fatalf("the printed root %s: %v", root, err)
	}
	client := proxyClientFromPEM(t, stack.HTTPSAddr(), pem)
	resp, err := client.Get(url + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}

	out, err = caravan("dev", "status")
	// Five servers, two caravan proxies, caravan server.
	if err != nil || strings.Count(out, " running ") != 8 || strings.Count(out, "\ncaravan-proxy-") != 2 {
		t.Fatalf("dev status (want 8 running processes, two caravan proxies among them): %v\n%s", err, out)
	}
	out, err = caravan("app", "list", "--json")
	var apps []struct {
		JobID string `json:"job_id"`
	}
	if err != nil || json.Unmarshal([]byte(out), &apps) != nil || len(apps) != 1 || apps[0].JobID != "dev--hello" {
		t.Fatalf("app list against the dev stack: %v\n%s", err, out)
	}

	out, err = caravan("dev", "down")
	if err != nil {
		t.Fatalf("dev down: %v\n%s", err, out)
	}
	for _, p := range stack.Procs {
		if p.Alive() {
			t.Errorf("%s (pid %d) still runs after dev down", p.Name, p.PID)
		}
	}
	// The tests' own stack was not touched.
	if !env.stack.Running() {
		t.Fatal("dev down stopped the other stack")
	}
	for _, p := range env.stack.Procs {
		if !p.Alive() {
			t.Errorf("dev down stopped %s of the other stack", p.Name)
		}
	}
}
