package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "Create, list and revoke tokens for the API and for requires_proxy_auth endpoints",
		Description: `A token is an ID and a secret. Whole ("cvn_<id>_<secret>") it is the API's
bearer token (CARAVAN_TOKEN); as Caravan-Key: <id> and Caravan-Secret: <secret>
headers it opens web endpoints with requires_proxy_auth = true in its workspace.
Secrets are shown once, when the token is created, and stored only hashed.`,
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "Create a token and print its secret (once)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Required: true, Usage: "who or what uses the token (recorded in app history)"},
					&cli.StringFlag{Name: "workspace", Usage: "the token's workspace (default: yours)"},
				},
				Action: func(c *cli.Context) error {
					nt, err := client(c).CreateToken(c.Context, c.String("name"), c.String("workspace"))
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					w := c.App.Writer
					fmt.Fprintf(w, "✓ Created token %q (id %s) for workspace %s. The secret is shown only now.\n\n", nt.Name, nt.ID, nt.Workspace)
					fmt.Fprintf(w, "For the CLI and API:\n  export CARAVAN_TOKEN=%s\n\n", nt.Token)
					fmt.Fprintf(w, "For endpoints with requires_proxy_auth:\n  curl -H 'Caravan-Key: %s' -H 'Caravan-Secret: %s' https://...\n", nt.ID, nt.Secret)
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "List the tokens of your workspace (never their secrets)",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: func(c *cli.Context) error {
					list, err := client(c).Tokens(c.Context)
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					if c.Bool("json") {
						return writeJSON(c.App.Writer, list)
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tNAME\tWORKSPACE\tCREATED\tBY")
					for _, t := range list {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Workspace, t.CreatedAt.Local().Format(time.DateTime), t.CreatedBy)
					}
					return tw.Flush()
				},
			},
			{
				Name:      "revoke",
				Usage:     "Revoke a token: it stops working at once",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cli.Exit("revoke takes a token ID (caravan token list shows them)", 1)
					}
					if err := client(c).RevokeToken(c.Context, c.Args().First()); err != nil {
						return cli.Exit(err.Error(), 1)
					}
					fmt.Fprintf(c.App.Writer, "✓ Revoked token %s.\n", c.Args().First())
					return nil
				},
			},
		},
	}
}
