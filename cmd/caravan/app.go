package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/devstack"
	"github.com/caravanhq/caravan/internal/taskcmd"
	"github.com/urfave/cli/v2"
)

// newApp builds the CLI; tests run it with buffers.
func newApp(stdout, stderr io.Writer) cliApp {
	return cliApp{&cli.App{
		Name:  "caravan",
		Usage: "Modal-style deployments and web endpoints on your own Nomad cluster",
		Description: `caravan turns an HCL app spec into one Nomad job, registers its web
functions in Consul and serves them through Traefik over HTTPS at
https://<workspace>--<app>-<function>.<domain>.

Start a local stack with 'caravan dev up', then 'caravan deploy app.hcl'.`,
		Writer:         stdout,
		ErrWriter:      stderr,
		ExitErrHandler: func(*cli.Context, error) {},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", EnvVars: []string{"CARAVAN_ADDR"},
				Usage: "caravan server `URL` (default: the local stack's, else http://127.0.0.1:7474)"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"CARAVAN_TOKEN"},
				Usage: "API token (default: the local stack's token file)"},
			&cli.StringFlag{Name: "state-dir", EnvVars: []string{"CARAVAN_STATE_DIR"}, Value: devstack.DefaultStateDir(),
				Usage: "local stack state `DIR`"},
		},
		Commands: []*cli.Command{
			validateCommand(),
			renderCommand(),
			deployCommand(),
			serveCommand(),
			planCommand(),
			runCommand(),
			callCommand(),
			mapCommand(),
			appCommand(),
			tokenCommand(),
			domainCommand(),
			keyCommand(),
			serverCommand(),
			proxyCommand(),
			taskcmd.Task(),
			devCommand(),
			taskcmd.Worker(),
		},
	}}
}

// client returns an API client for the server the flags point at.
func client(c *cli.Context) *api.Client {
	addr, token := c.String("addr"), c.String("token")
	state := c.String("state-dir")
	if addr == "" {
		addr = "http://127.0.0.1:7474"
		if s, err := devstack.Load(state); err == nil {
			addr = s.CaravanAddr()
		}
	}
	if token == "" {
		if b, err := os.ReadFile(filepath.Join(state, "token")); err == nil {
			token = strings.TrimSpace(string(b))
		}
	}
	return &api.Client{Addr: addr, Token: token}
}
