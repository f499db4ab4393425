package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/orchestrator"
)

// callSpec is an app with a web function and two callables: "echo" prints
// its input and its size, "fail" (left out without withFail) complains on
// stderr and exits 7.
func callSpec(withFail bool) string {
	echo := strconv.Quote(`const raw = require("fs").readFileSync(process.env.CARAVAN_INPUT, "utf8");
console.log(JSON.stringify({got: JSON.parse(raw), bytes: raw.length}));`)
	fail := ""
	if withFail {
		fail = `
  function "fail" {
    command  = "node"
    args     = ["-e", "console.log('partial'); console.error('boom'); process.exit(7)"]
    callable = true
  }`
	}
	web := nodeServer("callme", "up\n", false)
	return strings.TrimSuffix(web, "}\n") + fmt.Sprintf(`  function "echo" {
    command  = "node"
    args     = ["-e", %s]
    callable = true
  }%s
}
`, echo, fail)
}

// dispatched counts the calls a callable's job has dispatched.
func dispatched(t *testing.T, jobID string) int {
	t.Helper()
	stubs, _, err := env.nomad.Jobs().List(nsPrefix(jobID + "/dispatch-"))
	if err != nil {
		t.Fatal(err)
	}
	return len(stubs)
}

func modifyIndex(t *testing.T, jobID string) uint64 {
	t.Helper()
	j, _, err := env.nomad.Jobs().Info(jobID, nsq(jobID))
	if err != nil {
		t.Fatalf("job %s: %v", jobID, err)
	}
	return *j.JobModifyIndex
}

// TestCall: a callable function is a parameterized job the app owns; a
// call dispatches it with the input and returns stdout, stderr and the exit
// code, registering nothing; 16 KiB of input is the limit (413 past it,
// nothing dispatched); a redeploy without the function removes it, a
// rollback brings it back, and stop removes them all.
func TestCall(t *testing.T) {
	const app = "e2e--callme"
	echoID, failID := jobs.CallableID(app, "echo"), jobs.CallableID(app, "fail")
	for _, id := range []string{app, echoID, failID} {
		purge(t, id)
	}
	res := deploy(t, "callme.hcl", callSpec(true), api.DeployBody{})
	for _, f := range res.Functions {
		if callable := f.Name != "web"; f.Callable != callable || f.Change != orchestrator.Created || (callable && f.Containers != 0) {
			t.Fatalf("deploy result for %s: %+v", f.Name, f)
		}
	}
	for _, id := range []string{echoID, failID} {
		j, _, err := env.nomad.Jobs().Info(id, nsq(id))
		if err != nil || j.ParameterizedJob == nil || *j.Type != "batch" || j.Meta["caravan.version"] != "1" {
			t.Fatalf("callable job %s: %+v %v", id, j, err)
		}
	}
	index := modifyIndex(t, echoID)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	call := func(fn, input string) (*orchestrator.CallResult, error) {
		return env.client.Call(ctx, "callme", fn, api.ChangeBody{}, []byte(input), time.Minute)
	}

	t.Run("output and exit 0", func(t *testing.T) {
		r, err := call("echo", `{"n": 1}`)
		if err != nil || r.ExitCode != 0 || r.Output != `{"got":{"n":1},"bytes":8}`+"\n" || r.Error != "" ||
			!strings.HasPrefix(r.JobID, echoID+"/dispatch-") {
			t.Fatalf("call echo: %+v %v", r, err)
		}
		t.Logf("call took %s", r.Duration)
		if r, err := call("echo", ""); err != nil || r.Output != `{"got":null,"bytes":4}`+"\n" {
			t.Fatalf("call echo without input: %+v %v", r, err)
		}
	})

	t.Run("failure: exit code and stderr", func(t *testing.T) {
		r, err := call("fail", "{}")
		if err != nil || r.ExitCode != 7 || r.Stderr != "boom\n" || r.Output != "partial\n" || r.Error != "" {
			t.Fatalf("call fail: %+v %v; want exit code 7, stderr boom", r, err)
		}
	})

	t.Run("cli", func(t *testing.T) {
		run := func(args ...string) (string, string, int) {
			cmd := exec.Command(caravanBinary(t), append([]string{"call"}, args...)...)
			cmd.Env = append(os.Environ(), "CARAVAN_ADDR="+env.client.Addr, "CARAVAN_TOKEN="+env.client.Token)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return out.String(), errb.String(), ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			return out.String(), errb.String(), 0
		}
		if out, errOut, code := run("callme", "echo", "--data", `[1,2]`); code != 0 || out != `{"got":[1,2],"bytes":5}`+"\n" {
			t.Fatalf("caravan call callme echo: %d %q %q", code, out, errOut)
		}
		in := filepath.Join(t.TempDir(), "in.json")
		os.WriteFile(in, []byte(`"from a file"`), 0o644)
		if out, errOut, code := run("--data", "@"+in, "callme", "echo"); code != 0 || !strings.Contains(out, `"got":"from a file"`) {
			t.Fatalf("caravan call --data @file: %d %q %q", code, out, errOut)
		}
		if out, errOut, code := run("callme", "fail"); code != 7 || out != "partial\n" || errOut != "boom\n" {
			t.Fatalf("caravan call callme fail: %d %q %q; want 7, partial, boom", code, out, errOut)
		}
	})

	t.Run("input limit", func(t *testing.T) {
		before := dispatched(t, echoID)
		// {"s":"xxx..."}: 8 bytes of JSON around the string.
		exact := `{"s":"` + strings.Repeat("x", jobs.PayloadLimit-8) + `"}`
		if len(exact) != 16*1024 {
			t.Fatalf("input of %d bytes", len(exact))
		}
		r, err := call("echo", exact)
		if err != nil || r.ExitCode != 0 || !strings.Contains(r.Output, `"bytes":16384`) {
			t.Fatalf("call with 16 KiB of input: exit %v %v; output %.100q", r.ExitCode, err, r.Output)
		}
		var apiErr *api.APIError
		_, err = call("echo", exact+" ")
		if !errors.As(err, &apiErr) || apiErr.Status != 413 || apiErr.Kind != "input_too_large" ||
			!strings.Contains(apiErr.Message, "16385 bytes") || !strings.Contains(apiErr.Message, "16384 bytes") ||
			!strings.Contains(apiErr.Message, "URL") {
			t.Fatalf("call with 16 KiB + 1 of input: %v; want 413 naming the sizes", err)
		}
		if n := dispatched(t, echoID); n != before+1 {
			t.Fatalf("%d calls dispatched, want %d: the refused one ran", n-before, 1)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		var apiErr *api.APIError
		if _, err := call("echo", `{"n": `); !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "not valid JSON") {
			t.Fatalf("call with broken JSON: %v; want 400", err)
		}
		for _, fn := range []string{"web", "nope"} {
			if _, err := call(fn, "{}"); !errors.As(err, &apiErr) || apiErr.Status != 404 || !strings.Contains(apiErr.Message, "callable functions: echo, fail") {
				t.Fatalf("call of %s: %v; want 404 listing the callable functions", fn, err)
			}
		}
	})

	// Calls register nothing, and neither does an unchanged deploy.
	if got := modifyIndex(t, echoID); got != index {
		t.Fatalf("echo's job was modified by the calls: index %d, was %d", got, index)
	}
	if r := deploy(t, "callme.hcl", callSpec(true), api.DeployBody{}); r.Changed || modifyIndex(t, echoID) != index {
		t.Fatalf("an unchanged deploy changed something: %+v", r)
	}

	// Without "fail", its job goes; echo stays.
	r := deploy(t, "callme.hcl", callSpec(false), api.DeployBody{})
	changes := map[string]orchestrator.Change{}
	for _, f := range r.Functions {
		changes[f.Name] = f.Change
	}
	if !r.Changed || changes["fail"] != orchestrator.Removed || changes["echo"] != orchestrator.Unchanged {
		t.Fatalf("removing a callable: %+v", r)
	}
	apps, err := env.client.Apps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, a := range apps {
		if a.JobID == app {
			for _, f := range a.Functions {
				if f.Callable {
					listed = append(listed, f.Name)
				}
			}
		}
	}
	if strings.Join(listed, ",") != "echo" {
		t.Fatalf("callables in the app list: %v, want echo", listed)
	}
	if _, _, err := env.nomad.Jobs().Info(failID, nsq(failID)); err == nil {
		t.Fatalf("%s survived a deploy without it", failID)
	}
	if r, err := call("echo", "1"); err != nil || r.ExitCode != 0 {
		t.Fatalf("echo after the redeploy: %+v %v", r, err)
	}

	// A rollback to version 1 brings "fail" back.
	if _, err := env.client.Rollback(ctx, "callme", api.ChangeBody{Version: 1}); err != nil {
		t.Fatal(err)
	}
	if j, _, err := env.nomad.Jobs().Info(failID, nsq(failID)); err != nil || j.Meta["caravan.version"] != "3" {
		t.Fatalf("after the rollback, %s: %v %v; want it back at version 3", failID, j, err)
	}
	if r, err := call("fail", ""); err != nil || r.ExitCode != 7 {
		t.Fatalf("fail after the rollback: %+v %v", r, err)
	}

	if _, err := env.client.Stop(ctx, "callme", api.ChangeBody{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{echoID, failID} {
		if _, _, err := env.nomad.Jobs().Info(id, nsq(id)); err == nil {
			t.Fatalf("%s survived stop", id)
		}
	}
}

// TestCallExample calls examples/json.hcl's callable sum.
func TestCallExample(t *testing.T) {
	purge(t, jobs.CallableID("dev--calc", "sum"))
	deployExample(t, "json")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := env.client.Call(ctx, "calc", "sum", api.ChangeBody{}, []byte(`{"numbers": [1, 2, 3.5]}`), 0)
	if err != nil || r.ExitCode != 0 || r.Output != `{"sum":6.5}`+"\n" {
		t.Fatalf("call sum: %+v %v", r, err)
	}
	r, err = env.client.Call(ctx, "calc", "sum", api.ChangeBody{}, []byte(`{}`), 0)
	if err != nil || r.ExitCode != 2 || !strings.Contains(r.Stderr, "numbers") {
		t.Fatalf("call sum without numbers: %+v %v; want exit 2", r, err)
	}
}
