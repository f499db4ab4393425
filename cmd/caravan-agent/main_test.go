package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/agent"
)

// TestAgentBinary builds caravan-agent under the name a task unpacks it
// as (agent.FileName) and runs it with the arguments jobs renders: `task
// -- CMD` runs CMD and exits with its code, and `worker --help` lists the
// worker's flags.
func TestAgentBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), agent.FileName)
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string // in the combined output
	}{
		{args: []string{"task", "--", "sh", "-c", "echo served"}, want: "served"},
		{args: []string{"task", "--grace", "1s", "--", "sh", "-c", "exit 3"}, code: 3},
		{args: []string{"task"}, code: 2, want: "give the command to run"},
		{args: []string{"worker", "--help"}, want: "--max-inputs"},
		{args: []string{"--help"}, want: "worker"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			// No drain URL: the supervisor says so and runs the command.
			t.Setenv(agent.EnvDrainURL, "")
			out, err := exec.Command(bin, tc.args...).CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(string(out), tc.want) {
				t.Errorf("exit %d, output:\n%s\nwant exit %d and %q in it", code, out, tc.code, tc.want)
			}
		})
	}
}
