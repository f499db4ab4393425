package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/jobs"
)

// enterServer is a function's long-running process (an enter block): it
// appends its pid to $STARTS when it starts (so the test counts its
// starts), listens on 127.0.0.1:$PORT and answers each input with
// {"in": input, "pid": its pid}; an input {"fail": x} answers exit code 3;
// {"die": path} exits mid-input the first time (it leaves path), and
// {"always_die": true} every time.
const enterServer = `
const fs = require("fs");
fs.appendFileSync(process.env.STARTS, process.pid + "\n");
require("http").createServer((q, s) => {
  let b = "";
  q.on("data", (c) => (b += c));
  q.on("end", () => {
    const v = JSON.parse(b);
    if (v && v.always_die) process.exit(9);
    if (v && v.die && !fs.existsSync(v.die)) { fs.writeFileSync(v.die, ""); process.exit(9); }
    if (v && v.fail) { s.setHeader("Caravan-Exit-Code", "3"); s.end("failed: " + v.fail); return; }
    s.end(JSON.stringify({ in: v, pid: process.pid }));
  });
}).listen(process.env.PORT, "127.0.0.1");
`

// enterSpec: "model" (3 workers of 2 inputs each) and "die" (1 worker)
// run enterServer in the long-running mode, each with its own starts
// file under dir; "broken" exits before it listens.
func enterSpec(app, dir string) string {
	web := nodeServer(app, "up\n", false)
	fn := func(name, starts string, workers, inputs int) string {
		return fmt.Sprintf(`  function %q {
    command        = "node"
    args           = ["-e", %s]
    env            = { STARTS = %q }
    callable       = true
    min_containers = %d
    concurrency {
      max_inputs = %d
    }
    enter {
      ready_timeout = "30s"
    }
  }
`, name, strconv.Quote(enterServer), filepath.Join(dir, starts), workers, inputs)
	}
	return strings.TrimSuffix(web, "}\n") + fn("model", "model.starts", 3, 2) + fn("die", "die.starts", 1, 1) + `  function "broken" {
    command  = "sh"
    args     = ["-c", "echo no model here >&2; exit 1"]
    callable = true
    enter {
      ready_timeout = "10s"
    }
  }
}
`
}

// TestWarmEnter: a warm callable with an enter block starts its process
// once per worker, across many calls and a map of 1,000 inputs over 3
// workers (in order); a failure is the exit code it answers; a process
// that dies mid-input is started again and the input redelivered and
// answered once, or dead-lettered with the reason when it kills every
// process; a process that never listens fails the call with why.
func TestWarmEnter(t *testing.T) {
	const app = "e2e--enter"
	for _, id := range []string{app, jobs.CallableID(app, "model"), jobs.CallableID(app, "die"), jobs.CallableID(app, "broken")} {
		purge(t, id)
	}
	dir := t.TempDir()
	deploy(t, "enter.hcl", enterSpec("enter", dir), api.DeployBody{})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	call := func(fn, input string) (*api.CallResult, error) {
		return env.client.Call(ctx, "enter", fn, api.ChangeBody{}, []byte(input), 2*time.Minute)
	}
	starts := func(name string) []string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.Fields(string(b))
	}
	type answer struct {
		In  json.RawMessage `json:"in"`
		Pid int             `json:"pid"`
	}

	t.Run("one process per worker", func(t *testing.T) {
		for i := range 30 {
			in := fmt.Sprintf(`{"n":%d}`, i)
			r, err := call("model", in)
			var a answer
			if err != nil || r.ExitCode != 0 || r.Error != "" || json.Unmarshal([]byte(r.Output), &a) != nil || string(a.In) != in {
				t.Fatalf("call model %s: %+v %v", in, r, err)
			}
		}
		if r, err := call("model", ""); err != nil || !strings.Contains(r.Output, `"in":null`) {
			t.Fatalf("call model without input: %+v %v", r, err)
		}
		r, err := call("model", `{"fail":"x"}`)
		if err != nil || r.ExitCode != 3 || r.Output != "failed: x" {
			t.Fatalf("a failing input: %+v %v; want exit 3", r, err)
		}
		out, code := runCLI(t, "call", "enter", "model", "--data", `{"fail":"y"}`)
		if code != 3 || !strings.Contains(out, "failed: y") {
			t.Fatalf("caravan call enter model: exit %d, %q", code, out)
		}

		var lines strings.Builder
		for i := range 1000 {
			fmt.Fprintf(&lines, "{\"i\":%d}\n", i)
		}
		began := time.Now()
		next := 0
		pids := map[int]int{}
		err = env.client.Map(ctx, "enter", "model", api.ChangeBody{}, strings.NewReader(lines.String()), 2*time.Minute, func(item api.MapItem) error {
			var a answer
			if item.Index != next || item.ExitCode != 0 || json.Unmarshal([]byte(item.Output), &a) != nil || string(a.In) != fmt.Sprintf(`{"i":%d}`, next) {
				return fmt.Errorf("item %d: %+v", next, item)
			}
			pids[a.Pid]++
			next++
			return nil
		})
		if err != nil || next != 1000 {
			t.Fatalf("map: %d results, %v", next, err)
		}
		t.Logf("1000 inputs mapped in %s, answered by processes %v", time.Since(began), pids)
		s := starts("model.starts")
		if len(s) != 3 {
			t.Fatalf("3 workers started their process %d times (%v), want 3", len(s), s)
		}
		for pid := range pids {
			if !strings.Contains(" "+strings.Join(s, " ")+" ", " "+strconv.Itoa(pid)+" ") {
				t.Errorf("process %d answered but is not one of those started, %v", pid, s)
			}
		}
	})

	t.Run("process dies mid-input", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "died")
		r, err := call("die", fmt.Sprintf(`{"die":%q}`, marker))
		if err != nil || r.ExitCode != 0 || r.Attempts != 2 || !strings.Contains(r.Output, marker) {
			t.Fatalf("an input whose process died: %+v %v; want answered on its second delivery", r, err)
		}
		if _, err := os.Stat(marker); err != nil {
			t.Fatal("the process did not die")
		}
		if s := starts("die.starts"); len(s) != 2 {
			t.Errorf("the process started %d times, want 2 (once again after it died)", len(s))
		}
		r, err = call("die", `{"always_die":true}`)
		if why := failure(r, err); !strings.Contains(why, "process died") || !strings.Contains(why, "dead-lettered") {
			t.Fatalf("an input that kills every process: %+v %v; want dead-lettered with the reason", r, err)
		}
		if r, err := call("die", `{"after":1}`); err != nil || r.ExitCode != 0 || !strings.Contains(r.Output, `"after":1`) {
			t.Fatalf("the next input: %+v %v", r, err)
		}
	})

	t.Run("process never ready", func(t *testing.T) {
		r, err := call("broken", `1`)
		if why := failure(r, err); !strings.Contains(why, "exited (exit status 1) before it listened") || !strings.Contains(why, "no model here") {
			t.Fatalf("a call of a process that never listens: %+v %v; want the reason", r, err)
		}
	})
}

// failure is why a call failed: its result's error (exit code -1), or
// the error of the call itself.
func failure(r *api.CallResult, err error) string {
	if err != nil {
		return err.Error()
	}
	if r.ExitCode != -1 {
		return ""
	}
	return r.Error
}
