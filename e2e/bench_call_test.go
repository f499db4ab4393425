//go:build bench

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
	nomad "github.com/hashicorp/nomad/api"
)

// TestBenchCall prints the time from `caravan call` to its result
// (`just bench`). It asserts nothing about speed.
func TestBenchCall(t *testing.T) {
	const runs = 10
	purge(t, "e2e--benchcall")
	purge(t, "e2e--benchcall--call--echo")
	purge(t, "e2e--benchcall--call--fail")
	web := nodeServer("benchcall", "up\n", false)
	deploy(t, "benchcall.hcl", strings.TrimSuffix(web, "}\n")+`  function "echo" {
    command  = "node"
    args     = ["-e", "process.stdout.write(require('fs').readFileSync(process.env.CARAVAN_INPUT))"]
    callable = true
  }
  function "fail" {
    command  = "node"
    args     = ["-e", "process.exit(3)"]
    callable = true
  }
}
`, api.DeployBody{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var took, inServer, exited, markedDead, toResult []time.Duration
	for i := range runs {
		in := fmt.Sprintf(`{"i":%d}`, i)
		began := time.Now()
		r, err := env.client.Call(ctx, "benchcall", "echo", api.ChangeBody{}, []byte(in), 0)
		if err != nil || r.ExitCode != 0 || r.Output != in {
			t.Fatalf("call %d: %+v %v", i, r, err)
		}
		returned := time.Now()
		took = append(took, returned.Sub(began))
		inServer = append(inServer, r.Duration)
		e, d, dead, err := callSplit(r, "echo")
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		exited, markedDead, toResult = append(exited, e), append(markedDead, d), append(toResult, returned.Sub(dead))
	}
	var failing []time.Duration
	for i := range runs {
		began := time.Now()
		r, err := env.client.Call(ctx, "benchcall", "fail", api.ChangeBody{}, nil, 0)
		if err != nil || r.ExitCode != 3 {
			t.Fatalf("failing call %d: %+v %v", i, r, err)
		}
		failing = append(failing, time.Since(began))
	}
	m, x := stats(took)
	sm, sx := stats(inServer)
	em, ex := stats(exited)
	dm, dx := stats(markedDead)
	rm, rx := stats(toResult)
	fm, fx := stats(failing)
	fmt.Printf("%-44s median %8s  max %8s  (%d runs)\n    %s\n", "the time from `caravan call` to its result", m.Round(time.Millisecond), x.Round(time.Millisecond), runs,
		"wall clock around the API call of a callable that echoes its input (node -e): dispatch of the parameterized job, "+
			"Nomad placement, process start and exit, stdout read from the allocation's log; the server's own share: "+
			fmt.Sprintf("median %s, max %s", sm.Round(time.Millisecond), sx.Round(time.Millisecond)))
	fmt.Printf("    from Nomad's records of the same calls (medians, max in brackets): the process exited %s [%s] after the dispatch, "+
		"Nomad's client marked the task dead %s [%s] after that, and the result was back %s [%s] after that\n",
		em.Round(time.Millisecond), ex.Round(time.Millisecond), dm.Round(time.Millisecond), dx.Round(time.Millisecond),
		rm.Round(time.Millisecond), rx.Round(time.Millisecond))
	fmt.Printf("%-44s median %8s  max %8s  (%d runs)\n    %s\n", "a failing call (exit 3) to its result", fm.Round(time.Millisecond), fx.Round(time.Millisecond), runs,
		"wall clock around the API call of a callable that exits 3 at once")
}

// callSplit reads from Nomad when a call's process exited after its
// dispatch (the dispatched job's submit time), how long after that Nomad
// marked its task dead, and when that was.
func callSplit(r *orchestrator.CallResult, task string) (exited, dead time.Duration, deadAt time.Time, err error) {
	job, _, err := env.nomad.Jobs().Info(r.JobID, nsq(r.JobID))
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	alloc, _, err := env.nomad.Allocations().Info(r.AllocID, nil)
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	st := alloc.TaskStates[task]
	if st == nil || job.SubmitTime == nil {
		return 0, 0, time.Time{}, fmt.Errorf("allocation %s has no state of task %s, or job %s no submit time", r.AllocID, task, r.JobID)
	}
	var terminated time.Time
	for _, e := range st.Events {
		if e.Type == nomad.TaskTerminated {
			terminated = time.Unix(0, e.Time)
		}
	}
	if terminated.IsZero() || st.FinishedAt.IsZero() {
		return 0, 0, time.Time{}, fmt.Errorf("task %s of allocation %s has no Terminated event or no finish time", task, r.AllocID)
	}
	return terminated.Sub(time.Unix(0, *job.SubmitTime)), st.FinishedAt.Sub(terminated), st.FinishedAt, nil
}
