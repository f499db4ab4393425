package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/hashicorp/go-hclog"
)

// The long-running mode's wire (spec.Enter): the worker POSTs each input
// to the process with the call's ID in HdrCallID; the process may set
// HdrExitCode on its response.
const (
	HdrCallID   = "Caravan-Call-Id"
	HdrExitCode = "Caravan-Exit-Code"
	// EnvPort names the port the process listens on, on 127.0.0.1.
	EnvPort = "PORT"
	// DefaultReadyTimeout bounds how long the process has to listen.
	DefaultReadyTimeout = 60 * time.Second
)

// Process is a warm callable's long-running mode (spec.Enter): Supervise
// starts Path once and again whenever it exits, and Run answers an input
// by POSTing it to the process once it listens on 127.0.0.1:Port. A Run
// whose process dies mid-input returns nil: the input goes back to the
// queue (Worker.handle), to be delivered again.
type Process struct {
	Path string
	Args []string
	// Port is where the process listens (its $PORT); 0 picks a free one.
	Port int
	// ReadyTimeout bounds how long a start may take to listen (default
	// DefaultReadyTimeout); past it the calls waiting fail with why.
	ReadyTimeout time.Duration
	// KillGrace is how long the process has after SIGTERM before SIGKILL
	// (default 5s).
	KillGrace time.Duration
	// MaxInputs is how many inputs at most are in flight at once (the
	// connections kept open to the process).
	MaxInputs int
	// Stdout and Stderr get what the process prints (default the
	// worker's own stderr: the task's log).
	Stdout, Stderr io.Writer
	Log            hclog.Logger

	once    sync.Once
	client  *http.Client
	mu      sync.Mutex
	st      procState
	changed chan struct{}
	starts  int
}

// procState is where the process is: starting (neither field set),
// ready, or failed to start (err says why).
type procState struct {
	ready bool
	err   error
}

// StartError says why the process could not answer: it did not start,
// exited before it listened, or did not listen in time.
type StartError struct{ Reason string }

func (e *StartError) Error() string { return e.Reason }

func (p *Process) init() {
	p.once.Do(func() {
		if p.Log == nil {
			p.Log = hclog.NewNullLogger()
		}
		if p.Stdout == nil {
			p.Stdout = os.Stderr
		}
		if p.Stderr == nil {
			p.Stderr = os.Stderr
		}
		if p.ReadyTimeout <= 0 {
			p.ReadyTimeout = DefaultReadyTimeout
		}
		if p.KillGrace <= 0 {
			p.KillGrace = 5 * time.Second
		}
		n := max(p.MaxInputs, 1)
		p.client = &http.Client{Transport: &http.Transport{
			// Never a proxy: the process is on this host.
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        n,
			MaxIdleConnsPerHost: n,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}}
		p.changed = make(chan struct{})
	})
}

// Starts is how many times Supervise has started the process.
func (p *Process) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

func (p *Process) set(st procState) {
	p.mu.Lock()
	p.st = st
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// Supervise runs the process until ctx ends, starting it again whenever
// it exits (after a pause that grows while it keeps failing); then it
// stops it: SIGTERM to its process group, SIGKILL after KillGrace.
// Stop the worker's inputs first: those in flight lose their process.
func (p *Process) Supervise(ctx context.Context) {
	p.init()
	if p.Port == 0 {
		port, err := freePort()
		if err != nil {
			p.set(procState{err: &StartError{"no free port for the function's process: " + err.Error()}})
			<-ctx.Done()
			return
		}
		p.Port = port
	}
	var pause time.Duration
	for ctx.Err() == nil {
		began := time.Now()
		ready, err := p.runOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case ready && time.Since(began) >= 10*time.Second:
			pause = 0
		case ready:
			pause = min(max(pause*2, 250*time.Millisecond), 30*time.Second)
		default:
			pause = min(max(pause*2, time.Second), 30*time.Second)
		}
		if err != nil {
			p.Log.Error("the function's process", "error", err, "again_in", pause)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
	}
}

// runOnce starts the process, waits for it to listen, and serves until
// it exits or ctx ends (then stops it). ready says whether it listened.
func (p *Process) runOnce(ctx context.Context) (ready bool, err error) {
	p.set(procState{})
	tail := &tailBuffer{limit: 2 << 10}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), EnvPort+"="+strconv.Itoa(p.Port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout = io.MultiWriter(p.Stdout, tail)
	cmd.Stderr = io.MultiWriter(p.Stderr, tail)
	p.mu.Lock()
	p.starts++
	p.mu.Unlock()
	if err := cmd.Start(); err != nil {
		serr := &StartError{"the function's process did not start: " + err.Error()}
		p.set(procState{err: serr})
		return false, serr
	}
	began := time.Now()
	dead := make(chan struct{})
	var werr error
	go func() { werr = cmd.Wait(); close(dead) }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-dead:
		case <-time.After(p.KillGrace):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-dead
		}
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port))
	deadline := time.NewTimer(p.ReadyTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for !ready {
		select {
		case <-ctx.Done():
			stop()
			return false, nil
		case <-dead:
			serr := &StartError{fmt.Sprintf("the function's process exited (%v) before it listened on %s%s", werr, addr, tail.said())}
			p.set(procState{err: serr})
			return false, serr
		case <-deadline.C:
			stop()
			serr := &StartError{fmt.Sprintf("the function's process did not listen on %s within %s (ready_timeout)%s", addr, p.ReadyTimeout, tail.said())}
			p.set(procState{err: serr})
			return false, serr
		case <-poll.C:
			if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
				_ = c.Close()
				ready = true
			}
		}
	}
	p.Log.Info("the function's process is ready", "addr", addr, "took", time.Since(began).Round(time.Millisecond))
	p.set(procState{ready: true})
	select {
	case <-ctx.Done():
		stop()
		return true, nil
	case <-dead:
		p.set(procState{})
		p.client.CloseIdleConnections()
		return true, fmt.Errorf("exited (%v) after %s; starting it again%s", werr, time.Since(began).Round(time.Millisecond), tail.said())
	}
}

// Run is a Runner: it waits for the process to listen, POSTs the input
// and reads its answer. It returns nil when the process died (or dropped
// the request) mid-input, so the input is delivered again.
func (p *Process) Run(ctx context.Context, id string, input []byte) *api.CallResult {
	p.init()
	var changed chan struct{}
	for {
		p.mu.Lock()
		var st procState
		st, changed = p.st, p.changed
		p.mu.Unlock()
		if st.ready {
			break
		}
		if st.err != nil {
			return &api.CallResult{ExitCode: -1, Error: st.err.Error()}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return &api.CallResult{ExitCode: -1, Error: "cancelled"}
		}
	}
	if len(bytes.TrimSpace(input)) == 0 {
		input = []byte("null")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:"+strconv.Itoa(p.Port)+"/", bytes.NewReader(input))
	if err != nil {
		return &api.CallResult{ExitCode: -1, Error: "the input could not be sent: " + err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HdrCallID, id)
	// An idempotency key makes the request replayable: net/http sends it
	// again on a fresh connection when a kept-alive one the process had
	// just closed fails before any answer (a race of idle timeouts).
	req.Header.Set("Idempotency-Key", id)
	resp, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return &api.CallResult{ExitCode: -1, Error: "cancelled"}
		}
		p.Log.Warn("the function's process did not answer; the input goes back", "call", id, "error", err)
		p.settle(ctx, changed)
		return nil
	}
	defer resp.Body.Close()
	out := &capped{limit: OutputLimit}
	if _, err := io.Copy(out, resp.Body); err != nil {
		if ctx.Err() != nil {
			return &api.CallResult{ExitCode: -1, Error: "cancelled"}
		}
		p.Log.Warn("the function's process broke off its answer; the input goes back", "call", id, "error", err)
		p.settle(ctx, changed)
		return nil
	}
	return answer(resp.StatusCode, resp.Status, resp.Header.Get(HdrExitCode), out)
}

// settle waits (a second at most) for Supervise to see that the process
// it saw ready died (changed is closed), so the input that goes back is
// not delivered again, and lost again, before the process starts again.
func (p *Process) settle(ctx context.Context, changed <-chan struct{}) {
	select {
	case <-changed:
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
}

// answer makes a call's result of the process's response.
func answer(status int, statusText, exitHeader string, out *capped) *api.CallResult {
	res := &api.CallResult{Output: out.String(), OutputTruncated: out.cut}
	code, err := strconv.Atoi(exitHeader)
	switch {
	case exitHeader != "" && err == nil && code >= 0 && code <= 255:
		res.ExitCode = code
	case exitHeader != "":
		res.ExitCode = 1
		res.Error = fmt.Sprintf("the function's process answered %s: %q, which is not an exit code (0 to 255)", HdrExitCode, exitHeader)
	case status >= 200 && status < 300:
		res.ExitCode = 0
	default:
		res.ExitCode = 1
		res.Error = "the function's process answered " + statusText
	}
	return res
}

// freePort asks the kernel for a port free on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailBuffer keeps the last limit bytes written to it: what a process
// said before it failed, for the reason a call gets.
type tailBuffer struct {
	mu    sync.Mutex
	buf   []byte
	limit int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// said is ": it printed: ..." with the tail, or "" when it printed nothing.
func (t *tailBuffer) said() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(bytes.TrimSpace(t.buf))
	if s == "" {
		return ""
	}
	return "; it printed: " + s
}

var _ Runner = (*Process)(nil).Run
