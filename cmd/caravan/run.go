package main

import (
	"fmt"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/urfave/cli/v2"
)

// exitStillRunning is run's exit code for a run that outlived --timeout.
const exitStillRunning = 2

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "Run a scheduled function now, once, and wait for it",
		ArgsUsage: "APP FUNCTION",
		UsageText: "caravan run APP FUNCTION [--timeout 10m]",
		Description: `Launches one run of a scheduled function of the app's live version, outside
its schedule, and waits for it to finish.

Exit codes: 0 the run succeeded, 1 it failed (or could not be launched),
2 it was still running when --timeout ended: the run goes on in Nomad, and
` + "`nomad job status JOB`" + ` follows it.`,
		Flags: append(appRefFlags(),
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "how long to wait for the run"}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return cli.Exit("run takes an app and a function, e.g. caravan run hello nightly", 1)
			}
			body := api.RunBody{ChangeBody: changeBody(c), Function: c.Args().Get(1)}
			res, err := client(c).Run(c.Context, c.Args().First(), body)
			if err != nil {
				return cli.Exit("run failed: "+err.Error(), 1)
			}
			took := ""
			if !res.FinishedAt.IsZero() && !res.StartedAt.IsZero() {
				took = " in " + res.FinishedAt.Sub(res.StartedAt).Round(time.Millisecond).String()
			}
			switch res.Status {
			case "succeeded":
				fmt.Fprintf(c.App.Writer, "✓ %s ran%s (job %s).\n", res.Function, took, res.JobID)
				return nil
			case "failed":
				return cli.Exit(fmt.Sprintf("✗ %s failed with exit code %d%s (job %s; `nomad job status %s` has more)",
					res.Function, res.ExitCode, took, res.JobID, res.JobID), 1)
			}
			// The server stops waiting when the timeout ends, not the run: a
			// script must not take a run that may yet fail for a success.
			return cli.Exit(fmt.Sprintf("… %s is still running after --timeout %s (job %s): the run goes on in Nomad; "+
				"`nomad job status %s` follows it, and `caravan app list` shows how it ended",
				res.Function, c.Duration("timeout"), res.JobID, res.JobID), exitStillRunning)
		},
	}
}
