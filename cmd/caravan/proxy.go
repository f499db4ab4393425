package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caravanhq/caravan/proxy"
	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"
)

func proxyCommand() *cli.Command {
	return &cli.Command{
		Name:      "proxy",
		Usage:     "Run caravan proxy, the data plane between Traefik and autoscaled functions",
		UsageText: "caravan proxy [--listen ADDR] [--admin-listen ADDR]",
		Description: `Proxies each request to the least-loaded container of its function, never past the
function's max_inputs, and queues requests while none has room (503 when the queue is
full, 504 past its timeout). Containers come from Consul (passing instances of the
function's service); the function is named by the Caravan-Function header, else the
first label of Host under --domain.

The admin address serves GET /v1/load (each function's requests in flight and queued,
for the autoscaler), POST and DELETE /v1/drain, /metrics (Prometheus) and /healthz.
Keep it off the network callers reach.`,
		Flags: append(consulFlags(),
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7480", Usage: "`ADDR` of the data plane, where Traefik sends requests"},
			&cli.StringFlag{Name: "admin-listen", Value: "127.0.0.1:7481", Usage: "`ADDR` of the load report, drains, metrics and health"},
			&cli.StringFlag{Name: "domain", Usage: "parent `DOMAIN` of the hostnames routed by Host (default: any host's first label)"},
			&cli.BoolFlag{Name: "register", Usage: "register in the local Consul agent as service " + proxy.ServiceName + ", health-checked on the admin address (on Nomad, the job's service block does this instead)"},
			&cli.StringFlag{Name: "log-level", Value: "info"},
		),
		Action: func(c *cli.Context) error {
			log := hclog.New(&hclog.LoggerOptions{Name: "caravan-proxy", Level: hclog.LevelFromString(c.String("log-level")), Output: c.App.ErrWriter})
			ccfg := consulConfig(c)
			cc, err := ccfg.Client()
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			log.Info("consul", ccfg.Describe()...)
			s := proxy.NewServer(proxy.ServerConfig{
				Listen: c.String("listen"), AdminListen: c.String("admin-listen"),
				Proxy: proxy.Config{Discovery: &proxy.Consul{Client: cc}, Domain: c.String("domain"), Logger: log},
			})
			if err := s.Start(); err != nil {
				return err
			}
			log.Info("serving", "listen", s.Addr(), "admin", s.AdminAddr())
			if c.Bool("register") {
				if _, err := proxy.Register(c.Context, cc, s.Addr(), s.AdminAddr()); err != nil {
					sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					return errors.Join(err, s.Shutdown(sctx))
				}
				log.Info("registered in Consul", "service", proxy.ServiceName)
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			select {
			case <-ctx.Done():
			case err := <-s.Err():
				log.Error("listener failed", "error", err)
			}
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if c.Bool("register") {
				// Out of Traefik's service before the listeners close.
				if err := proxy.Deregister(cc, s.Addr()); err != nil {
					log.Warn("deregistering from Consul", "error", err)
				}
			}
			return s.Shutdown(sctx)
		},
	}
}
