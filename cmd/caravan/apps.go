package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

func appCommand() *cli.Command {
	return &cli.Command{
		Name:  "app",
		Usage: "Inspect deployed apps",
		Subcommands: []*cli.Command{{
			Name:  "list",
			Usage: "List the apps in your workspace with their state, version and URLs",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
			Action: func(c *cli.Context) error {
				apps, err := client(c).Apps(c.Context)
				if err != nil {
					return cli.Exit(err.Error(), 1)
				}
				if c.Bool("json") {
					return writeJSON(c.App.Writer, apps)
				}
				if len(apps) == 0 {
					fmt.Fprintln(c.App.Writer, "No apps deployed. Deploy one with: caravan deploy app.hcl")
					return nil
				}
				tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "WORKSPACE\tAPP\tSTATE\tVERSION\tDEPLOYED\tFUNCTIONS")
				for _, a := range apps {
					var fns []string
					for _, f := range a.Functions {
						s := fmt.Sprintf("%s (%d running)", f.Name, f.Running)
						if f.URL != "" {
							s += " " + f.URL
						}
						fns = append(fns, s)
					}
					ws := a.Workspace
					if a.Environment != "" {
						ws += "/" + a.Environment
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", ws, a.App, a.State, a.Version,
						a.DeployedAt.Local().Format(time.DateTime), strings.Join(fns, ", "))
				}
				return tw.Flush()
			},
		}},
	}
}
