package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// TestScheduledFunctions: scheduled functions become Nomad periodic jobs the
// app owns; `run` launches one now and reports success or failure; the list
// shows the last run; a redeploy without a function removes its schedule, a
// rollback brings it back, and stop removes them all.
func TestScheduledFunctions(t *testing.T) {
	const job = "e2e--sched"
	purge(t, job)
	purge(t, job+"--cron--tick")
	purge(t, job+"--cron--broken")
	dir := t.TempDir()
	out := filepath.Join(dir, "runs.txt")
	web := strconv.Quote(`require("http").createServer((q, s) => s.end("up\n")).listen(process.env.PORT, process.env.HOST);`)
	tick := strconv.Quote(fmt.Sprintf(`require("fs").appendFileSync(%q, "ran\n");`, out))
	both := fmt.Sprintf(`app "sched" {
  workspace = "e2e"
  function "web" {
    command = "node"
    args    = ["-e", %s]
    web {}
  }
  function "tick" {
    command  = "node"
    args     = ["-e", %s]
    schedule = "0 3 * * *"
  }
  function "broken" {
    command = "node"
    args    = ["-e", "process.exit(3)"]
    period  = "1h"
  }
}
`, web, tick)
	res := deploy(t, "sched.hcl", both, api.DeployBody{})
	schedules := map[string]string{}
	for _, f := range res.Functions {
		schedules[f.Name] = f.Schedule
	}
	if schedules["tick"] != "0 3 * * *" || schedules["broken"] != "0 * * * *" {
		t.Fatalf("schedules in the deploy result: %v", schedules)
	}
	for _, id := range []string{job + "--cron--tick", job + "--cron--broken"} {
		pj, _, err := env.nomad.Jobs().Info(id, nsq(id))
		if err != nil || pj.Periodic == nil || !*pj.Periodic.Enabled || pj.Meta["caravan.version"] != "1" {
			t.Fatalf("periodic job %s: %+v %v", id, pj, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run, err := env.client.Run(ctx, "sched", api.RunBody{Function: "tick"})
	if err != nil || run.Status != "succeeded" {
		t.Fatalf("run tick: %+v %v", run, err)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "ran\n" {
		t.Fatalf("tick's output: %q %v", b, err)
	}
	ours := map[string]string{run.Function: run.JobID}
	run, err = env.client.Run(ctx, "sched", api.RunBody{Function: "broken"})
	if err != nil || run.Status != "failed" || run.ExitCode != 3 {
		t.Fatalf("run broken: %+v %v; want failed with exit code 3", run, err)
	}
	ours[run.Function] = run.JobID
	var apiErr *api.APIError
	if _, err := env.client.Run(ctx, "sched", api.RunBody{Function: "web"}); !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Fatalf("run of a function that is not scheduled: %v, want 404", err)
	}

	apps, err := env.client.Apps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]string{}
	for _, a := range apps {
		if a.JobID == job {
			for _, f := range a.Functions {
				if f.LastRun == nil {
					continue
				}
				last[f.Name] = f.LastRun.Status
				if id, ok := ours[f.Name]; ok && f.LastRun.JobID != id {
					// Its schedule came up since our run (tick at 03:00
					// UTC, broken every hour): Nomad's own run of it is
					// the last now, whatever its state.
					if !strings.HasPrefix(f.LastRun.JobID, job+"--cron--"+f.Name+"/") {
						t.Errorf("%s's last run %s is neither ours (%s) nor one of its periodic job's", f.Name, f.LastRun.JobID, id)
					}
					t.Logf("%s's schedule ran meanwhile: its last run is %s (%s)", f.Name, f.LastRun.JobID, f.LastRun.Status)
					last[f.Name] = map[string]string{"tick": "succeeded", "broken": "failed"}[f.Name]
				}
			}
		}
	}
	if last["tick"] != "succeeded" || last["broken"] != "failed" {
		t.Fatalf("last runs in the app list: %v", last)
	}

	// Without "broken", its schedule goes; a rollback brings it back.
	i := strings.Index(both, `  function "broken"`)
	deploy(t, "sched.hcl", both[:i]+"}\n", api.DeployBody{})
	eventually(t, 30*time.Second, "broken's periodic job is gone", func() error {
		if pj, _, err := env.nomad.Jobs().Info(job+"--cron--broken", nsq(job+"--cron--broken")); err == nil && (pj.Stop == nil || !*pj.Stop) {
			return fmt.Errorf("still registered")
		}
		return nil
	})
	if _, err := env.client.Rollback(ctx, "sched", api.ChangeBody{Version: 1}); err != nil {
		t.Fatal(err)
	}
	if pj, _, err := env.nomad.Jobs().Info(job+"--cron--broken", nsq(job+"--cron--broken")); err != nil || pj.Meta["caravan.version"] != "3" {
		t.Fatalf("after rollback, broken's periodic job: %v %v, want it back at version 3", pj, err)
	}

	if _, err := env.client.Stop(ctx, "sched", api.ChangeBody{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{job + "--cron--tick", job + "--cron--broken"} {
		if _, _, err := env.nomad.Jobs().Info(id, nsq(id)); err == nil {
			t.Errorf("periodic job %s survived stop", id)
		}
	}
}
