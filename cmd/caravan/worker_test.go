package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/queue"
	"github.com/caravanhq/caravan/server"
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
	e, q, f, ctx := workerQueue(t, token, "model", 30*time.Second)
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
	stopWorker(ctx, t, stop, done, &errb)
	// The process is gone with its worker.
	if err := exec.Command("kill", "-0", pids[0]).Run(); err == nil {
		t.Errorf("the function's process %s outlived its worker", pids[0])
	}
}

// TestWorkerRenews runs `caravan worker` with an agent endpoint whose
// credentials live 2 s: the worker fetches fresh ones from it, keeps
// answering inputs across several lifetimes, and logs no credential
// (nor the URL's signature) even at debug.
func TestWorkerRenews(t *testing.T) {
	const token = "test-secret"
	e, q, f, ctx := workerQueue(t, token, "echo", 60*time.Second)
	const lifetime = 2 * time.Second
	nw := server.NATSWorkers{URL: e.URL(), Key: token, Lifetime: lifetime}
	var mu sync.Mutex
	var minted []string
	agentSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("sig") != "s3cr3tsig" {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		ans, err := nw.Credential(queue.Grant{Func: f, Alloc: "alloc-1"})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		mu.Lock()
		minted = append(minted, ans.Token)
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(ans)
	}))
	defer agentSrv.Close()

	wctx, stop := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		app := newApp(&out, &errb)
		done <- app.RunContext(wctx, []string{"caravan", "--state-dir", t.TempDir(), "worker", "--log-level", "debug",
			"--agent-nats-url", agentSrv.URL + agent.NATSPath + "?job=ws--app--call--echo&alloc=alloc-1&sig=s3cr3tsig",
			"--workspace", f.Workspace, "--app-job", f.AppJobID, "--function", f.Name,
			"--", "sh", "-c", `cat "$CARAVAN_INPUT"`})
	}()
	start := time.Now()
	for i := 0; time.Since(start) < 3*lifetime+time.Second; i++ {
		id := queue.NewID()
		w, err := q.Watch(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Submit(ctx, f, id, []byte(strconv.Itoa(i)), false); err != nil {
			t.Fatal(err)
		}
		rec, err := w.Next(ctx, id)
		w.Stop()
		if err != nil || rec.Result == nil || rec.Result.Output != strconv.Itoa(i) {
			t.Fatalf("input %d at %s: %+v %v\n%s", i, time.Since(start), rec, err, errb.String())
		}
	}
	stopWorker(ctx, t, stop, done, &errb)
	mu.Lock()
	defer mu.Unlock()
	if len(minted) < 4 {
		t.Fatalf("%d credentials fetched in %s, want one at start and one each half lifetime\n%s", len(minted), time.Since(start), errb.String())
	}
	logs := errb.String() + out.String()
	if !strings.Contains(logs, "NATS credential renewed") {
		t.Errorf("no renewal logged at debug:\n%s", logs)
	}
	for _, s := range append(minted, "s3cr3tsig", token) {
		if strings.Contains(logs, s) {
			t.Fatalf("the logs hold a secret %.12s…:\n%s", s, logs)
		}
	}
}

// syncBuffer is a bytes.Buffer the worker's logger and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// workerQueue starts an in-process NATS with admin token, connects to it
// as caravan server does and makes the queue of function name; it all
// ends with the test, the context after timeout.
func workerQueue(t *testing.T, token, name string, timeout time.Duration) (*queue.Embedded, *queue.Queue, queue.Func, context.Context) {
	t.Helper()
	e, err := queue.StartEmbedded(queue.EmbeddedConfig{Dir: t.TempDir(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	q, err := queue.Connect(ctx, queue.Config{URL: e.URL(), Token: token, Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	f := queue.Func{Workspace: "ws", AppJobID: "ws--app", Name: name}
	if err := q.Ensure(ctx, f, queue.FuncConfig{}); err != nil {
		t.Fatal(err)
	}
	return e, q, f, ctx
}

// stopWorker stops the worker (stop) and waits until it returned (done)
// without an error, its stderr shown if not.
func stopWorker(ctx context.Context, t *testing.T, stop func(), done <-chan error, stderr fmt.Stringer) {
	t.Helper()
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("worker: %v\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("the worker did not stop")
	}
}
