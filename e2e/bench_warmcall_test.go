//go:build bench

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/jobs"
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
