package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Supervisor runs a web function's process as its child (`caravan task --
// CMD...`, the task's entrypoint) and stops it without cutting a request:
// Nomad's stop sequence deregisters the container's service, waits the
// group's shutdown_delay (0 for these), then sends the task's kill signal.
// On that signal the supervisor first drains the allocation (every proxy
// gives it no new request and waits until it serves none, at most Grace),
// then passes the signal on and waits for the child, whose exit is the
// task's. Nomad's kill_timeout, counted from the signal, is rendered as
// Grace plus the child's own time to stop (jobs).
type Supervisor struct {
	// Drain asks for the drain and returns once it is done or ctx (Grace)
	// ends; an error means it could not be asked.
	Drain func(ctx context.Context) error
	// Grace bounds the drain.
	Grace time.Duration
	// Fallback is how long the child keeps serving when Drain fails
	// (caravan server unreachable): the proxies still stop giving it
	// requests once they see the deregistration.
	Fallback time.Duration
	// Log gets a line per step (the task's stderr).
	Log io.Writer
}

// stopSignal reports whether sig asks the task to stop (Nomad's kill
// signal: SIGINT by default, SIGTERM for docker, or the spec's).
func stopSignal(sig os.Signal) bool {
	return sig == syscall.SIGTERM || sig == syscall.SIGINT || sig == syscall.SIGQUIT
}

// Run starts cmd and supervises it until it exits, reading sigs (what the
// task receives): a stop signal drains first and is then passed on, a
// second one at once; others pass at once. It returns the exit code for
// the task: the child's, 128+N for a child ended by signal N, 127 when it
// could not start.
func (s *Supervisor) Run(cmd *exec.Cmd, sigs <-chan os.Signal) int {
	logf := func(format string, args ...any) {
		if s.Log != nil {
			fmt.Fprintf(s.Log, "caravan task: "+format+"\n", args...)
		}
	}
	if err := cmd.Start(); err != nil {
		logf("starting %s: %v", cmd.Path, err)
		return 127
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	drained := make(chan os.Signal, 1)
	stopping := false
	for {
		select {
		case err := <-done:
			return exitCode(err)
		case sig := <-drained:
			logf("passing %v on to the process", sig)
			_ = cmd.Process.Signal(sig)
		case sig := <-sigs:
			if !stopSignal(sig) || stopping {
				_ = cmd.Process.Signal(sig)
				continue
			}
			stopping = true
			go func() {
				s.drain(logf)
				drained <- sig
			}()
		}
	}
}

// drain runs Drain within Grace, or waits Fallback when it fails.
func (s *Supervisor) drain(logf func(string, ...any)) {
	start := time.Now()
	if s.Drain == nil {
		time.Sleep(s.Fallback)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.Grace)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		logf("draining: %v; serving on for %s", err, s.Fallback)
		select {
		case <-time.After(s.Fallback - time.Since(start)):
		case <-ctx.Done():
		}
		return
	}
	logf("drained in %s", time.Since(start).Round(time.Millisecond))
}

// exitCode is the task's exit code for the child's end.
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}

// DrainAnswer is caravan server's answer to a drain (POST DrainPath).
type DrainAnswer struct {
	// InFlight is how many requests the allocation still serves over
	// every proxy that answered; Proxies how many answered, Failed how
	// many could not be reached.
	InFlight int `json:"in_flight"`
	Proxies  int `json:"proxies"`
	Failed   int `json:"failed"`
}

// HTTPDrain is a Supervisor's Drain through caravan server at the signed
// drain URL u (EnvDrainURL); logf gets the answer.
func HTTPDrain(u string, client *http.Client, logf func(string, ...any)) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		wait := 30 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			// Leave the answer time to come back within the deadline.
			wait = max(time.Until(dl)-500*time.Millisecond, 0)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u+"&wait="+wait.Round(time.Millisecond).String(), nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return fmt.Errorf("caravan server answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		var ans DrainAnswer
		if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
			return fmt.Errorf("reading caravan server's answer: %w", err)
		}
		if ans.Proxies == 0 && ans.Failed > 0 {
			return fmt.Errorf("no proxy answered (%d failed)", ans.Failed)
		}
		logf("proxies: %d answered, %d failed; %d requests still in flight", ans.Proxies, ans.Failed, ans.InFlight)
		return nil
	}
}
