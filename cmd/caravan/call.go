package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/caravanhq/caravan/orchestrator"
	"github.com/urfave/cli/v2"
)

func callCommand() *cli.Command {
	return &cli.Command{
		Name:      "call",
		Usage:     "Run a callable function once with an input and print what it returns",
		ArgsUsage: "APP FUNCTION",
		UsageText: "caravan call APP FUNCTION [--data JSON|@FILE|-] [--timeout 5m]",
		Description: `Runs a function with callable = true of the app's live version once, with the
input given by --data (a JSON document: inline, @FILE to read a file, or - to read
standard input; none sends null), and waits for it. The function's stdout is
printed on stdout, its stderr on stderr.

The input is at most 16 KiB (Nomad's dispatch payload limit): a larger one is
refused before anything runs; pass a URL or a file path instead.

Exit codes: the function's own; 1 when the call could not be made.`,
		Flags: append(appRefFlags(),
			&cli.StringFlag{Name: "data", Aliases: []string{"d"}, Usage: "the input: `JSON`, @FILE, or - for standard input"},
			&cli.DurationFlag{Name: "timeout", Value: orchestrator.DefaultCallTimeout, Usage: "how long to wait for the result"}),
		Action: func(c *cli.Context) error {
			if c.NArg() > 2 {
				return cli.Exit(fmt.Sprintf("call takes 2 arguments; %q is one too many", c.Args().Get(2)), 1)
			}
			if c.NArg() < 2 {
				return cli.Exit(`call takes an app and a function, e.g. caravan call calc sum --data '{"numbers": [1, 2]}'`, 1)
			}
			input, err := callInput(c)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			res, err := client(c).Call(c.Context, c.Args().First(), c.Args().Get(1), changeBody(c), input, c.Duration("timeout"))
			if err != nil {
				return cli.Exit("call failed: "+err.Error(), 1)
			}
			if _, err := io.WriteString(c.App.Writer, res.Output); err != nil {
				return err
			}
			io.WriteString(c.App.ErrWriter, res.Stderr)
			for _, cut := range []struct {
				stream string
				cut    bool
			}{{"stdout", res.OutputTruncated}, {"stderr", res.StderrTruncated}} {
				if cut.cut {
					fmt.Fprintf(c.App.ErrWriter, "caravan: the function's %s was cut at %d MiB (job %s has it all: `nomad alloc logs %s`)\n",
						cut.stream, orchestrator.OutputLimit>>20, res.JobID, res.AllocID)
				}
			}
			switch {
			case res.Error != "":
				return cli.Exit(fmt.Sprintf("call of %s failed: %s (job %s)", res.Function, res.Error, res.JobID), 1)
			case res.ExitCode != 0:
				return cli.Exit("", res.ExitCode)
			}
			return nil
		},
	}
}

// callInput reads --data: inline JSON, @FILE, or - for standard input.
func callInput(c *cli.Context) ([]byte, error) {
	data := c.String("data")
	switch {
	case data == "-":
		b, err := io.ReadAll(c.App.Reader)
		if err != nil {
			return nil, fmt.Errorf("reading the input from standard input: %w", err)
		}
		return b, nil
	case strings.HasPrefix(data, "@"):
		b, err := os.ReadFile(data[1:])
		if err != nil {
			return nil, fmt.Errorf("reading the input: %w", err)
		}
		return b, nil
	}
	return []byte(data), nil
}
