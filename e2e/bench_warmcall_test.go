//go:build bench

package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/jobs"
	nomad "github.com/hashicorp/nomad/api"
)

// percentile is the p-th percentile (0..100) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// TestBenchWarmCall prints the round trip of a warm call (client ->
// caravan server -> JetStream -> worker -> result) for a trivial command,
// beside TestBenchCall's dispatch of an isolated one in the same run, and
// map throughput through 4 workers of a no-op (`just bench`), each once
// forking the command per input and once in the long-running mode (an
// enter block). It asserts nothing about speed.
func TestBenchWarmCall(t *testing.T) {
	const app = "e2e--benchwarm"
	for _, id := range []string{app, jobs.CallableID(app, "echo"), jobs.CallableID(app, "noop"), jobs.CallableID(app, "echoenter"), jobs.CallableID(app, "noopenter")} {
		purge(t, id)
	}
	web := nodeServer("benchwarm", "up\n", false)
	deploy(t, "benchwarm.hcl", strings.TrimSuffix(web, "}\n")+`  function "echo" {
    command  = "sh"
    args     = ["-c", "exec cat \"$CARAVAN_INPUT\""]
    callable = true
  }
  function "noop" {
    command        = "true"
    callable       = true
    min_containers = 4
    concurrency {
      max_inputs = 4
    }
  }
  function "echoenter" {
    command  = "node"
    args     = ["-e", `+strconv.Quote(benchEnterServer(true))+`]
    callable = true
    enter {}
  }
  function "noopenter" {
    command        = "node"
    args           = ["-e", `+strconv.Quote(benchEnterServer(false))+`]
    callable       = true
    min_containers = 4
    concurrency {
      max_inputs = 4
    }
    enter {}
  }
}
`, api.DeployBody{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// Warm up: the first call waits for the workers to start.
	for _, fn := range []string{"echo", "noop", "echoenter", "noopenter"} {
		if _, err := env.client.Call(ctx, "benchwarm", fn, api.ChangeBody{}, []byte("0"), 3*time.Minute); err != nil {
			t.Fatalf("first call of %s: %v", fn, err)
		}
	}
	const runs = 300
	calls := func(fn, how string) {
		var took, inServer []time.Duration
		for i := range runs {
			in := fmt.Sprintf(`{"i":%d}`, i)
			began := time.Now()
			r, err := env.client.Call(ctx, "benchwarm", fn, api.ChangeBody{}, []byte(in), 0)
			if err != nil || r.ExitCode != 0 || r.Output != in {
				t.Fatalf("call %d of %s: %+v %v", i, fn, r, err)
			}
			took = append(took, time.Since(began))
			inServer = append(inServer, r.Duration)
		}
		fmt.Printf("%-44s p50 %8s  p99 %8s  max %8s  (%d calls; goal p50 <= 10ms, p99 <= 30ms)\n    %s\n",
			"a warm call to its result"+how, percentile(took, 50).Round(100*time.Microsecond), percentile(took, 99).Round(100*time.Microsecond),
			slices.Max(took).Round(100*time.Microsecond), runs,
			"wall clock around api.Client.Call (HTTP to caravan server, a KV record, a JetStream publish, a worker's pull, "+
				map[string]string{"echo": "the command `cat $CARAVAN_INPUT` forked for the input", "echoenter": "the input POSTed to the function's node process, started once (enter block)"}[fn]+
				", the result stored in KV and announced back), one call at a time; "+
				fmt.Sprintf("the server's own share p50 %s, p99 %s", percentile(inServer, 50).Round(100*time.Microsecond), percentile(inServer, 99).Round(100*time.Microsecond)))
	}
	calls("echo", "")
	calls("echoenter", " (enter)")

	// The same through the CLI, a process per call.
	bin := caravanBinary(t)
	var cli []time.Duration
	for i := range 20 {
		began := time.Now()
		cmd := exec.Command(bin, "call", "benchwarm", "echo", "--data", fmt.Sprint(i))
		cmd.Env = append(os.Environ(), "CARAVAN_ADDR="+env.client.Addr, "CARAVAN_TOKEN="+env.client.Token)
		if out, err := cmd.Output(); err != nil || string(out) != fmt.Sprint(i) {
			t.Fatalf("caravan call: %q %v", out, err)
		}
		cli = append(cli, time.Since(began))
	}
	fmt.Printf("%-44s p50 %8s  max %8s  (20 calls)\n    %s\n", "`caravan call` of a warm function", percentile(cli, 50).Round(100*time.Microsecond),
		slices.Max(cli).Round(100*time.Microsecond), "wall clock around the CLI process, its start included")

	const n = 4000
	var lines strings.Builder
	for i := range n {
		fmt.Fprintf(&lines, "%d\n", i)
	}
	mapped := func(fn, name, how string) {
		began := time.Now()
		got := 0
		err := env.client.Map(ctx, "benchwarm", fn, api.ChangeBody{}, strings.NewReader(lines.String()), 5*time.Minute, func(item api.MapItem) error {
			if item.Index != got || item.ExitCode != 0 {
				return fmt.Errorf("item %d: %+v", got, item)
			}
			got++
			return nil
		})
		if err != nil || got != n {
			t.Fatalf("map of %s: %d of %d, %v", fn, got, n, err)
		}
		d := time.Since(began)
		fmt.Printf("%-44s %8.0f inputs/s  (%d inputs in %s; goal >= 1000/s)\n    %s\n", name, float64(n)/d.Seconds(), n, d.Round(time.Millisecond), how)
	}
	mapped("noop", "map through 4 warm workers",
		"api.Client.Map of a no-op (`true`, forked once per input) over 4 workers of 4 inputs each, results streamed back in input order")
	mapped("noopenter", "map through 4 warm workers (enter)",
		"api.Client.Map of a no-op answered by each worker's node process, started once (enter block), over 4 workers of 4 inputs each, results streamed back in input order")
}

// benchEnterServer is a function's long-running process (an enter
// block) that answers each input with itself (echo) or nothing.
func benchEnterServer(echo bool) string {
	answer := "s.end()"
	if echo {
		answer = "s.end(b)"
	}
	return `require("http").createServer((q, s) => { let b = ""; q.on("data", (c) => (b += c)); q.on("end", () => ` + answer + `); }).listen(process.env.PORT, "127.0.0.1");`
}

// TestBenchWarmCallAtZero prints a call to a callable function at zero
// (`min_containers = 0`): the first input until its result, against the
// worker's own start (Nomad's start of its task until the worker logs
// that it serves, which is the caravan worker connecting to NATS with the
// credential it fetched): what is left is caravan's and Nomad's share (the
// autoscaler hearing the queue, the scale, the placement, the task's
// setup). It asserts nothing about speed.
func TestBenchWarmCallAtZero(t *testing.T) {
	const app = "e2e--benchzero"
	id := jobs.CallableID(app, "zero")
	purge(t, app)
	purge(t, id)
	web := nodeServer("benchzero", "up\n", false)
	deploy(t, "benchzero.hcl", strings.TrimSuffix(web, "}\n")+`  function "zero" {
    command          = "sh"
    args             = ["-c", "exec cat \"$CARAVAN_INPUT\""]
    callable         = true
    min_containers   = 0
    max_containers   = 1
    scaledown_window = "3s"
  }
}
`, api.DeployBody{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const rounds = 5
	var total, own, rest []time.Duration
	for i := range rounds {
		awaitNoWorker(t, ctx, id)
		began := time.Now()
		in := fmt.Sprintf(`{"round":%d}`, i)
		r, err := env.client.Call(ctx, "benchzero", "zero", api.ChangeBody{}, []byte(in), 2*time.Minute)
		if err != nil || r.Output != in {
			t.Fatalf("call %d at zero: %+v %v", i, r, err)
		}
		took := time.Since(began)
		// Nomad's servers hear of the task's start a moment after it
		// served (the client batches its updates).
		var start time.Duration
		eventually(t, 30*time.Second, "the worker's start in Nomad and its log", func() (err error) {
			start, err = workerStart(id)
			return err
		})
		total, own, rest = append(total, took), append(own, start), append(rest, took-start)
	}
	fmt.Printf("%-44s p50 %8s  max %8s  (%d calls, each at zero)\n    %s\n", "a warm call at zero (cold), minus the worker's own start",
		percentile(rest, 50).Round(time.Millisecond), slices.Max(rest).Round(time.Millisecond), rounds,
		fmt.Sprintf("wall clock around api.Client.Call with no worker running (p50 %s), minus the worker's own start (p50 %s: Nomad's "+
			"StartedAt of its task until its \"serving\" log line: the caravan worker fetching its NATS credential and connecting)",
			percentile(total, 50).Round(time.Millisecond), percentile(own, 50).Round(time.Millisecond)))
}

// awaitNoWorker waits until the callable job id runs no worker (its
// scaledown window passed and Nomad stopped them).
func awaitNoWorker(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	for {
		allocs, _, err := env.nomad.Jobs().Allocations(id, false, nsq(id))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(allocs, func(a *nomad.AllocationListStub) bool {
			return a.ClientStatus == "running" || a.ClientStatus == "pending"
		}) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s still runs a worker", id)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// workerStart is the worker's own start in job id's running allocation:
// its task's StartedAt until the worker's "serving" log line.
func workerStart(id string) (time.Duration, error) {
	allocs, _, err := env.nomad.Jobs().Allocations(id, false, nsq(id))
	if err != nil {
		return 0, err
	}
	for _, a := range allocs {
		if a.ClientStatus != "running" {
			continue
		}
		alloc, _, err := env.nomad.Allocations().Info(a.ID, nil)
		if err != nil {
			return 0, err
		}
		for task, st := range alloc.TaskStates {
			rc, err := env.nomad.AllocFS().Cat(alloc, "alloc/logs/"+task+".stderr.0", nil)
			if err != nil {
				return 0, err
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return 0, err
			}
			for _, line := range strings.Split(string(b), "\n") {
				if !strings.Contains(line, "caravan-worker: serving:") {
					continue
				}
				at, err := time.Parse("2006-01-02T15:04:05.000Z0700", strings.Fields(line)[0])
				if err != nil {
					return 0, fmt.Errorf("the worker's log line %q: %w", line, err)
				}
				return at.Sub(st.StartedAt), nil
			}
			return 0, fmt.Errorf("allocation %s: no \"serving\" line in the worker's stderr:\n%s", a.ID, b)
		}
	}
	return 0, fmt.Errorf("job %s runs no worker", id)
}
