package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/server"
	"github.com/urfave/cli/v2"
)

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "Create, list and revoke API tokens (and, with --endpoint, endpoint keys)",
		Description: `An API token ("cvn_<id>_<secret>") is the API's bearer token (CARAVAN_TOKEN);
its name is the "who" in app history. It opens no web endpoint: endpoints with
requires_proxy_auth = true take an endpoint key (caravan key create, or
token create --endpoint). Secrets are shown once, when the token is created,
and stored only hashed.`,
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				UsageText: "caravan token create --name N [--endpoint]",
				Usage:     "Create an API token and print its secret (once)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Required: true, Usage: "who or what uses the token (recorded in app history)"},
					&cli.StringFlag{Name: "workspace", Usage: "the token's workspace (default: yours)"},
					&cli.BoolFlag{Name: "endpoint", Usage: "make an endpoint key instead, as caravan key create does"},
				},
				Action: func(c *cli.Context) error {
					if c.Bool("endpoint") {
						return createKey(c)
					}
					nt, err := client(c).CreateToken(c.Context, c.String("name"), c.String("workspace"))
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					w := c.App.Writer
					fmt.Fprintf(w, "✓ Created API token %q (id %s) for workspace %s. The secret is shown only now.\n\n", nt.Name, nt.ID, nt.Workspace)
					fmt.Fprintf(w, "For the CLI and API:\n  export CARAVAN_TOKEN=%s\n", nt.Token)
					return nil
				},
			},
			listCommand("token", "List the tokens and endpoint keys of your workspace (never their secrets)", ""),
			revokeCommand("token"),
			bootstrapCommand(),
		},
	}
}

// bootstrapCommand makes a cluster's first API token: straight in Consul
// KV, where caravan server keeps its tokens (hashed), so it needs Consul
// access with write on caravan/ and no caravan token.
func bootstrapCommand() *cli.Command {
	return &cli.Command{
		Name:      "bootstrap",
		UsageText: "caravan token bootstrap --name N [--workspace W]",
		Usage:     "Make a cluster's first API token in Consul (an operator's step; needs Consul access, not a caravan token)",
		Description: `caravan server keeps its tokens, hashed, in Consul KV under caravan/tokens/.
The first token of a cluster cannot come from the API (every call needs one), so
an operator with Consul access (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ... or the
--consul-* flags) makes it here. --workspace "*" (the default) makes an operator's
token of every workspace; name one to make a tenant's first token.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "name", Required: true, Usage: "who or what uses the token (recorded in app history)"},
			&cli.StringFlag{Name: "workspace", Value: "*", Usage: "the token's `WORKSPACE` (\"*\": every workspace)"},
		}, consulFlags()...),
		Action: func(c *cli.Context) error {
			cc, err := consulConfig(c).Client()
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			nt, err := (&server.Tokens{KV: server.ConsulKV{KV: cc.KV()}}).CreateToken(c.Context, api.TokenAPI, c.String("name"), c.String("workspace"), api.Caller{Name: "bootstrap", Workspace: "*"})
			if err != nil {
				return cli.Exit(fmt.Sprintf("making the token in Consul: %v", err), 1)
			}
			w := c.App.Writer
			fmt.Fprintf(w, "✓ Created API token %q (id %s) for workspace %s. The secret is shown only now.\n\n", nt.Name, nt.ID, nt.Workspace)
			fmt.Fprintf(w, "For the CLI and API:\n  export CARAVAN_TOKEN=%s\n", nt.Token)
			return nil
		},
	}
}

func keyCommand() *cli.Command {
	return &cli.Command{
		Name:  "key",
		Usage: "Create, list and revoke endpoint keys for requires_proxy_auth endpoints",
		Description: `An endpoint key is an ID and a secret that callers send as the Caravan-Key
and Caravan-Secret headers to web endpoints with requires_proxy_auth = true of
its one workspace. It opens nothing else: not the API, not another workspace's
endpoints. Traefik removes both headers before any function sees the request.
Secrets are shown once, when the key is created, and stored only hashed.`,
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				UsageText: "caravan key create --name N [--workspace W]",
				Usage:     "Create an endpoint key and print its secret (once)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Required: true, Usage: "who or what calls with the key"},
					&cli.StringFlag{Name: "workspace", Usage: "the key's workspace (default: yours; a token of every workspace must name one)"},
				},
				Action: createKey,
			},
			listCommand("key", "List the endpoint keys of your workspace (never their secrets)", api.TokenEndpoint),
			revokeCommand("key"),
		},
	}
}

func createKey(c *cli.Context) error {
	nt, err := client(c).CreateEndpointKey(c.Context, c.String("name"), c.String("workspace"))
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "✓ Created endpoint key %q (id %s) for workspace %s. The secret is shown only now.\n\n", nt.Name, nt.ID, nt.Workspace)
	fmt.Fprintf(w, "For endpoints of workspace %s with requires_proxy_auth:\n  curl -H 'Caravan-Key: %s' -H 'Caravan-Secret: %s' https://...\n", nt.Workspace, nt.ID, nt.Secret)
	return nil
}

// listCommand lists credentials, only those of kind when it is set; what
// is the command it is under.
func listCommand(what, usage string, kind api.TokenKind) *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     usage,
		UsageText: "caravan " + what + " list [--all]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "all", Usage: "the revoked ones too: their records stay, so the IDs in app history still name someone"},
		},
		Action: func(c *cli.Context) error {
			list := client(c).Tokens
			if c.Bool("all") {
				list = client(c).AllTokens
			}
			all, err := list(c.Context)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			shown := []api.TokenInfo{}
			for _, t := range all {
				if kind == "" || t.Kind == kind {
					shown = append(shown, t)
				}
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, shown)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tNAME\tWORKSPACE\tCREATED\tBY\tREVOKED")
			for _, t := range shown {
				revoked := "-"
				if !t.RevokedAt.IsZero() {
					revoked = t.RevokedAt.Local().Format(time.DateTime) + " by " + who(t.RevokedBy, t.RevokedByID)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Kind, t.Name, t.Workspace,
					t.CreatedAt.Local().Format(time.DateTime), who(t.CreatedBy, t.CreatedByID), revoked)
			}
			return tw.Flush()
		},
	}
}

func revokeCommand(what string) *cli.Command {
	return &cli.Command{
		Name:      "revoke",
		Usage:     "Revoke a " + what + ": it stops working at once",
		ArgsUsage: "ID",
		UsageText: "caravan " + what + " revoke ID",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit(fmt.Sprintf("revoke takes a %s ID (caravan %s list shows them)", what, what), 1)
			}
			if err := client(c).RevokeToken(c.Context, c.Args().First()); err != nil {
				return cli.Exit(err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "✓ Revoked %s %s. Its record stays, marked revoked (caravan %s list --all).\n", what, c.Args().First(), what)
			return nil
		},
	}
}
