// Command caravan-agent is the part of caravan that runs inside Nomad
// tasks, and nothing else: `task` (the drain supervisor of autoscaled web
// functions) and `worker` (a callable function's queue worker), the same
// commands as `caravan task` and `caravan worker` (package taskcmd).
// caravan server serves it to the tasks that run it (package agent; its
// --agent-binary default is caravan-agent beside the server's
// executable): a task fetches it at every start, so its size is part of
// every cold start.
package main

import (
	"io"
	"os"

	"github.com/caravanhq/caravan/internal/taskcmd"
	"github.com/urfave/cli/v2"
)

func main() { taskcmd.Main(newApp(os.Stdout, os.Stderr), os.Args) }

// newApp builds the agent's CLI; tests run it with buffers.
func newApp(stdout, stderr io.Writer) *cli.App {
	commands := []*cli.Command{taskcmd.Task(), taskcmd.Worker()}
	for _, c := range commands {
		// Hidden in caravan's help, which is for people; the agent's
		// are all it has.
		c.Hidden = false
	}
	return &cli.App{
		Name:           "caravan-agent",
		Usage:          "What runs inside caravan's Nomad tasks (caravan server serves it to them)",
		Writer:         stdout,
		ErrWriter:      stderr,
		ExitErrHandler: func(*cli.Context, error) {},
		Commands:       commands,
	}
}
