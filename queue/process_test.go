package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test binary is also the fake long-running process: with
// $CARAVAN_FAKE_PROCESS set it is one (fakeProcess) instead of the tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv("CARAVAN_FAKE_PROCESS"); mode != "" {
		fakeProcess(mode)
		return
	}
	os.Exit(m.Run())
}

// fakeProcess is a function's process in one of these modes: "serve"
// appends a line to $FAKE_STARTS, listens on $PORT and answers each
// input with it and its call ID; an input "fail" answers exit code 4,
// "die" exits mid-input (every time), "die-once" the first time only
// (it leaves $FAKE_STARTS.died); "crash" exits at once, saying why;
// "deaf" never listens.
func fakeProcess(mode string) {
	switch mode {
	case "crash":
		fmt.Fprintln(os.Stderr, "no model here")
		os.Exit(2)
	case "deaf":
		time.Sleep(time.Hour)
	}
	starts := os.Getenv("FAKE_STARTS")
	f, _ := os.OpenFile(starts, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	fmt.Fprintln(f, os.Getpid())
	f.Close()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch string(body) {
		case `"fail"`:
			w.Header().Set(HdrExitCode, "4")
			fmt.Fprint(w, "bad input")
			return
		case `"die"`:
			os.Exit(9)
		case `"die-once"`:
			if _, err := os.Stat(starts + ".died"); err != nil {
				_ = os.WriteFile(starts+".died", nil, 0o644)
				os.Exit(9)
			}
		}
		fmt.Fprintf(w, "%s %s", r.Header.Get(HdrCallID), body)
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// fakeProc is a Process running this binary in mode, supervised until
// the test ends; starts reads how many times it started (its own count).
func fakeProc(t *testing.T, mode string, ready time.Duration) (p *Process, starts func() int) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	file := t.TempDir() + "/starts"
	t.Setenv("CARAVAN_FAKE_PROCESS", mode)
	t.Setenv("FAKE_STARTS", file)
	p = &Process{Path: exe, ReadyTimeout: ready, KillGrace: time.Second, MaxInputs: 4, Stdout: io.Discard, Stderr: io.Discard}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Supervise(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p, func() int {
		b, _ := os.ReadFile(file)
		return bytes.Count(b, []byte("\n"))
	}
}

// TestProcessCalls: through the real queue, one process answers every
// input, at most max_inputs at once; a failure is its exit code; a
// process that dies mid-input is started again and the input delivered
// again, answered once.
func TestProcessCalls(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	if err := q.Ensure(deadline(t), fn, FuncConfig{}); err != nil {
		t.Fatal(err)
	}
	p, starts := fakeProc(t, "serve", 10*time.Second)
	startWorker(t, connectWorker(t, e.URL()), FuncConfig{}, 4, p.Run)
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := call(t, q, []byte(fmt.Sprint(i)))
			if rec.State != Done || rec.Result.ExitCode != 0 || !strings.HasSuffix(rec.Result.Output, fmt.Sprintf(" %d", i)) || !strings.HasPrefix(rec.Result.Output, rec.ID+" ") {
				errs <- fmt.Sprintf("input %d: record %+v result %+v", i, rec, rec.Result)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := starts(); n != 1 {
		t.Errorf("the process started %d times for 20 inputs, want 1", n)
	}
	if rec := call(t, q, []byte(`"fail"`)); rec.State != Done || rec.Result.ExitCode != 4 || rec.Result.Output != "bad input" {
		t.Errorf("a failing input: record %+v result %+v", rec, rec.Result)
	}
	if rec := call(t, q, nil); !strings.HasSuffix(rec.Result.Output, " null") {
		t.Errorf("no input gave %q, want null", rec.Result.Output)
	}
	rec := call(t, q, []byte(`"die-once"`))
	if rec.State != Done || rec.Result.ExitCode != 0 || rec.Attempts != 2 || !strings.HasSuffix(rec.Result.Output, ` "die-once"`) {
		t.Errorf("an input whose process died: record %+v result %+v", rec, rec.Result)
	}
	if n, m := starts(), p.Starts(); n != 2 || m != 2 {
		t.Errorf("the process started %d times (Supervise counts %d), want 2", n, m)
	}
}

// TestProcessDiesEveryTime: an input that kills its process every time
// is dead-lettered after MaxAttempts, with the reason; the next input is
// answered by the process started again.
func TestProcessDiesEveryTime(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	cfg := FuncConfig{MaxAttempts: 2}
	if err := q.Ensure(deadline(t), fn, cfg); err != nil {
		t.Fatal(err)
	}
	p, _ := fakeProc(t, "serve", 10*time.Second)
	startWorker(t, connectWorker(t, e.URL()), cfg, 2, p.Run)
	rec := call(t, q, []byte(`"die"`))
	if rec.State != Failed || !strings.Contains(rec.Result.Error, "process died") || !strings.Contains(rec.Result.Error, "dead-lettered") {
		t.Fatalf("record %+v result %+v", rec, rec.Result)
	}
	if rec := call(t, q, []byte(`1`)); rec.State != Done || !strings.HasSuffix(rec.Result.Output, " 1") {
		t.Fatalf("after: record %+v result %+v", rec, rec.Result)
	}
}

// TestProcessNotReady: a process that exits before it listens, or never
// listens, fails the calls waiting for it with why, in bounded time.
func TestProcessNotReady(t *testing.T) {
	for _, c := range []struct {
		mode, want string
	}{
		{"crash", "exited (exit status 2) before it listened"},
		{"deaf", "did not listen on 127.0.0.1:"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			p, _ := fakeProc(t, c.mode, 500*time.Millisecond)
			res := p.Run(deadline(t), "abcdefgh", []byte(`1`))
			if res == nil || res.ExitCode != -1 || !strings.Contains(res.Error, c.want) {
				t.Fatalf("result %+v, want an error with %q", res, c.want)
			}
			if c.mode == "crash" && !strings.Contains(res.Error, "no model here") {
				t.Errorf("the reason %q does not carry what the process printed", res.Error)
			}
		})
	}
}

// TestProcessStops: once Supervise ends, the process is gone (its port
// closed) and a cancelled call's run ends.
func TestProcessStops(t *testing.T) {
	exe, _ := os.Executable()
	t.Setenv("CARAVAN_FAKE_PROCESS", "serve")
	t.Setenv("FAKE_STARTS", t.TempDir()+"/starts")
	p := &Process{Path: exe, KillGrace: time.Second, Stdout: io.Discard, Stderr: io.Discard}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Supervise(ctx) }()
	if res := p.Run(deadline(t), "abcdefgh", []byte(`1`)); res == nil || res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if res := p.Run(cctx, "abcdefgh", []byte(`1`)); res == nil || res.Error != "cancelled" {
		t.Errorf("a cancelled run: %+v", res)
	}
	cancel()
	<-done
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.Port), time.Second); err == nil {
		c.Close()
		t.Fatal("the process still listens after Supervise ended")
	}
}

func TestAnswer(t *testing.T) {
	for _, c := range []struct {
		status   int
		exit     string
		wantCode int
		wantErr  string
	}{
		{200, "", 0, ""},
		{204, "", 0, ""},
		{200, "3", 3, ""},
		{500, "0", 0, ""},
		{500, "", 1, "answered 500 Internal Server Error"},
		{200, "x", 1, "not an exit code"},
		{200, "-1", 1, "not an exit code"},
		{200, "256", 1, "not an exit code"},
	} {
		out := &capped{limit: 4}
		out.Write([]byte("hello"))
		res := answer(c.status, fmt.Sprintf("%d %s", c.status, http.StatusText(c.status)), c.exit, out)
		if res.ExitCode != c.wantCode || (c.wantErr == "") != (res.Error == "") || !strings.Contains(res.Error, c.wantErr) || res.Output != "hell" || !res.OutputTruncated {
			t.Errorf("status %d exit %q: %+v", c.status, c.exit, res)
		}
	}
}
