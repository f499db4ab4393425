package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// TestServerRestartMidRolloutResumes kills caravan server (SIGKILL) while a
// version rolls out; the next server picks the rollout up from Nomad's
// deployment and records it once: live, with no duplicate version.
func TestServerRestartMidRolloutResumes(t *testing.T) {
	const app, job = "phoenix", "e2e--phoenix"
	purge(t, job)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()

	logf, err := os.Create(filepath.Join(env.stack.StateDir, "logs", "caravan-server-killed.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(caravanBinary(t), append([]string{"server"}, serverFlags(listen)...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	doomed := &api.Client{Addr: "http://" + listen, Token: env.client.Token}
	eventually(t, 30*time.Second, "the doomed server answers", func() error { return doomed.Health(context.Background()) })

	// A process that takes 8 seconds to start listening: its rollout lasts
	// long enough to kill the server in the middle of it.
	js := `setTimeout(() => require("http").createServer((q, s) => s.end("risen\n")).listen(process.env.PORT, process.env.HOST), 8000);`
	src := fmt.Sprintf("app %q {\n  workspace = \"e2e\"\n  function \"web\" {\n    command = \"node\"\n    args = [\"-e\", %s]\n    web {}\n  }\n}\n", app, strconv.Quote(js))
	go doomed.Deploy(context.Background(), "phoenix.hcl", []byte(src), 0)

	eventually(t, 30*time.Second, "the rollout is under way in Nomad", func() error {
		dep, _, err := env.nomad.Jobs().LatestDeployment(job, nsq(job))
		if err != nil || dep == nil {
			return fmt.Errorf("no deployment yet (%v)", err)
		}
		if dep.Status != "running" {
			return fmt.Errorf("deployment %s", dep.Status)
		}
		return nil
	})
	if h := history(t, app); len(h.Versions) != 1 || h.Versions[0].Status != "pending" {
		t.Fatalf("before the kill: %+v, want version 1 pending", h.Versions)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	// A new server resumes the rollout (after the dead server's Consul lock
	// session expires).
	srv, err := startServer("caravan-server-resumed")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	eventually(t, 90*time.Second, "version 1 is recorded live", func() error {
		h := history(t, app)
		if len(h.Versions) != 1 || h.Versions[0].Status != "live" {
			return fmt.Errorf("history %+v", h.Versions)
		}
		if h.App.LatestVersion != 1 || h.App.LiveVersion != 1 {
			return fmt.Errorf("latest %d live %d", h.App.LatestVersion, h.App.LiveVersion)
		}
		return nil
	})
	res := deploy(t, "phoenix.hcl", src, api.DeployBody{})
	if res.Changed || res.Version != 1 {
		t.Fatalf("redeploy after resume: changed=%v version %d, want a no-op at 1", res.Changed, res.Version)
	}
	answers(t, res.Functions[0].URL, "risen\n")
}
