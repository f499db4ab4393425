package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caravanhq/caravan/server"
	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"
)

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "Run caravan server, the HTTP API the CLI talks to",
		Description: `Serves the deploy API in front of Nomad and Consul until interrupted.
Requests need a bearer token (stored hashed in Consul KV; 'caravan dev up' makes one).`,
		Flags: append(routerFlags(),
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7474", Usage: "`ADDR` to serve the API on"},
			&cli.StringFlag{Name: "nomad-addr", Value: "http://127.0.0.1:4646", EnvVars: []string{"NOMAD_ADDR"}},
			&cli.StringFlag{Name: "consul-addr", Value: "127.0.0.1:8500", EnvVars: []string{"CONSUL_HTTP_ADDR"}},
			&cli.StringFlag{Name: "proxy-addr", Usage: "Traefik's HTTPS `ADDR`; deploys wait until web functions answer there"},
			&cli.StringFlag{Name: "root-ca", Usage: "PEM `FILE` that verifies the proxy's certificates"},
			&cli.StringFlag{Name: "traefik-api", Usage: "`URL` of Traefik's API; traffic splits count as applied when Traefik serves them (default: wait a fixed 1.5s)"},
			&cli.StringFlag{Name: "dns-resolver", Usage: "DNS server `ADDR` (host:port) that answers the TXT lookups proving control of custom domains (default: the system's resolver)"},
			&cli.StringFlag{Name: "log-level", Value: "info"},
		),
		Action: func(c *cli.Context) error {
			log := hclog.New(&hclog.LoggerOptions{Name: "caravan", Level: hclog.LevelFromString(c.String("log-level")), Output: c.App.ErrWriter})
			rc := routerConfig(c)
			s, err := server.New(server.Config{
				Listen: c.String("listen"), NomadAddr: c.String("nomad-addr"), ConsulAddr: c.String("consul-addr"),
				Router: rc, ProxyAddr: c.String("proxy-addr"), RootCAFile: c.String("root-ca"), TraefikAPI: c.String("traefik-api"),
				DNSResolver: c.String("dns-resolver"), Logger: log,
			})
			if err != nil {
				return err
			}
			if err := s.Start(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return s.Shutdown(sctx)
		},
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
