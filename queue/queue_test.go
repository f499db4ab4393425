package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

const testToken = "test-secret"

// testNATS starts an embedded NATS server (real NATS, in-process) on a
// fresh directory, or on dir when given.
func testNATS(t *testing.T, dir string) (*Embedded, string) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	e, err := StartEmbedded(EmbeddedConfig{Dir: dir, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e, dir
}

func connect(t *testing.T, url string) *Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := Connect(ctx, Config{URL: url, Token: testToken, Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.nc.Close() })
	return q
}

// connectWorker connects as a worker of fn does, with a credential
// minted for it, after making fn's stream as caravan server would when
// it does not exist yet.
func connectWorker(t *testing.T, url string) *Queue {
	t.Helper()
	return connectWorkerOf(t, url, fn)
}

func connectWorkerOf(t *testing.T, url string, f Func) *Queue {
	t.Helper()
	admin := connect(t, url)
	ctx := deadline(t)
	if _, err := admin.js.Stream(ctx, f.Stream()); err != nil {
		if err := admin.Ensure(ctx, f, FuncConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	g := Grant{Func: f, Alloc: "alloc-" + f.Name, Exp: Expiry(time.Now(), time.Hour)}
	cred, err := Mint(testToken, g)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ConnectWorker(Config{URL: url, Token: cred, InboxPrefix: g.InboxPrefix(), Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.nc.Close() })
	return q
}

var fn = Func{Workspace: "ws", AppJobID: "ws--app", Name: "echo"}

// startWorker serves fn with run until the test ends (or stop is called).
func startWorker(t *testing.T, q *Queue, cfg FuncConfig, slots int, run Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	w := &Worker{Q: q, Func: fn, Config: cfg, MaxInputs: slots, Run: run, InputKey: InputKey(testToken, fn)}
	go func() { defer close(done); _ = w.Serve(ctx, time.Second) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

func deadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func call(t *testing.T, q *Queue, input []byte) *Record {
	t.Helper()
	ctx := deadline(t)
	id := NewID()
	w, err := q.Watch(id)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := q.Submit(ctx, fn, id, input, false); err != nil {
		t.Fatal(err)
	}
	rec, err := w.Next(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestCommandCall(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	if err := q.Ensure(deadline(t), fn, FuncConfig{}); err != nil {
		t.Fatal(err)
	}
	cmd := &Command{Path: "sh", Args: []string{"-c", `cat "$CARAVAN_INPUT"; echo oops >&2; exit 3`}}
	startWorker(t, connectWorker(t, e.URL()), FuncConfig{}, 1, cmd.Run)
	rec := call(t, q, []byte(`{"a":1}`))
	if rec.State != Done || rec.Result.Output != `{"a":1}` || rec.Result.Stderr != "oops\n" || rec.Result.ExitCode != 3 || rec.Attempts != 1 {
		t.Fatalf("record %+v result %+v", rec, rec.Result)
	}
	if rec := call(t, q, nil); rec.Result.Output != "null" {
		t.Fatalf("no input gave %q, want null", rec.Result.Output)
	}
}

// TestLargePayloads: a 1 MiB input and a 1 MiB output pass through the
// object store, intact.
func TestLargePayloads(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	cmd := &Command{Path: "sh", Args: []string{"-c", `cat "$CARAVAN_INPUT"`}}
	startWorker(t, connectWorker(t, e.URL()), FuncConfig{}, 1, cmd.Run)
	input := []byte(`"` + strings.Repeat("x", 1<<20) + `"`)
	rec := call(t, q, input)
	if rec.Result.Output != string(input) {
		t.Fatalf("output of %d bytes, want %d", len(rec.Result.Output), len(input))
	}
	got, err := q.Get(deadline(t), rec.ID)
	if err != nil || got.Result.Output != string(input) {
		t.Fatalf("get: %v (%d bytes)", err, len(got.Result.Output))
	}
	var tl *TooLargeError
	if err := q.Submit(deadline(t), fn, NewID(), make([]byte, MaxInput+1), false); !errors.As(err, &tl) {
		t.Fatalf("an input over the limit: %v", err)
	}
}

// TestSpawnGetCancel: a spawned call is queued until a worker takes it;
// cancelling a queued call means it never runs; cancelling a running one
// stops its process.
func TestSpawnGetCancel(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	ctx := deadline(t)
	if err := q.Ensure(ctx, fn, FuncConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(ctx, NewID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of an unknown call: %v", err)
	}
	first, skipped := NewID(), NewID()
	for _, id := range []string{first, skipped} {
		if err := q.Submit(ctx, fn, id, []byte(`1`), true); err != nil {
			t.Fatal(err)
		}
	}
	if rec, err := q.Get(ctx, first); err != nil || rec.State != Queued {
		t.Fatalf("queued call: %+v %v", rec, err)
	}
	if rec, err := q.Cancel(ctx, skipped); err != nil || rec.State != Cancelled {
		t.Fatalf("cancel: %+v %v", rec, err)
	}
	var ran sync.Map
	cmd := &Command{Path: "sh", Args: []string{"-c", `cat "$CARAVAN_INPUT"; [ "$(cat "$CARAVAN_INPUT")" = 2 ] && sleep 30; true`}}
	startWorker(t, connectWorker(t, e.URL()), FuncConfig{}, 2, func(ctx context.Context, id string, in []byte) *api.CallResult {
		ran.Store(id, true)
		return cmd.Run(ctx, id, in)
	})
	rec, err := q.Wait(ctx, first)
	if err != nil || rec.State != Done || rec.Result.Output != "1" {
		t.Fatalf("spawned call: %+v %v", rec, err)
	}
	slow := NewID()
	if err := q.Submit(ctx, fn, slow, []byte(`2`), true); err != nil {
		t.Fatal(err)
	}
	for {
		if _, ok := ran.Load(slow); ok {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the slow call never started")
		case <-time.After(10 * time.Millisecond):
		}
	}
	began := time.Now()
	if _, err := q.Cancel(ctx, slow); err != nil {
		t.Fatal(err)
	}
	rec, err = q.Wait(ctx, slow)
	if err != nil || rec.State != Cancelled {
		t.Fatalf("cancelled running call: %+v %v", rec, err)
	}
	// Its record stays cancelled once the killed process is reaped.
	for {
		if _, ok := ran.Load(skipped); ok {
			t.Fatal("a call cancelled while queued ran")
		}
		if d, _ := q.Depth(ctx, fn); d == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("inputs left in the stream after %s", time.Since(began))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestRedelivery: a worker that dies mid-input (its connection gone, no
// heartbeats) has the input given to another after the ack wait; it is
// answered once. After MaxAttempts losses the call is dead-lettered.
func TestRedelivery(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	ctx := deadline(t)
	cfg := FuncConfig{AckWait: 600 * time.Millisecond, MaxAttempts: 2}
	if err := q.Ensure(ctx, fn, cfg); err != nil {
		t.Fatal(err)
	}
	dying := connectWorker(t, e.URL())
	started := make(chan struct{})
	startWorker(t, dying, cfg, 1, func(ctx context.Context, id string, in []byte) *api.CallResult {
		close(started)
		dying.nc.Close() // the container is killed: no heartbeat, no result
		<-ctx.Done()
		return &api.CallResult{Output: "from the dead"}
	})
	id := NewID()
	if err := q.Submit(ctx, fn, id, []byte(`"x"`), true); err != nil {
		t.Fatal(err)
	}
	<-started
	var runs atomic.Int32
	startWorker(t, connectWorker(t, e.URL()), cfg, 1, func(ctx context.Context, id string, in []byte) *api.CallResult {
		runs.Add(1)
		return &api.CallResult{Output: "second"}
	})
	rec, err := q.Wait(ctx, id)
	if err != nil || rec.State != Done || rec.Result.Output != "second" || rec.Attempts != 2 {
		t.Fatalf("redelivered call: %+v %v", rec, err)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("answered %d times", n)
	}
}

func TestDeadLetter(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	ctx := deadline(t)
	cfg := FuncConfig{AckWait: 300 * time.Millisecond, MaxAttempts: 2}
	if err := q.Ensure(ctx, fn, cfg); err != nil {
		t.Fatal(err)
	}
	id := NewID()
	if err := q.Submit(ctx, fn, id, []byte(`1`), true); err != nil {
		t.Fatal(err)
	}
	// Two workers die mid-input, one after the other; the third delivery
	// goes to a live one, which dead-letters it without running it.
	for i := range 2 {
		dying := connectWorker(t, e.URL())
		started := make(chan struct{})
		startWorker(t, dying, cfg, 1, func(ctx context.Context, id string, in []byte) *api.CallResult {
			close(started)
			dying.nc.Close()
			<-ctx.Done()
			return &api.CallResult{}
		})
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatalf("delivery %d never came", i+1)
		}
	}
	startWorker(t, connectWorker(t, e.URL()), cfg, 1, func(context.Context, string, []byte) *api.CallResult {
		t.Error("a dead-lettered input ran")
		return &api.CallResult{}
	})
	rec, err := q.Wait(ctx, id)
	if err != nil || rec.State != Failed || !strings.Contains(rec.Result.Error, "dead-lettered") {
		t.Fatalf("dead letter: %+v %v", rec, err)
	}
}

// TestMapOrder: inputs spread over three workers come back complete, and
// a watcher hands them out in input order.
func TestMapOrder(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	ctx := deadline(t)
	for range 3 {
		startWorker(t, connectWorker(t, e.URL()), FuncConfig{}, 2, func(_ context.Context, _ string, in []byte) *api.CallResult {
			return &api.CallResult{Output: string(in)}
		})
	}
	mapID := NewID()
	w, err := q.WatchMap(mapID)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	const n = 300
	inputs := make([][]byte, n)
	for i := range n {
		inputs[i] = []byte(fmt.Sprint(i))
	}
	// One large input among them goes through the object store.
	inputs[7] = []byte(`"` + strings.Repeat("7", InlineLimit) + `"`)
	if err := q.SubmitAll(ctx, fn, func(i int) string { return fmt.Sprintf("%s.%d", mapID, i) }, inputs); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		rec, err := w.Next(ctx, fmt.Sprintf("%s.%d", mapID, i))
		if err != nil || rec.Result.Output != string(inputs[i]) {
			t.Fatalf("item %d: %+v %v", i, rec, err)
		}
	}
}

// TestRestart: a NATS restart on the same directory keeps queued inputs
// and stored results.
func TestRestart(t *testing.T) {
	e, dir := testNATS(t, "")
	q := connect(t, e.URL())
	ctx := deadline(t)
	startWorker(t, connectWorker(t, e.URL()), FuncConfig{}, 1, func(_ context.Context, _ string, in []byte) *api.CallResult {
		return &api.CallResult{Output: string(in)}
	})
	done := call(t, q, []byte(`"before"`))
	q.nc.Close()
	e.Shutdown()

	e2, _ := testNATS(t, dir)
	q2 := connect(t, e2.URL())
	if rec, err := q2.Get(ctx, done.ID); err != nil || rec.Result.Output != `"before"` {
		t.Fatalf("result after restart: %+v %v", rec, err)
	}
	queued := NewID()
	if err := q2.Submit(ctx, fn, queued, []byte(`"queued"`), true); err != nil {
		t.Fatal(err)
	}
	e2.Shutdown()
	e3, _ := testNATS(t, dir)
	q3 := connect(t, e3.URL())
	startWorker(t, connectWorker(t, e3.URL()), FuncConfig{}, 1, func(_ context.Context, _ string, in []byte) *api.CallResult {
		return &api.CallResult{Output: string(bytes.ToUpper(in))}
	})
	if rec, err := q3.Wait(ctx, queued); err != nil || rec.Result.Output != `"QUEUED"` {
		t.Fatalf("input queued before a restart: %+v %v", rec, err)
	}
}

func TestExpired(t *testing.T) {
	now := time.Now()
	old, fresh := newID(now.Add(-Retention-time.Hour)), newID(now)
	if !ValidID(old) || !ValidID(fresh) || !ValidID(fresh+".12") {
		t.Fatalf("IDs %s %s not valid", old, fresh)
	}
	if err := missing(old, now); !errors.Is(err, ErrExpired) {
		t.Errorf("an 8-day-old ID: %v", err)
	}
	if err := missing(fresh, now); !errors.Is(err, ErrNotFound) {
		t.Errorf("a fresh ID: %v", err)
	}
}

// TestRestartInFlight: NATS restarts (caravan server with it) while a
// worker runs an input; the worker reconnects, stores the result, and a
// new connection reads it.
func TestRestartInFlight(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	start := func() *Embedded {
		e, err := StartEmbedded(EmbeddedConfig{Dir: dir, Listen: addr, Token: testToken})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := start()
	ctx := deadline(t)
	q := connect(t, e.URL())
	running := make(chan struct{})
	release := make(chan struct{})
	startWorker(t, connectWorker(t, e.URL()), FuncConfig{}, 1, func(_ context.Context, _ string, in []byte) *api.CallResult {
		close(running)
		<-release
		return &api.CallResult{Output: "after " + string(in)}
	})
	id := NewID()
	if err := q.Submit(ctx, fn, id, []byte(`"restart"`), true); err != nil {
		t.Fatal(err)
	}
	<-running
	e.Shutdown()
	e = start()
	t.Cleanup(e.Shutdown)
	close(release)
	q2 := connect(t, e.URL())
	rec, err := q2.Wait(ctx, id)
	if err != nil || rec.State != Done || rec.Result.Output != `after "restart"` {
		t.Fatalf("a call in flight across a restart: %+v %v", rec, err)
	}
}

// TestStopGivesInputsBack: a worker stopped with an input still running
// after its grace gives the input back; another worker answers it.
func TestStopGivesInputsBack(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	ctx := deadline(t)
	started := make(chan struct{})
	stop := startWorker(t, connectWorker(t, e.URL()), FuncConfig{}, 1, func(ctx context.Context, _ string, _ []byte) *api.CallResult {
		close(started)
		<-ctx.Done()
		return &api.CallResult{Output: "stopped"}
	})
	id := NewID()
	if err := q.Submit(ctx, fn, id, []byte(`1`), true); err != nil {
		t.Fatal(err)
	}
	<-started
	stop() // grace 1s (startWorker), then the run ends
	startWorker(t, connectWorker(t, e.URL()), FuncConfig{}, 1, func(context.Context, string, []byte) *api.CallResult {
		return &api.CallResult{Output: "second"}
	})
	rec, err := q.Wait(ctx, id)
	if err != nil || rec.State != Done || rec.Result.Output != "second" || rec.Attempts != 2 {
		t.Fatalf("an input given back at stop: %+v %v", rec, err)
	}
}
