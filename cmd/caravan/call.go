package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/caravanhq/caravan/api"

	"github.com/caravanhq/caravan/orchestrator"
	"github.com/urfave/cli/v2"
)

func callCommand() *cli.Command {
	return &cli.Command{
		Name:      "call",
		Usage:     "Run a callable function once with an input and print what it returns",
		ArgsUsage: "APP FUNCTION",
		UsageText: "caravan call APP FUNCTION [--data JSON|@FILE|-] [--timeout 5m] [--spawn]",
		Description: `Runs a function with callable = true of the app's live version once, with the
input given by --data (a JSON document: inline, @FILE to read a file, or - to read
standard input; none sends null), and waits for it. The function's stdout is
printed on stdout, its stderr on stderr. A warm function's workers answer in
milliseconds; an isolated one (isolated = true) starts a container per call.

--spawn queues the call and prints its ID at once; 'caravan call get ID' prints
its result when it has one (--wait waits for it), for 7 days; 'caravan call
cancel ID' stops it.

The input is at most 16 MiB (16 KiB for an isolated function, Nomad's dispatch
payload limit): a larger one is refused before anything runs.

Exit codes: the function's own; 1 when the call could not be made.`,
		Subcommands: []*cli.Command{callGetCommand(), callCancelCommand()},
		Flags: append(appRefFlags(),
			&cli.StringFlag{Name: "data", Aliases: []string{"d"}, Usage: "the input: `JSON`, @FILE, or - for standard input"},
			&cli.DurationFlag{Name: "timeout", Value: orchestrator.DefaultCallTimeout, Usage: "how long to wait for the result"},
			&cli.BoolFlag{Name: "spawn", Usage: "queue the call and print its ID without waiting"}),
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
			if c.Bool("spawn") {
				st, err := client(c).Spawn(c.Context, c.Args().First(), c.Args().Get(1), changeBody(c), input)
				if err != nil {
					return cli.Exit("spawn failed: "+err.Error(), 1)
				}
				_, err = fmt.Fprintln(c.App.Writer, st.ID)
				return err
			}
			res, err := client(c).Call(c.Context, c.Args().First(), c.Args().Get(1), changeBody(c), input, c.Duration("timeout"))
			if err != nil {
				return cli.Exit("call failed: "+err.Error(), 1)
			}
			return printResult(c, res)
		},
	}
}

// printResult prints a call's output and stderr and exits with its code.
func printResult(c *cli.Context, res *api.CallResult) error {
	if _, err := io.WriteString(c.App.Writer, res.Output); err != nil {
		return err
	}
	io.WriteString(c.App.ErrWriter, res.Stderr)
	for _, cut := range []struct {
		stream string
		cut    bool
	}{{"stdout", res.OutputTruncated}, {"stderr", res.StderrTruncated}} {
		if cut.cut && res.JobID != "" {
			fmt.Fprintf(c.App.ErrWriter, "caravan: the function's %s was cut at %d MiB (job %s has it all: `nomad alloc logs %s`)\n",
				cut.stream, orchestrator.OutputLimit>>20, res.JobID, res.AllocID)
		} else if cut.cut {
			fmt.Fprintf(c.App.ErrWriter, "caravan: the function's %s was cut at %d MiB\n", cut.stream, orchestrator.OutputLimit>>20)
		}
	}
	which := "job " + res.JobID
	if res.CallID != "" {
		which = "call " + res.CallID
	}
	switch {
	case res.Error != "":
		return cli.Exit(fmt.Sprintf("call of %s failed: %s (%s)", res.Function, res.Error, which), 1)
	case res.ExitCode != 0:
		return cli.Exit("", res.ExitCode)
	}
	return nil
}

func callGetCommand() *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "Print the result of a spawned call",
		ArgsUsage: "ID",
		UsageText: "caravan call get ID [--wait 5m] [--json]",
		Description: `Prints a spawned call's output and exits with its exit code, as 'caravan call'
does, once it has one; before that it says the call is queued and exits 3
(--wait waits up to that long for the result first). Results are kept 7 days;
after that the call is "expired". --json prints the call's record.`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "wait", Usage: "wait up to `DURATION` for the result"},
			&cli.BoolFlag{Name: "json", Usage: "print the call's record as JSON"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("call get takes a call ID, as `caravan call --spawn` printed it", 1)
			}
			st, err := client(c).CallGet(c.Context, c.Args().First(), c.Duration("wait"))
			if err != nil {
				return cli.Exit("call get failed: "+err.Error(), 1)
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, st)
			}
			if st.Result == nil {
				return cli.Exit(fmt.Sprintf("call %s is %s (since %s): no result yet; --wait waits for one", st.ID, st.State, st.Created.Format(time.RFC3339)), 3)
			}
			return printResult(c, st.Result)
		},
	}
}

func callCancelCommand() *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "Cancel a spawned call",
		ArgsUsage: "ID",
		UsageText: "caravan call cancel ID",
		Description: `A queued call never runs; a running one's process is stopped (SIGTERM, then
SIGKILL after 5s). A finished call stays as it was. Prints the call's state after.`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("call cancel takes a call ID", 1)
			}
			st, err := client(c).CallCancel(c.Context, c.Args().First())
			if err != nil {
				return cli.Exit("call cancel failed: "+err.Error(), 1)
			}
			_, err = fmt.Fprintf(c.App.Writer, "call %s: %s\n", st.ID, st.State)
			return err
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
