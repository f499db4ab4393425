package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/internal/syncbuf"
)

// TestServe runs `caravan serve`: an ephemeral -dev copy answers beside the
// deployed app (which it never touches), its logs stream to the terminal, a
// change to a file the spec names redeploys it, and Ctrl-C removes it.
func TestServe(t *testing.T) {
	testServe(t, "served", "", false)
}

// TestServeAutoscaled serves a function that scales to zero: the -dev copy
// scales like the deployed one. It starts at zero, its first request
// answers 200 through a cold start, its log reaches the terminal from the
// container that cold start ran, and a file change made while it sits at
// zero is what the next cold start serves.
func TestServeAutoscaled(t *testing.T) {
	testServe(t, "servedzero", "    min_containers   = 0\n    max_containers   = 2\n    scaledown_window = \"3s\"\n", true)
}

// testServe is TestServe for app, with scaling (spec lines) added to its
// one function; scalesToZero says the function scales to zero.
func testServe(t *testing.T, app, scaling string, scalesToZero bool) {
	job, devJob := "e2e--"+app, "e2e--"+app+"--dev"
	purge(t, job)
	purge(t, devJob)
	dir := t.TempDir()
	script := filepath.Join(dir, "server.js")
	writeServer := func(body string) {
		js := fmt.Sprintf("console.log(%q);\nrequire(\"http\").createServer((q, s) => s.end(%q)).listen(process.env.PORT, process.env.HOST);\n",
			"serving "+body, body+"\n")
		if err := os.WriteFile(script, []byte(js), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeServer("v1")
	spec := fmt.Sprintf("app %q {\n  workspace = \"e2e\"\n  function \"web\" {\n    command = \"node\"\n    args = [\"${spec_dir}/server.js\"]\n%s    web {}\n  }\n}\n", app, scaling)
	path := filepath.Join(dir, app+".hcl")
	if err := os.WriteFile(path, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}

	// The deployed app of the same name, which serve must not touch,
	// deployed as `caravan deploy` does, with its code: a function at zero
	// cold-starts from the bundle it was deployed with, not from the file
	// serve watches.
	id, _ := uploadBundle(context.Background(), t, dir)
	real := deploy(t, path, spec, api.DeployBody{Bundles: map[string]string{"web": id}})
	answers(t, real.Functions[0].URL, "v1\n")

	var out syncbuf.Buffer
	cmd := exec.Command(caravanBinary(t), "serve", path)
	cmd.Env = append(os.Environ(), "CARAVAN_ADDR="+env.client.Addr, "CARAVAN_TOKEN="+env.client.Token)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	var devURL string
	eventually(t, 2*time.Minute, "serve prints the -dev URL", func() error {
		m := regexp.MustCompile(`(https://e2e--` + app + `-web-dev\.\S+)`).FindStringSubmatch(out.String())
		if m == nil {
			return fmt.Errorf("output so far:\n%s", out.String())
		}
		devURL = m[1]
		return nil
	})
	if scalesToZero {
		if d, r := groupCount(t, devJob); d != 0 || r != 0 {
			t.Errorf("the -dev copy of a function at min_containers = 0 started with %d desired, %d running; want 0", d, r)
		}
		coldAnswers(t, devURL, "v1\n")
	} else {
		answers(t, devURL, "v1\n")
	}
	eventually(t, 30*time.Second, "the function's log reaches the terminal", func() error {
		if !bytes.Contains([]byte(out.String()), []byte("serving v1")) {
			return fmt.Errorf("output so far:\n%s", out.String())
		}
		return nil
	})

	if scalesToZero {
		atZero(t, devJob)
	}
	began := time.Now()
	writeServer("v2")
	answers(t, devURL, "v2\n")
	t.Logf("a file change was served %s after it was saved", time.Since(began).Round(time.Millisecond))

	// The deployed app is untouched.
	answers(t, real.Functions[0].URL, "v1\n")
	if h := history(t, app); len(h.Versions) != 1 {
		t.Fatalf("serve changed the deployed app's history: %+v", h.Versions)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v after Ctrl-C:\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("serve did not exit after Ctrl-C:\n%s", out.String())
	}
	if _, _, err := env.nomad.Jobs().Info(devJob, nsq(devJob)); err == nil {
		t.Error("the serve copy's job survived Ctrl-C")
	}
	eventually(t, 30*time.Second, devURL+" answers 404 after Ctrl-C", func() error {
		status, _, err := get(t, devURL)
		if err != nil || status != http.StatusNotFound {
			return fmt.Errorf("%d %v", status, err)
		}
		return nil
	})
	if _, _, err := env.nomad.Jobs().Info(devJob, nsq(devJob)); err == nil {
		t.Error("the serve copy's job came back after Ctrl-C (an autoscaler scaling what serve removed?)")
	}
	answers(t, real.Functions[0].URL, "v1\n")
}
