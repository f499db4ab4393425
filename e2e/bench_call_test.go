//go:build bench

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// TestBenchCall prints the time from `caravan call` to its result
// (`just bench`). It asserts nothing about speed.
func TestBenchCall(t *testing.T) {
	const runs = 10
	purge(t, "e2e--benchcall")
	purge(t, "e2e--benchcall--call--echo")
	web := nodeServer("benchcall", "up\n", false)
	deploy(t, "benchcall.hcl", strings.TrimSuffix(web, "}\n")+`  function "echo" {
    command  = "node"
    args     = ["-e", "process.stdout.write(require('fs').readFileSync(process.env.CARAVAN_INPUT))"]
    callable = true
  }
}
`, api.DeployBody{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var took, inServer []time.Duration
	for i := range runs {
		in := fmt.Sprintf(`{"i":%d}`, i)
		began := time.Now()
		r, err := env.client.Call(ctx, "benchcall", "echo", api.ChangeBody{}, []byte(in), 0)
		if err != nil || r.ExitCode != 0 || r.Output != in {
			t.Fatalf("call %d: %+v %v", i, r, err)
		}
		took = append(took, time.Since(began))
		inServer = append(inServer, r.Duration)
	}
	m, x := stats(took)
	sm, sx := stats(inServer)
	fmt.Printf("%-44s median %8s  max %8s  (%d runs)\n    %s\n", "the time from `caravan call` to its result", m.Round(time.Millisecond), x.Round(time.Millisecond), runs,
		"wall clock around the API call of a callable that echoes its input (node -e): dispatch of the parameterized job, "+
			"Nomad placement, process start and exit, stdout read from the allocation's log; the server's own share: "+
			fmt.Sprintf("median %s, max %s. ", sm.Round(time.Millisecond), sx.Round(time.Millisecond))+
			"Most of it is Nomad's client: the process exits ~0.15 s after the dispatch, but a task that succeeds is marked "+
			"dead only after its stop hooks (~0.85 s); a failing call returns in ~0.35 s")
}
