package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/urfave/cli/v2"
)

func mapCommand() *cli.Command {
	return &cli.Command{
		Name:      "map",
		Usage:     "Call a warm function once per input and print the results in input order",
		ArgsUsage: "APP FUNCTION",
		UsageText: "caravan map APP FUNCTION --inputs FILE.jsonl [--timeout 5m]",
		Description: `Reads --inputs, one JSON document a line (- for standard input), queues a call
of the function for each, and prints each result as a JSON line as it comes, in
input order: {"index": N, "exit_code": ..., "output": ..., "stderr": ...}.
Every input is checked before anything is queued. Exit code 1 when the map could
not be made or ended early, else 0 (each result carries its own exit code).`,
		Flags: append(appRefFlags(),
			&cli.StringFlag{Name: "inputs", Required: true, Usage: "`FILE` of JSON lines, one input each (- for standard input)"},
			&cli.DurationFlag{Name: "timeout", Value: orchestrator.DefaultCallTimeout, Usage: "how long to wait for every result"}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return cli.Exit(`map takes an app and a function, e.g. caravan map calc sum --inputs inputs.jsonl`, 1)
			}
			in := c.App.Reader
			if p := c.String("inputs"); p != "-" {
				f, err := os.Open(p)
				if err != nil {
					return cli.Exit("--inputs: "+err.Error(), 1)
				}
				defer f.Close()
				in = f
			}
			enc := json.NewEncoder(c.App.Writer)
			err := client(c).Map(c.Context, c.Args().First(), c.Args().Get(1), changeBody(c), in, c.Duration("timeout"),
				func(item api.MapItem) error { return enc.Encode(item) })
			if err != nil {
				return cli.Exit(fmt.Sprintf("map failed: %v", err), 1)
			}
			return nil
		},
	}
}
