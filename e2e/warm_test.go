package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/queue"
	nomad "github.com/hashicorp/nomad/api"
)

// warmAckWait is how long the tests' workers hold an input without a
// heartbeat before it goes to another (startServerWith).
const warmAckWait = 3 * time.Second

// warmSpec is an app with a web function and warm callables: "echo"
// prints its input (3 workers, 2 inputs each), "fail" complains and exits
// 7, "size" prints its input's size, "slow" touches the file its input
// names, sleeps 4s and prints "done" (1 worker), "env" prints its
// environment.
func warmSpec(app string) string {
	web := nodeServer(app, "up\n", false)
	return strings.TrimSuffix(web, "}\n") + `  function "echo" {
    command        = "sh"
    args           = ["-c", "cat \"$CARAVAN_INPUT\""]
    callable       = true
    min_containers = 3
    concurrency {
      max_inputs = 2
    }
  }
  function "fail" {
    command  = "sh"
    args     = ["-c", "echo partial; echo boom >&2; exit 7"]
    callable = true
  }
  function "size" {
    command  = "sh"
    args     = ["-c", "wc -c < \"$CARAVAN_INPUT\" | tr -d ' '"]
    callable = true
  }
  function "slow" {
    command  = "sh"
    args     = ["-c", "touch \"$(tr -d '\"' < \"$CARAVAN_INPUT\")\"; sleep 4; echo done"]
    callable = true
  }
  function "env" {
    command  = "env"
    callable = true
  }
}
`
}

// TestWarmCall: callable functions run as warm workers that take inputs
// from NATS JetStream: a call's output and exit code, spawn then get, a
// 1 MiB input, a map of 1,000 inputs over 3 workers in order, cancel, the
// errors (400, 404, 413), and a worker killed mid-input: the input is
// redelivered and answered once.
func TestWarmCall(t *testing.T) {
	const app = "e2e--warm"
	for _, id := range []string{app, jobs.CallableID(app, "echo"), jobs.CallableID(app, "fail"), jobs.CallableID(app, "size"), jobs.CallableID(app, "slow"), jobs.CallableID(app, "env")} {
		purge(t, id)
	}
	deploy(t, "warm.hcl", warmSpec("warm"), api.DeployBody{})
	j, _, err := env.nomad.Jobs().Info(jobs.CallableID(app, "echo"), nsq(jobs.CallableID(app, "echo")))
	if err != nil || *j.Type != "service" || j.ParameterizedJob != nil || *j.TaskGroups[0].Count != 3 {
		t.Fatalf("echo's workers: %+v %v", j, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	call := func(fn, input string) (*api.CallResult, error) {
		return env.client.Call(ctx, "warm", fn, api.ChangeBody{}, []byte(input), 2*time.Minute)
	}

	t.Run("output and exit code", func(t *testing.T) {
		r, err := call("echo", `{"n": 1}`)
		if err != nil || r.ExitCode != 0 || r.Output != `{"n": 1}` || r.Error != "" || r.CallID == "" || r.Attempts != 1 {
			t.Fatalf("call echo: %+v %v", r, err)
		}
		if r, err := call("echo", ""); err != nil || r.Output != "null" {
			t.Fatalf("call echo without input: %+v %v", r, err)
		}
		r, err = call("fail", "{}")
		if err != nil || r.ExitCode != 7 || r.Output != "partial\n" || r.Stderr != "boom\n" {
			t.Fatalf("call fail: %+v %v; want exit 7, partial, boom", r, err)
		}
		out, code := runCLI(t, "call", "warm", "fail")
		if code != 7 || !strings.Contains(out, "partial") || !strings.Contains(out, "boom") {
			t.Fatalf("caravan call warm fail: exit %d, %q", code, out)
		}
	})

	t.Run("no NATS credential in the job or the task", func(t *testing.T) {
		_, admin := env.server.NATS()
		for _, fn := range []string{"echo", "env"} {
			j, _, err := env.nomad.Jobs().Info(jobs.CallableID(app, fn), nsq(jobs.CallableID(app, fn)))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(j)
			if strings.Contains(string(b), admin) || strings.Contains(string(b), "nats://") || strings.Contains(string(b), "CARAVAN_NATS") {
				t.Errorf("%s's workers' job carries a NATS address or credential", fn)
			}
			if u := j.TaskGroups[0].Tasks[0].Env[agent.EnvNATSURL]; !strings.Contains(u, agent.NATSPath) || !strings.Contains(u, "&sig=") {
				t.Errorf("%s's workers' job: NATS credential URL %q", fn, u)
			}
		}
		r, err := call("env", "")
		if err != nil || r.ExitCode != 0 || !strings.Contains(r.Output, "CARAVAN_INPUT=") {
			t.Fatalf("call env: %+v %v", r, err)
		}
		if strings.Contains(r.Output, admin) || strings.Contains(r.Output, "nats://") || strings.Contains(r.Output, "NATS") {
			t.Errorf("the function's process sees NATS: %s", r.Output)
		}
	})

	t.Run("spawn then get", func(t *testing.T) {
		out, code := runCLI(t, "call", "--spawn", "warm", "echo", "--data", `"later"`)
		id := strings.TrimSpace(out)
		if code != 0 || !queue.ValidID(id) {
			t.Fatalf("caravan call --spawn: exit %d, %q", code, out)
		}
		out, code = runCLI(t, "call", "get", id, "--wait", "1m")
		if code != 0 || out != `"later"` {
			t.Fatalf("caravan call get %s --wait: exit %d, %q", id, code, out)
		}
		st, err := env.client.CallGet(ctx, id, 0)
		if err != nil || st.State != queue.Done || st.Result.Output != `"later"` || st.Function != "echo" {
			t.Fatalf("get %s: %+v %v", id, st, err)
		}
	})

	t.Run("1 MiB input", func(t *testing.T) {
		in := `"` + strings.Repeat("x", 1<<20-2) + `"`
		r, err := call("size", in)
		if err != nil || r.ExitCode != 0 || strings.TrimSpace(r.Output) != strconv.Itoa(1<<20) {
			t.Fatalf("call size with 1 MiB: %+v %v", r, err)
		}
		r, err = call("echo", in)
		if err != nil || r.Output != in {
			t.Fatalf("echo of 1 MiB: %d bytes back, %v", len(r.Output), err)
		}
	})

	t.Run("map of 1000 over 3 workers", func(t *testing.T) {
		var lines strings.Builder
		for i := range 1000 {
			fmt.Fprintf(&lines, "{\"i\":%d}\n", i)
		}
		began := time.Now()
		next := 0
		err := env.client.Map(ctx, "warm", "echo", api.ChangeBody{}, strings.NewReader(lines.String()), 2*time.Minute, func(item api.MapItem) error {
			if item.Index != next || item.Output != fmt.Sprintf(`{"i":%d}`, next) || item.ExitCode != 0 {
				return fmt.Errorf("item %d: %+v", next, item)
			}
			next++
			return nil
		})
		if err != nil || next != 1000 {
			t.Fatalf("map: %d results, %v", next, err)
		}
		t.Logf("1000 inputs mapped in %s", time.Since(began))
	})

	t.Run("bad input", func(t *testing.T) {
		var apiErr *api.APIError
		if _, err := call("echo", `{"n": `); !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "not valid JSON") {
			t.Fatalf("broken JSON: %v; want 400", err)
		}
		if _, err := call("nope", "{}"); !errors.As(err, &apiErr) || apiErr.Status != 404 || !strings.Contains(apiErr.Message, "echo, env, fail, size, slow") {
			t.Fatalf("unknown function: %v; want 404 listing the callable functions", err)
		}
		big := make([]byte, queue.MaxInput+1)
		if _, err := call("size", string(big)); !errors.As(err, &apiErr) || apiErr.Status != 413 || !strings.Contains(apiErr.Message, "16 MiB") {
			t.Fatalf("an input over 16 MiB: %v; want 413 naming the limit", err)
		}
		// Another workspace sees neither the function nor the calls.
		token, err := env.server.Tokens().Create("other", "otherws")
		if err != nil {
			t.Fatal(err)
		}
		other := &api.Client{Addr: env.client.Addr, Token: token}
		if _, err := other.Call(ctx, "warm", "echo", api.ChangeBody{Workspace: "e2e"}, []byte("1"), time.Minute); !errors.As(err, &apiErr) || apiErr.Status != 404 {
			t.Fatalf("another workspace's function: %v; want 404", err)
		}
		st, err := env.client.Spawn(ctx, "warm", "echo", api.ChangeBody{}, []byte("2"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.CallGet(ctx, st.ID, 0); !errors.As(err, &apiErr) || apiErr.Status != 404 {
			t.Fatalf("another workspace's call: %v; want 404", err)
		}
		if _, err := env.client.CallGet(ctx, "c0000000000aaaaaaaaaaaaaaaaaaaaaa", 0); !errors.As(err, &apiErr) || apiErr.Status != 404 || !strings.Contains(apiErr.Message, "expired") {
			t.Fatalf("a call from 1970: %v; want 404 saying it expired", err)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "started")
		st, err := env.client.Spawn(ctx, "warm", "slow", api.ChangeBody{}, []byte(strconv.Quote(marker)))
		if err != nil {
			t.Fatal(err)
		}
		waitFile(t, ctx, marker)
		out, code := runCLI(t, "call", "cancel", st.ID)
		if code != 0 || !strings.Contains(out, "cancelled") {
			t.Fatalf("caravan call cancel: exit %d, %q", code, out)
		}
		got, err := env.client.CallGet(ctx, st.ID, time.Minute)
		if err != nil || got.State != queue.Cancelled {
			t.Fatalf("after cancel: %+v %v", got, err)
		}
	})

	t.Run("worker killed mid-input", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "started")
		st, err := env.client.Spawn(ctx, "warm", "slow", api.ChangeBody{}, []byte(strconv.Quote(marker)))
		if err != nil {
			t.Fatal(err)
		}
		waitFile(t, ctx, marker)
		allocs, _, err := env.nomad.Jobs().Allocations(jobs.CallableID(app, "slow"), false, nsq(jobs.CallableID(app, "slow")))
		if err != nil {
			t.Fatal(err)
		}
		killed := 0
		for _, a := range allocs {
			if a.ClientStatus == nomad.AllocClientStatusRunning {
				alloc, _, err := env.nomad.Allocations().Info(a.ID, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := env.nomad.Allocations().Signal(alloc, nil, "slow", "SIGKILL"); err != nil {
					t.Fatal(err)
				}
				killed++
			}
		}
		if killed != 1 {
			t.Fatalf("killed %d workers, want 1", killed)
		}
		got, err := env.client.CallGet(ctx, st.ID, 2*time.Minute)
		if err != nil || got.State != queue.Done || got.Result.Output != "done\n" || got.Result.Attempts != 2 {
			t.Fatalf("after the worker was killed: %+v %v (result %+v)", got, err, got.Result)
		}
	})
}

// waitFile polls until path exists.
func waitFile(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never appeared", path)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestWarmFromZero: a warm callable with min_containers = 0 deploys no
// worker; its first call waits for the autoscaler to start one (scaled on
// the queue's depth) and is answered; idle past its scaledown_window, it
// is back at zero.
func TestWarmFromZero(t *testing.T) {
	const app = "e2e--warmzero"
	id := jobs.CallableID(app, "echo")
	purge(t, app)
	purge(t, id)
	web := nodeServer("warmzero", "up\n", false)
	deploy(t, "warmzero.hcl", strings.TrimSuffix(web, "}\n")+`  function "echo" {
    command          = "sh"
    args             = ["-c", "cat \"$CARAVAN_INPUT\""]
    callable         = true
    min_containers   = 0
    max_containers   = 2
    scaledown_window = "3s"
  }
}
`, api.DeployBody{})
	count := func() int {
		j, _, err := env.nomad.Jobs().Info(id, nsq(id))
		if err != nil {
			t.Fatal(err)
		}
		return *j.TaskGroups[0].Count
	}
	if n := count(); n != 0 {
		t.Fatalf("deployed with %d workers, want 0", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	r, err := env.client.Call(ctx, "warmzero", "echo", api.ChangeBody{}, []byte(`"cold"`), 2*time.Minute)
	if err != nil || r.Output != `"cold"` {
		t.Fatalf("the first call at zero: %+v %v", r, err)
	}
	t.Logf("a call at zero answered in %s (its worker's cold start included)", time.Since(began))
	for count() != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("still %d workers long after the scaledown window", count())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// TestWarmServerKilled: the caravan server that took calls is killed
// (SIGKILL) while they run; they finish, and another server of the
// cluster (sharing the NATS) reads their results. The sync call in flight
// through it fails at its client (its connection is gone).
func TestWarmServerKilled(t *testing.T) {
	const app = "e2e--warmkill"
	id := jobs.CallableID(app, "slow")
	purge(t, app)
	purge(t, id)
	web := nodeServer("warmkill", "up\n", false)
	deploy(t, "warmkill.hcl", strings.TrimSuffix(web, "}\n")+`  function "slow" {
    command  = "sh"
    args     = ["-c", "sleep 3; cat \"$CARAVAN_INPUT\""]
    callable = true
    concurrency {
      max_inputs = 4
    }
  }
}
`, api.DeployBody{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The worker is up once a call is answered.
	if _, err := env.client.Call(ctx, "warmkill", "slow", api.ChangeBody{}, []byte(`"warm"`), 2*time.Minute); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	logPath := filepath.Join(env.stack.StateDir, "logs", "caravan-server-warmkill.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(caravanBinary(t), append([]string{"server", "--log-level", "debug"}, serverFlags(listen)...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	doomed := &api.Client{Addr: "http://" + listen, Token: env.client.Token}
	eventually(t, 30*time.Second, "the doomed server answers", func() error { return doomed.Health(context.Background()) })

	var spawned []string
	for i := range 3 {
		st, err := doomed.Spawn(ctx, "warmkill", "slow", api.ChangeBody{}, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		spawned = append(spawned, st.ID)
	}
	syncErr := make(chan error, 1)
	go func() {
		_, err := doomed.Call(ctx, "warmkill", "slow", api.ChangeBody{}, []byte(`"sync"`), time.Minute)
		syncErr <- err
	}()
	// The spawned calls are queued or running (3s each) when the server
	// dies; the sync call is cut before or after it was queued.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if err := <-syncErr; err == nil {
		t.Fatal("the sync call through the killed server returned a result")
	}
	for i, id := range spawned {
		st, err := env.client.CallGet(ctx, id, time.Minute)
		if err != nil || st.State != queue.Done || st.Result.Output != strconv.Itoa(i) {
			t.Fatalf("spawned call %d after its server died: %+v %v", i, st, err)
		}
	}
}
