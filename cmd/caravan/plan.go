package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/urfave/cli/v2"
)

func planCommand() *cli.Command {
	return &cli.Command{
		Name:      "plan",
		Usage:     "Show what a deploy would change, changing nothing",
		ArgsUsage: "FILE",
		UsageText: "caravan plan FILE",
		Description: `Asks Nomad's scheduler what deploying the spec would do to each function's
containers (placement failures included, such as a GPU no node has), and lists
the job's changes, the hostnames the app would start or stop serving, and the
certificates it would need.

Exit codes: 0 no changes, 2 changes (the deploy would succeed in placing them),
1 error: an invalid spec, or a deploy that would fail (a function that cannot be
placed, a hostname another app serves).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "strategy", Usage: "plan with this rollout strategy: rolling, recreate, canary or blue-green"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			path, src, b, err := specArg(c, "plan")
			if err != nil {
				return err
			}
			res, err := client(c).Plan(c.Context, api.DeployBody{Filename: path, Spec: string(src), Strategy: c.String("strategy"), Bundles: b.ids})
			if err != nil {
				return serverFailure(c, "plan", err, path, src)
			}
			if c.Bool("json") {
				if err := writeJSON(c.App.Writer, res); err != nil {
					return err
				}
			} else {
				printPlan(c.App.Writer, res)
			}
			switch {
			case len(res.Problems) > 0:
				return cli.Exit("", 1)
			case res.Changed:
				return cli.Exit("", 2)
			}
			return nil
		},
	}
}

func printPlan(w io.Writer, p *orchestrator.PlanResult) {
	if !p.Changed {
		fmt.Fprintf(w, "No changes: app %s (workspace %s) is at version %d.\n", p.App, p.Workspace, p.LiveVersion)
		return
	}
	if p.LiveVersion > 0 {
		fmt.Fprintf(w, "A deploy would make version %d of app %s (workspace %s), replacing version %d:\n", p.Version, p.App, p.Workspace, p.LiveVersion)
	} else {
		fmt.Fprintf(w, "A deploy would make version %d of app %s (workspace %s):\n", p.Version, p.App, p.Workspace)
	}
	for _, f := range p.Functions {
		line := fmt.Sprintf("  %s %s", f.Change, f.Name)
		if f.CodeChanged {
			line += " (new code)"
		}
		var acts []string
		for _, a := range []struct {
			n    uint64
			what string
		}{{f.Place, "to place"}, {f.Destructive, "to replace"}, {f.InPlace, "to update in place"}, {f.Canary, "canaries"}, {f.Stop, "to stop"}} {
			if a.n > 0 {
				acts = append(acts, fmt.Sprintf("%d %s", a.n, a.what))
			}
		}
		if len(acts) > 0 {
			line += fmt.Sprintf(" (%s)", joinComma(acts))
		}
		fmt.Fprintln(w, line)
	}
	if len(p.Diff) > 0 {
		fmt.Fprintln(w, "\nJob changes:")
		for _, d := range p.Diff {
			fmt.Fprintln(w, "  "+d)
		}
	}
	for _, h := range p.HostsAdded {
		fmt.Fprintf(w, "\n+ hostname %s", h)
	}
	for _, h := range p.HostsRemoved {
		fmt.Fprintf(w, "\n- hostname %s", h)
	}
	if len(p.HostsAdded)+len(p.HostsRemoved) > 0 {
		fmt.Fprintln(w)
	}
	if len(p.Certificates) > 0 {
		fmt.Fprintf(w, "\nNew certificates from the ACME CA: %s\n", joinComma(p.Certificates))
	}
	for _, pr := range p.Problems {
		fmt.Fprintf(w, "\n✗ %s", pr)
	}
	if len(p.Problems) > 0 {
		fmt.Fprintln(w, "\n\nA deploy would fail; the running version would keep serving.")
	}
}

func joinComma(s []string) string { return strings.Join(s, ", ") }
