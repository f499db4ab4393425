package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/queue"
)

// TestWorkerEnter runs `caravan worker --enter` against an in-process
// NATS: the command starts once, answers every input over HTTP, and is
// gone once the worker stops.
func TestWorkerEnter(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node to run the function's process")
	}
	const token = "test-secret"
	e, err := queue.StartEmbedded(queue.EmbeddedConfig{Dir: t.TempDir(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := queue.Connect(ctx, queue.Config{URL: e.URL(), Token: token, Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	f := queue.Func{Workspace: "ws", AppJobID: "ws--app", Name: "model"}
	if err := q.Ensure(ctx, f, queue.FuncConfig{}); err != nil {
		t.Fatal(err)
	}
	starts := filepath.Join(t.TempDir(), "starts")
	t.Setenv("STARTS", starts)
	js := `require("fs").appendFileSync(process.env.STARTS, process.pid + "\n");
require("http").createServer((q, s) => { let b = ""; q.on("data", (c) => (b += c)); q.on("end", () => s.end("got " + b)); }).listen(process.env.PORT, "127.0.0.1");`

	wctx, stop := context.WithCancel(context.Background())
	var out, errb bytes.Buffer
	done := make(chan error, 1)
	go func() {
		app := newApp(&out, &errb)
		done <- app.RunContext(wctx, []string{"caravan", "--state-dir", t.TempDir(), "worker", "--nats-url", e.URL(), "--nats-token", token,
			"--workspace", f.Workspace, "--app-job", f.AppJobID, "--function", f.Name, "--max-inputs", "2", "--enter", "--ready-timeout", "20s",
			"--", node, "-e", js})
	}()
	for i := range 5 {
		id := queue.NewID()
		w, err := q.Watch(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Submit(ctx, f, id, []byte(`{"i":`+string(rune('0'+i))+`}`), false); err != nil {
			t.Fatal(err)
		}
		rec, err := w.Next(ctx, id)
		w.Stop()
		if err != nil {
			t.Fatalf("input %d: %v\n%s", i, err, errb.String())
		}
		if want := `got {"i":` + string(rune('0'+i)) + `}`; rec.Result == nil || rec.Result.Output != want || rec.Result.ExitCode != 0 {
			t.Fatalf("input %d: record %+v result %+v, want %q", i, rec, rec.Result, want)
		}
	}
	b, _ := os.ReadFile(starts)
	pids := strings.Fields(string(b))
	if len(pids) != 1 {
		t.Fatalf("the process started %d times for 5 inputs, want once", len(pids))
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("worker: %v\n%s", err, errb.String())
		}
	case <-ctx.Done():
		t.Fatal("the worker did not stop")
	}
	// The process is gone with its worker.
	if err := exec.Command("kill", "-0", pids[0]).Run(); err == nil {
		t.Errorf("the function's process %s outlived its worker", pids[0])
	}
}
