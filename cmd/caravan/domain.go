package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/urfave/cli/v2"
)

func domainCommand() *cli.Command {
	workspace := &cli.StringFlag{Name: "workspace", Usage: "the workspace the domain is for (default: your token's)"}
	show := func(c *cli.Context, verb string, b *api.DomainBinding) {
		fmt.Fprintf(c.App.Writer, "✓ %s %s for workspace %s: its apps may serve it and every name under it.\n", verb, b.Domain, b.Workspace)
	}
	return &cli.Command{
		Name:  "domain",
		Usage: "Prove control of custom domains, assign them to workspaces, list them",
		Description: `An app serves a custom domain only once the domain is bound to its workspace:
the workspace proved it controls it with a DNS TXT record
_caravan-challenge.<domain> (for *.example.com: _caravan-challenge.example.com)
carrying the workspace's value, or an operator assigned it. A deploy checks the
record itself the first time; 'verify' checks it beforehand, and when the record
is missing says which one to create and its value. A binding of example.com
covers every name under it. Exit codes: 0 bound, 1 not (or an error).`,
		Subcommands: []*cli.Command{
			{
				Name:      "verify",
				UsageText: "caravan domain verify DOMAIN",
				Usage:     "Check the TXT record of a domain and bind it to your workspace",
				ArgsUsage: "DOMAIN",
				Flags:     []cli.Flag{workspace},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cli.Exit("verify takes a domain: caravan domain verify api.example.com", 1)
					}
					b, err := client(c).VerifyDomain(c.Context, c.Args().First(), c.String("workspace"))
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					show(c, "Verified", b)
					return nil
				},
			},
			{
				Name:      "assign",
				UsageText: "caravan domain assign --workspace W DOMAIN",
				Usage:     "Bind a domain to a workspace without a DNS check (an operator's token, workspace \"*\")",
				ArgsUsage: "DOMAIN",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "workspace", Required: true, Usage: "the workspace the domain is for"}},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cli.Exit("assign takes a domain: caravan domain assign --workspace shop example.com", 1)
					}
					b, err := client(c).AssignDomain(c.Context, c.Args().First(), c.String("workspace"))
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					show(c, "Assigned", b)
					return nil
				},
			},
			{
				Name:      "list",
				UsageText: "caravan domain list",
				Usage:     "List the domains bound to your workspace (every workspace's for an operator)",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: func(c *cli.Context) error {
					list, err := client(c).Domains(c.Context)
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					if c.Bool("json") {
						return writeJSON(c.App.Writer, list)
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "DOMAIN\tWORKSPACE\tHOW\tWHEN\tBY")
					for _, b := range list {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Domain, b.Workspace, b.Method, b.At.Local().Format(time.DateTime), b.By)
					}
					return tw.Flush()
				},
			},
		},
	}
}
