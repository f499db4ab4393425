package main

import (
	"net"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	api "github.com/hashicorp/nomad/api"
	"github.com/urfave/cli/v2"
)

func routerFlags() []cli.Flag {
	d := router.DefaultConfig
	return []cli.Flag{
		&cli.StringFlag{Name: "domain", Value: d.Domain, EnvVars: []string{"CARAVAN_DOMAIN"}, Usage: "parent `DOMAIN` of generated hostnames"},
		&cli.StringFlag{Name: "entrypoint", Value: d.EntryPoint, Usage: "Traefik HTTPS entry point"},
		&cli.StringFlag{Name: "cert-resolver", Value: d.CertResolver, Usage: "Traefik ACME certificate resolver"},
		&cli.StringFlag{Name: "dns-cert-resolver", Value: d.DNSCertResolver, Usage: "Traefik ACME resolver with a DNS-01 challenge, for wildcard domains"},
		&cli.StringFlag{Name: "body-limit-plugin", Value: d.BodyLimitPlugin, Usage: "alias of caravan's body-limit plugin in Traefik (\"\": no body limits)"},
		&cli.StringFlag{Name: "traefik-kv-root", Value: d.KVRoot, Usage: "root key of Traefik's Consul KV provider, where canary and blue-green traffic splits go"},
		&cli.DurationFlag{Name: "drain-delay", Value: router.DefaultDrainDelay, Usage: "how long a web container keeps serving after it " +
			"leaves Consul before Nomad stops it (its shutdown_delay): longer than Traefik takes to stop routing to it (Consul's " +
			"propagation plus Traefik's providersThrottleDuration)"},
		&cli.StringFlag{Name: "proxy-service", Value: d.ProxyService, Usage: "Traefik `SERVICE` of caravan's proxies, where autoscaled web functions are routed " +
			"(\"\": every function straight to its containers, at a fixed count)"},
		&cli.StringFlag{Name: "proxy-plugin", Usage: "name of caravan's proxy plugin in Traefik (caravan's Traefik build runs the proxy inside its own process as plugin \"" +
			"caravan\", or its $CARAVAN_PROXY_PLUGIN_NAME): autoscaled web functions' routers end in it, and --proxy-service is not used"},
		&cli.StringFlag{Name: "agent-command", Usage: "`PATH` of the caravan (or caravan-agent) binary on the Nomad clients, which the tasks of autoscaled web functions run " +
			"(the drain supervisor); default: each task fetches caravan server's --agent-binary at its start"},
		&cli.IntFlag{Name: "https-port", Value: 0, EnvVars: []string{"CARAVAN_HTTPS_PORT"}, Usage: "port in generated URLs (0 or 443: none)"},
		&cli.StringFlag{Name: "auth-url", Usage: "`URL` Traefik's forwardAuth calls for requires_proxy_auth endpoints (default: caravan server's " +
			router.ProxyAuthPath + " on its --listen address, " + router.DefaultListen + " for render); with several servers, one address " +
			"that reaches any of them (a load balancer's), the same for all"},
		&cli.StringFlag{Name: "bundle-url", Usage: "base `URL` Nomad's clients fetch code bundles from (default: http:// and caravan server's --listen address, " +
			router.DefaultListen + " for render); with several servers, one address that reaches any of them, the same for all"},
	}
}

// routerConfig is the routes' configuration from the flags routerFlags
// defines, the one place the CLI assembles it: `caravan server` deploys
// with it and `caravan render` renders with it, so with the same flags
// (the defaults alike) `render --routes` prints the routers and
// middlewares, names included, that the server deploys.
func routerConfig(c *cli.Context) router.Config {
	cfg := router.Config{
		Domain:          c.String("domain"),
		EntryPoint:      c.String("entrypoint"),
		CertResolver:    c.String("cert-resolver"),
		DNSCertResolver: c.String("dns-cert-resolver"),
		BodyLimitPlugin: c.String("body-limit-plugin"),
		HTTPSPort:       c.Int("https-port"),
		KVRoot:          c.String("traefik-kv-root"),
		AuthURL:         c.String("auth-url"),
		BundleURL:       c.String("bundle-url"),
		DrainDelay:      c.Duration("drain-delay"),
		ProxyService:    c.String("proxy-service"),
		ProxyPlugin:     c.String("proxy-plugin"),
		AgentCommand:    c.String("agent-command"),
	}
	// render has no --listen: it renders for a server on the default one.
	listen := c.String("listen")
	if listen == "" {
		listen = router.DefaultListen
	}
	// A server on port 0 or on every address (":7474") knows the
	// address to give only once it listens, and then fills it in
	// itself (server.New).
	if host, port, err := net.SplitHostPort(listen); err == nil && host != "" && port != "0" {
		if cfg.AuthURL == "" {
			cfg.AuthURL = router.AuthURL(listen)
		}
		if cfg.BundleURL == "" {
			cfg.BundleURL = router.BundleURL(listen)
		}
	}
	return cfg
}

func renderCommand() *cli.Command {
	return &cli.Command{
		Name:      "render",
		Usage:     "Print the Nomad job (or the Traefik routes) a spec becomes",
		ArgsUsage: "FILE",
		UsageText: "caravan render [--routes] FILE",
		Description: `Prints the Nomad job as JSON in the form 'nomad job run -json' accepts (then,
one document each, the periodic jobs of scheduled functions and the
parameterized jobs of callable ones),
or with --routes the Traefik dynamic configuration caravan serves for the app
(as tags on its Consul services). The output is the same bytes for the same input.

Exit codes: 0 rendered, 1 the spec has errors.`,
		Flags: append(routerFlags(), &cli.BoolFlag{Name: "routes", Usage: "print the Traefik dynamic configuration instead"}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("render takes one spec file", 1)
			}
			path := c.Args().First()
			app, src, diags := spec.LoadFile(path)
			if !diags.HasErrors() {
				// The job a deploy renders: each function with files
				// fetches its bundle (the URL without its signature,
				// which the server adds).
				b, bd := collectBundles(path, app)
				diags = append(diags, bd...)
				for _, fn := range app.Functions {
					fn.Bundle = b.ids[fn.Name]
				}
			}
			if diags.HasErrors() {
				_ = printDiags(c.App.ErrWriter, diags, map[string][]byte{path: src})
				return cli.Exit("", 1)
			}
			r, err := jobs.Render(app, routerConfig(c))
			if err != nil {
				return err
			}
			if c.Bool("routes") {
				out, err := jobs.CleanJSON(router.Merge(r.Routes))
				if err != nil {
					return err
				}
				_, err = c.App.Writer.Write(out)
				return err
			}
			// The app's job, then one document per scheduled function's
			// periodic job and per callable function's parameterized job.
			for _, job := range append(append([]*api.Job{r.Job}, r.Periodic...), r.Callable...) {
				out, err := jobs.JSON(job)
				if err != nil {
					return err
				}
				if _, err := c.App.Writer.Write(out); err != nil {
					return err
				}
			}
			return nil
		},
	}
}
