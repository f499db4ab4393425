package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/orchestrator"
	"github.com/urfave/cli/v2"
)

// TestRunExitCodes: a run the server stopped waiting for is not a success.
func TestRunExitCodes(t *testing.T) {
	for _, tc := range []struct {
		status   string
		exitCode int
		want     string
	}{
		{"succeeded", 0, "✓ nightly ran"},
		{"failed", 1, "✗ nightly failed with exit code 3"},
		{"running", exitStillRunning, "still running after --timeout 1s (job dev--shop--cron--nightly/periodic-1): the run goes on in Nomad"},
	} {
		t.Run(tc.status, func(t *testing.T) {
			srv, seen := fakeServer(t, map[string]any{"POST /v1/apps/shop/run": orchestrator.RunResult{
				Function: "nightly", JobID: "dev--shop--cron--nightly/periodic-1", Status: tc.status, ExitCode: 3}})
			out, _, err := runCLI(t, "--addr", srv.URL, "run", "--timeout", "1s", "shop", "nightly")
			code, msg := 0, out
			var ec cli.ExitCoder
			if errors.As(err, &ec) {
				code, msg = ec.ExitCode(), ec.Error()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.exitCode || !strings.Contains(msg, tc.want) {
				t.Fatalf("run with status %s: exit %d %q, want exit %d and %q", tc.status, code, msg, tc.exitCode, tc.want)
			}
			if len(*seen) != 1 || !strings.Contains((*seen)[0], `"timeout":"1s"`) {
				t.Fatalf("requests: %q", *seen)
			}
		})
	}
}
