package queue

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/caravanhq/caravan/api"
)

// OutputLimit caps the stdout, and apart from it the stderr, a call
// returns; past it the result says the output was truncated.
const OutputLimit = 4 << 20

// EnvInput names the file holding a call's input for the process.
const EnvInput = "CARAVAN_INPUT"

// Command runs Path with Args once per input, today's contract of a
// callable function: the input in the file $CARAVAN_INPUT names, the
// output on stdout, diagnostics on stderr, the answer's exit code its own.
type Command struct {
	Path string
	Args []string
	// Dir holds the inputs' files (default os.TempDir()).
	Dir string
	// KillGrace is how long a cancelled process has after SIGTERM before
	// SIGKILL (default 5s).
	KillGrace time.Duration
}

// Run is a Runner.
func (c *Command) Run(ctx context.Context, id string, input []byte) *api.CallResult {
	res := &api.CallResult{ExitCode: -1}
	dir := c.Dir
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.CreateTemp(dir, "caravan-input-*.json")
	if err != nil {
		res.Error = "writing the input file: " + err.Error()
		return res
	}
	defer os.Remove(f.Name())
	if len(bytes.TrimSpace(input)) == 0 {
		input = []byte("null")
	}
	_, err = f.Write(input)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		res.Error = "writing the input file: " + err.Error()
		return res
	}
	path, _ := filepath.Abs(f.Name())
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Env = append(os.Environ(), EnvInput+"="+path, "CARAVAN_CALL_ID="+id)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = c.KillGrace
	if cmd.WaitDelay <= 0 {
		cmd.WaitDelay = 5 * time.Second
	}
	stdout, stderr := &capped{limit: OutputLimit}, &capped{limit: OutputLimit}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Run()
	res.Output, res.OutputTruncated = stdout.String(), stdout.cut
	res.Stderr, res.StderrTruncated = stderr.String(), stderr.cut
	var exit *exec.ExitError
	switch {
	case err == nil:
		res.ExitCode = 0
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		res.ExitCode = exit.ExitCode()
	case errors.As(err, &exit):
		res.ExitCode = -1
		res.Error = "the function was killed (" + exit.String() + ")"
	default:
		res.Error = "the function did not run: " + err.Error()
	}
	if ctx.Err() != nil && res.Error == "" {
		res.Error = "cancelled"
	}
	return res
}

// capped keeps the first limit bytes written to it.
type capped struct {
	bytes.Buffer
	limit int
	cut   bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.limit - c.Len(); room < len(p) {
		c.cut = true
		if room > 0 {
			c.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return c.Buffer.Write(p)
}
