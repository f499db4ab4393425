package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/devstack"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/proxy/intraefik"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/server"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/hcl/v2"
	"github.com/urfave/cli/v2"
)

func devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "Run a local Nomad + Consul + Traefik + Pebble stack on 127.0.0.1",
		Subcommands: []*cli.Command{
			{
				Name:      "up",
				UsageText: "caravan dev up",
				Usage:     "Build (once) and start the stack, then deploy examples/hello.hcl",
				Description: `Builds pinned Nomad, Consul and Traefik from their Go modules into
~/.cache/caravan/bin the first time (about 20 minutes on 2 cores; never again),
starts them with Pebble as the ACME CA and caravan server, waits until each is
healthy, and deploys an example app. Its server's policy (policy.hcl in the state
directory) lets workspace dev use raw_exec, and every other workspace exec and
docker only.`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "example", Value: "examples/hello.hcl", Usage: "spec to deploy once the stack is up (\"\" for none)"},
					&cli.StringFlag{Name: "domain", Value: "caravan.localhost", Usage: "parent `DOMAIN` of generated hostnames"},
					&cli.BoolFlag{Name: "random-ports", Usage: "use free ports for everything instead of the usual ones (for a second stack)"},
					&cli.StringFlag{Name: "fake-gpus", Usage: "give the Nomad client test GPUs through caravan's fake device plugin, e.g. \"H100:2\""},
					&cli.BoolFlag{Name: "cluster", Usage: "run 3 Consul servers, 3 Nomad servers and 2 Nomad clients with ACLs and TLS, and two caravan servers, instead of one agent of each (README, \"The cluster stack\")"},
					&cli.BoolFlag{Name: "proxy-in-traefik", Usage: "route autoscaled functions through the caravan proxy inside Traefik's process (caravan server --proxy-plugin caravan; the stack's Traefik is caravan's build) instead of the two standalone proxies (README, \"The proxy inside Traefik\")"},
					&cli.IntFlag{Name: "clients", Value: 1, Usage: "how many Nomad clients to run, each with its own data directory (the first is the dev agent's); code reaches them all as bundles"},
				},
				Action: devUp,
			},
			{
				Name:      "install",
				UsageText: "caravan dev install",
				Usage:     "Build pinned Nomad, Consul and Traefik into the cache, and install pebble",
				Description: `Builds each server from its Go module through the wrapper modules in
tools/ into ~/.cache/caravan/bin/<name>-<version> ($CARAVAN_CACHE_DIR/bin),
once per version; a cached version is never rebuilt. Installs Debian's pebble
package when it is missing.`,
				Action: devInstall,
			},
			{
				Name:      "down",
				UsageText: "caravan dev down",
				Usage:     "Stop exactly the processes 'dev up' started",
				Action:    devDown,
			},
			{
				Name:      "status",
				UsageText: "caravan dev status",
				Usage:     "Say what runs where",
				Action:    devStatus,
			},
		},
	}
}

func devUp(c *cli.Context) error {
	out := c.App.ErrWriter
	state := c.String("state-dir")
	wd, _ := os.Getwd()
	tools, err := devstack.FindToolsDir(wd)
	if err != nil {
		return err
	}
	var gpus *devstack.FakeGPUs
	if g := c.String("fake-gpus"); g != "" {
		model, n, _ := strings.Cut(g, ":")
		count, err := strconv.Atoi(n)
		if n == "" {
			count, err = 1, nil
		}
		if err != nil || count < 1 || model == "" {
			return cli.Exit(fmt.Sprintf("--fake-gpus %q: use MODEL or MODEL:COUNT, e.g. H100:2", g), 1)
		}
		gpus = &devstack.FakeGPUs{Model: model, Count: count}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cluster := c.Bool("cluster")
	if cluster && c.IsSet("clients") {
		return cli.Exit("--cluster runs two Nomad clients of its own: drop --clients", 1)
	}
	stack, err := devstack.Up(c.Context, devstack.Options{
		Cluster:     cluster,
		ACLDir:      filepath.Join(filepath.Dir(tools), "deploy", "acl"),
		Caravan:     self,
		FakeGPUs:    gpus,
		StateDir:    state,
		Domain:      c.String("domain"),
		RandomPorts: c.Bool("random-ports"),
		Installer:   &devstack.Installer{ToolsDir: tools, Out: out},
		Out:         out,
	})
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			fmt.Fprintln(out, "==> stopping what was started")
			_ = stack.Down()
		}
	}()
	for i := 2; i <= c.Int("clients"); i++ {
		name := fmt.Sprintf("client-%d", i)
		fmt.Fprintf(out, "==> starting Nomad client %s\n", name)
		if _, err := stack.StartClient(c.Context, name); err != nil {
			return err
		}
	}
	root, err := stack.RootCA(c.Context)
	if err != nil {
		return fmt.Errorf("fetching Pebble's root: %w", err)
	}
	cc, err := stack.ConsulClient(stack.ConsulAddr())
	if err != nil {
		return err
	}
	// The token's name is the "who" of every version deployed with it.
	who := "local"
	if u, err := user.Current(); err == nil && u.Username != "" {
		who = u.Username
	}
	token, err := (&server.Tokens{KV: server.ConsulKV{KV: cc.KV()}}).Create(who, "*")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(state, "token"), []byte(token+"\n"), 0o600); err != nil {
		return err
	}

	policyPath := filepath.Join(state, "policy.hcl")
	if err := os.WriteFile(policyPath, []byte(devPolicy), 0o644); err != nil {
		return err
	}

	cl := &api.Client{Addr: stack.CaravanAddr(), Token: token}
	if err := startServers(c, stack, self, policyPath, token); err != nil {
		return err
	}
	// caravan server asked Traefik for the wildcard certificate when it
	// started; once Traefik serves it, every new hostname verifies from
	// its first request.
	fmt.Fprintf(out, "==> waiting for the certificate %s (DNS-01)\n", stack.WildcardCertificate())
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(root)
	if err := stack.AwaitWildcard(c.Context, roots, 2*time.Minute); err != nil {
		return err
	}

	if ex := c.String("example"); ex != "" {
		path := ex
		if !filepath.IsAbs(path) {
			if _, err := os.Stat(path); err != nil {
				path = filepath.Join(filepath.Dir(tools), ex)
			}
		}
		if path, err = filepath.Abs(path); err != nil {
			return err
		}
		app, src, diags := spec.LoadFile(path)
		var b *bundles
		if !diags.HasErrors() {
			var bd hcl.Diagnostics
			b, bd = collectBundles(path, app)
			diags = append(diags, bd...)
		}
		if diags.HasErrors() {
			_ = printDiags(c.App.ErrWriter, diags, map[string][]byte{path: src})
			return fmt.Errorf("%s cannot be deployed", ex)
		}
		fmt.Fprintf(out, "==> deploying %s\n", ex)
		ctx, cancel := context.WithTimeout(c.Context, 5*time.Minute)
		defer cancel()
		// As `caravan deploy` does: the code travels as bundles.
		if err := b.upload(ctx, cl, out); err != nil {
			return fmt.Errorf("deploying %s: %w", ex, err)
		}
		res, err := cl.DeployBody(ctx, api.DeployBody{Filename: path, Spec: string(src), Bundles: b.ids})
		if err != nil {
			return fmt.Errorf("deploying %s: %w", ex, err)
		}
		printDeploy(c.App.Writer, res)
		for _, f := range res.Functions {
			if f.URL == "" {
				continue
			}
			host := strings.TrimPrefix(f.URL, "https://")
			fmt.Fprintf(c.App.Writer, "\nTry it (certificates come from Pebble, the stack's ACME CA; its root is %s):\n", stack.PebbleRootPath())
			fmt.Fprintf(c.App.Writer, "  curl --cacert %s --resolve %s:127.0.0.1 %s/\n", stack.PebbleRootPath(), host, f.URL)
			fmt.Fprintf(c.App.Writer, "\nTo trust it everywhere on this machine (Debian; Pebble makes a new root each time the stack starts):\n")
			fmt.Fprintf(c.App.Writer, "  sudo cp %s /usr/local/share/ca-certificates/caravan-dev.crt && sudo update-ca-certificates\n", stack.PebbleRootPath())
			break
		}
	}
	// From here the stack outlives this process: no later run reaps it as
	// left behind by an interrupted one.
	if err := stack.Detach(); err != nil {
		return err
	}
	ok = true
	fmt.Fprintf(c.App.Writer, "\nThe stack runs in the background: 'caravan dev status' shows it, 'caravan dev down' stops it.\n")
	return nil
}

// startServers starts the stack's caravan server, or for a cluster two,
// the second on a free port and another Nomad server; both render the
// first's forwardAuth and bundle addresses, as the servers of one cluster
// must (server.RouterMismatchError).
func startServers(c *cli.Context, stack *devstack.Stack, self, policyPath, token string) error {
	out := c.App.ErrWriter
	first := strings.TrimPrefix(stack.CaravanAddr(), "http://")
	listens, nomads := []string{first}, []string{stack.NomadAddr()}
	if cl := stack.Cluster; cl != nil {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		listens = append(listens, l.Addr().String())
		l.Close()
		nomads = append(nomads, "https://127.0.0.1:"+strconv.Itoa(cl.NomadServers[1].HTTP))
	}
	// A cluster's caravan servers hold tokens that may not create Nomad
	// namespaces: the stack makes the dev workspace's with its management
	// token. The single stack's server creates them itself.
	nsFlags := []string{"--create-namespaces"}
	if stack.Cluster != nil {
		nsFlags = nil
		if err := stack.CreateNamespaces(c.Context, jobs.Namespace("dev")); err != nil {
			return err
		}
	}
	agentCommand, _ := agent.LocateBinary(self)
	var proxyFlags []string
	if c.Bool("proxy-in-traefik") {
		proxyFlags = []string{"--proxy-plugin", intraefik.Name}
	}
	for i, listen := range listens {
		name := "caravan-server"
		if stack.Cluster != nil {
			name = fmt.Sprintf("caravan-server-%d", i)
		}
		fmt.Fprintf(out, "==> starting %s on %s\n", name, listen)
		cl := &api.Client{Addr: "http://" + listen, Token: token}
		err := stack.StartProcess(c.Context, name, listen, append([]string{self, "server",
			"--listen", listen,
			"--nomad-addr", nomads[i], "--consul-addr", stack.ConsulAddr(),
			"--domain", stack.Domain, "--https-port", strconv.Itoa(stack.Ports.TraefikWebsecure),
			"--auth-url", router.AuthURL(first), "--bundle-url", router.BundleURL(first),
			"--proxy-addr", stack.HTTPSAddr(), "--root-ca", stack.PebbleRootPath(), "--traefik-api", stack.TraefikAPI(),
			"--dns-resolver", stack.ChallDNSAddr(),
			"--policy", policyPath,
			"--bundle-dir", filepath.Join(stack.StateDir, "bundles"),
			// The stack's Nomad clients are this machine: its tasks run
			// the agent binary beside this one (`just build`'s
			// bin/caravan-agent), else this binary, in place instead of
			// fetching it at every start.
			"--agent-command", agentCommand,
		}, append(append(append(nsFlags, proxyFlags...), stack.NATSFlags(i == 0)...), stack.ServerFlags()...)...), nil, cl.Health)
		if err != nil {
			return err
		}
	}
	return nil
}

// devPolicy is the policy of the local stack's server (written to
// policy.hcl in its state directory): its own workspace, dev, may use
// raw_exec, which runs a function as the user who started the stack;
// every other workspace gets what a production server without a policy
// file allows.
const devPolicy = `# Written by caravan dev up; rewritten each time the stack starts.
workspace "dev" {
  drivers = ["raw_exec", "exec", "docker"]
}

workspace "*" {
  drivers = ["exec", "docker"]
}
`

func devInstall(c *cli.Context) error {
	wd, _ := os.Getwd()
	tools, err := devstack.FindToolsDir(wd)
	if err != nil {
		return err
	}
	in := &devstack.Installer{ToolsDir: tools, Out: c.App.ErrWriter}
	for _, t := range devstack.Tools {
		bin, err := in.Ensure(c.Context, t)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "%s %s: %s\n", t.Name, t.Version, bin)
	}
	pebble, chall, err := devstack.LookPebble(c.Context, c.App.ErrWriter)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "pebble: %s\npebble-challtestsrv: %s\n", pebble, chall)
	return nil
}

func devDown(c *cli.Context) error {
	stack, err := devstack.Load(c.String("state-dir"))
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	n := len(stack.Procs)
	if err := stack.Down(); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Stopped %d processes.\n", n)
	return nil
}

func devStatus(c *cli.Context) error {
	stack, err := devstack.Load(c.String("state-dir"))
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tSTATE\tPID\tADDRESS\tLOG")
	for _, p := range stack.Procs {
		st := "running"
		if !p.Alive() {
			st = "stopped"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", p.Name, st, p.PID, p.Addr, p.Log)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(stack.Procs) == 0 {
		fmt.Fprintln(c.App.Writer, "Nothing runs. Start the stack with 'caravan dev up'.")
		return nil
	}
	fmt.Fprintf(c.App.Writer, "\nexport NOMAD_ADDR=%s CONSUL_HTTP_ADDR=%s CARAVAN_ADDR=%s\n", stack.NomadAddr(), stack.ConsulAddr(), stack.CaravanAddr())
	if cl := stack.Cluster; cl != nil {
		// Paths, never the tokens: they are read from their files.
		fmt.Fprintf(c.App.Writer, "export NOMAD_CACERT=%s NOMAD_TOKEN=$(cat %s) CONSUL_CACERT=%s CONSUL_HTTP_TOKEN_FILE=%s\n", cl.CACert(), cl.NomadTokenFile, cl.CACert(), cl.ConsulTokenFile)
		fmt.Fprintf(c.App.Writer, "A cluster: %d Consul servers, %d Nomad servers, %d Nomad clients; ACLs on (the files above hold management tokens), Nomad and Consul TLS with the CA above.\n",
			len(cl.ConsulServers), len(cl.NomadServers), len(cl.NomadClients))
		fmt.Fprintf(c.App.Writer, "caravan server's tokens (of deploy/acl's policies): %s, %s\n", cl.TokenFile("nomad", "caravan-server"), cl.TokenFile("consul", "caravan-server"))
	}
	fmt.Fprintf(c.App.Writer, "HTTPS on %s for *.%s; Pebble's root: %s\n", stack.HTTPSAddr(), stack.Domain, stack.PebbleRootPath())
	if p := stack.Proc("caravan-proxy-0"); p != nil && stack.Ports.TraefikProxyAdmin != 0 {
		fmt.Fprintf(c.App.Writer, "The caravan proxy inside Traefik: admin (load, drains, /metrics) on 127.0.0.1:%d; routes use it with caravan server --proxy-plugin %s (caravan dev up --proxy-in-traefik)\n",
			stack.Ports.TraefikProxyAdmin, intraefik.Name)
	}
	return nil
}
