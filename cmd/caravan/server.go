package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/bundlestore"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/policy"
	"github.com/caravanhq/caravan/queue"
	"github.com/caravanhq/caravan/server"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"
)

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:      "server",
		Usage:     "Run caravan server, the HTTP API the CLI talks to",
		UsageText: "caravan server [--policy FILE]",
		Description: `Serves the deploy API in front of Nomad and Consul until interrupted.
Requests need a bearer token (stored hashed in Consul KV; 'caravan dev up' makes one).

--policy names an HCL file saying what each workspace may run: its drivers and
its limits on CPU, memory, GPUs and containers (README, "Security model").
Without one, no workspace may use raw_exec; exec and docker are allowed with
generous limits. A policy file with errors is printed with its lines, exit 1.`,
		Flags: append(append(append(routerFlags(), nomadFlags()...), consulFlags()...),
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7474", Usage: "`ADDR` to serve the API on"},
			&cli.BoolFlag{Name: "create-namespaces", Usage: "create a workspace's Nomad namespace (caravan-WORKSPACE) at its first deploy; needs a Nomad management token (default: the namespace must exist)"},
			&cli.StringFlag{Name: "proxy-addr", Usage: "Traefik's HTTPS `ADDR`; deploys wait until web functions answer there"},
			&cli.StringFlag{Name: "root-ca", Usage: "PEM `FILE` that verifies the proxy's certificates"},
			&cli.StringFlag{Name: "traefik-api", Usage: "`URL` of Traefik's API; traffic splits count as applied when Traefik serves them (default: wait a fixed 1.5s)"},
			&cli.StringFlag{Name: "dns-resolver", Usage: "DNS server `ADDR` (host:port) that answers the TXT lookups proving control of custom domains (default: the system's resolver)"},
			&cli.StringFlag{Name: "policy", Usage: "HCL `FILE` of what each workspace may run (default: exec and docker, no raw_exec)"},
			&cli.StringFlag{Name: "log-level", Value: "info"},
			&cli.StringFlag{Name: "bundle-dir", Usage: "`DIR` of the local bundle store (default: $XDG_DATA_HOME/caravan/bundles, ~/.local/share/caravan/bundles)"},
			&cli.StringFlag{Name: "bundle-max-size", Value: "256MiB", Usage: "largest code bundle (its files together, uncompressed) an upload may hold; past it 413"},
			&cli.DurationFlag{Name: "bundle-gc", Value: server.DefaultBundleGC, Usage: "how often bundles no version references are deleted, once that old (0: never)"},
			&cli.StringFlag{Name: "bundle-s3-endpoint", Usage: "keep bundles in an S3-compatible store at `HOST[:PORT]` instead of --bundle-dir (every server of a cluster must share it); credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or the instance's role"},
			&cli.StringFlag{Name: "bundle-s3-bucket", Usage: "the S3 `BUCKET` (it must exist)"},
			&cli.StringFlag{Name: "bundle-s3-prefix", Usage: "`PREFIX` of the bundles' keys (<prefix>bundles/<id>.tar.gz)"},
			&cli.StringFlag{Name: "bundle-s3-region", Usage: "the bucket's `REGION` (default: ask the store)"},
			&cli.BoolFlag{Name: "bundle-s3-insecure", Usage: "speak plain HTTP to the S3 store"},
			&cli.StringFlag{Name: "nats-url", EnvVars: []string{"CARAVAN_NATS_URL"}, Usage: "an external NATS with JetStream at `URL` for warm calls (default: one embedded in this server)"},
			// The token's value is no flag (every process list shows flags):
			// --nats-token is kept only to say so.
			&cli.StringFlag{Name: "nats-token", Hidden: true},
			&cli.StringFlag{Name: "nats-token-file", Usage: "`FILE` holding the token this server presents to --nats-url (read once at start; default: $" + envNATSToken + ")"},
			&cli.StringFlag{Name: "nats-creds", Usage: "NATS credentials `FILE` (.creds) this server presents to --nats-url"},
			&cli.StringFlag{Name: "nats-worker-token", EnvVars: []string{"CARAVAN_NATS_WORKER_TOKEN"}, Usage: "`TOKEN` every worker presents to an external --nats-url that does not check caravan's per-function credentials (default: credentials minted per function under the server's NATS token)"},
			&cli.StringFlag{Name: "nats-ca", Usage: "PEM `FILE` that verifies --nats-url's TLS certificate"},
			&cli.StringFlag{Name: "nats-cert", Usage: "client certificate PEM `FILE` for --nats-url"},
			&cli.StringFlag{Name: "nats-key", Usage: "client key PEM `FILE` for --nats-url"},
			&cli.StringFlag{Name: "nats-dir", Usage: "`DIR` of the embedded NATS's JetStream files and token (default: $XDG_DATA_HOME/caravan/nats)"},
			&cli.StringFlag{Name: "nats-listen", Usage: "`ADDR` the embedded NATS listens on (default: 127.0.0.1, a port chosen once and kept in --nats-dir)"},
			&cli.DurationFlag{Name: "nats-credential-lifetime", Value: queue.DefaultCredentialLifetime, Usage: "how long a worker's NATS credential minted by this server is valid (2s to 24h); workers renew theirs at half of it, and the embedded NATS closes a connection whose credential expired"},
			&cli.IntFlag{Name: "nats-replicas", Value: 1, Usage: "how many servers of --nats-url's JetStream cluster keep each stream and bucket (1 to 5; 3 on a cluster of three survives losing one)"},
			&cli.DurationFlag{Name: "call-ack-wait", Value: 30 * time.Second, Usage: "how long a worker holds an input without a heartbeat before it goes to another"},
			&cli.IntFlag{Name: "call-max-attempts", Value: 3, Usage: "deliveries of an input before its call fails as dead-lettered"},
			&cli.IntFlag{Name: "max-starting", Value: orchestrator.DefaultMaxStarting, Usage: "how many containers this server's rollouts start in Nomad at once; past it a rollout waits its turn, shown in its history, before anything of it reaches Nomad (a larger one goes alone; 0: no limit)"},
			&cli.StringFlag{Name: "agent-binary", Usage: "binary `PATH` served to tasks that run caravan inside (the drain supervisor of autoscaled web functions, warm workers): caravan-agent or caravan, which both have the task and worker commands; it must run on the Nomad clients' OS and architecture (default: caravan-agent beside this executable, else this executable)"},
		),
		Action: func(c *cli.Context) error {
			if c.IsSet("nats-token") {
				return cli.Exit("--nats-token TOKEN is gone: a token on the command line shows in every process list. Set $"+envNATSToken+", or put it in a file and pass --nats-token-file FILE", 1)
			}
			log := hclog.New(&hclog.LoggerOptions{Name: "caravan", Level: hclog.LevelFromString(c.String("log-level")), Output: c.App.ErrWriter})
			pol, err := policyFlag(c)
			if err != nil {
				return err
			}
			log.Info("policy", "source", pol.Source)
			rc := routerConfig(c)
			maxSize, err := spec.ParseSize(c.String("bundle-max-size"))
			if err != nil || maxSize <= 0 {
				return cli.Exit(fmt.Sprintf("--bundle-max-size %q: give a size such as 256MiB", c.String("bundle-max-size")), 1)
			}
			gc := c.Duration("bundle-gc")
			if gc == 0 {
				gc = -1
			}
			store, err := bundleStoreFlags(c)
			if err != nil {
				return err
			}
			if d := c.Duration("nats-credential-lifetime"); d < 2*time.Second || d > 24*time.Hour {
				return cli.Exit(fmt.Sprintf("--nats-credential-lifetime %s: give 2s to 24h", d), 1)
			}
			if err := queue.CheckReplicas(c.Int("nats-replicas"), c.String("nats-url") != ""); err != nil {
				return cli.Exit("--nats-replicas: "+err.Error(), 1)
			}
			maxStarting := c.Int("max-starting")
			switch {
			case maxStarting < 0:
				return cli.Exit(fmt.Sprintf("--max-starting %d: give a number of containers, or 0 for no limit", maxStarting), 1)
			case maxStarting == 0:
				maxStarting = -1
			}
			natsToken, err := secretFlag(c, envNATSToken, "nats-token-file")
			if err != nil {
				return err
			}
			s, err := server.New(server.Config{
				Listen: c.String("listen"), Nomad: nomadConfig(c), Consul: consulConfig(c), CreateNamespaces: c.Bool("create-namespaces"),
				Router: rc, ProxyAddr: c.String("proxy-addr"), RootCAFile: c.String("root-ca"), TraefikAPI: c.String("traefik-api"),
				DNSResolver: c.String("dns-resolver"), Policy: pol, Logger: log,
				Bundles: store, BundleDir: c.String("bundle-dir"), BundleLimits: bundle.Limits{MaxSize: maxSize}, BundleGC: gc,
				NATS: server.NATSConfig{URL: c.String("nats-url"), Token: natsToken, CredsFile: c.String("nats-creds"),
					WorkerToken: c.String("nats-worker-token"), CAFile: c.String("nats-ca"), CertFile: c.String("nats-cert"), KeyFile: c.String("nats-key"),
					Dir: c.String("nats-dir"), Listen: c.String("nats-listen"), Replicas: c.Int("nats-replicas"),
					AckWait: c.Duration("call-ack-wait"), MaxAttempts: c.Int("call-max-attempts"), CredentialLifetime: c.Duration("nats-credential-lifetime")},
				AgentBinary: c.String("agent-binary"), MaxStarting: maxStarting,
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

// policyFlag loads --policy, printing its diagnostics with their source
// lines; without the flag it is policy.Default().
func policyFlag(c *cli.Context) (*policy.Policy, error) {
	path := c.String("policy")
	if path == "" {
		return policy.Default(), nil
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("--policy: %v", err), 1)
	}
	p, diags := policy.Parse(src, path)
	if diags.HasErrors() {
		_ = printDiags(c.App.ErrWriter, diags, map[string][]byte{path: src})
		return nil, cli.Exit(fmt.Sprintf("--policy %s: the policy file has errors; caravan server did not start", path), 1)
	}
	return p, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// bundleStoreFlags is the bundle store the flags name; nil: the local
// directory (--bundle-dir).
func bundleStoreFlags(c *cli.Context) (bundlestore.Store, error) {
	endpoint := c.String("bundle-s3-endpoint")
	if endpoint == "" {
		if c.String("bundle-s3-bucket") != "" {
			return nil, cli.Exit("--bundle-s3-bucket needs --bundle-s3-endpoint", 1)
		}
		return nil, nil
	}
	if c.String("bundle-dir") != "" {
		return nil, cli.Exit("--bundle-dir and --bundle-s3-endpoint name two stores: choose one", 1)
	}
	s, err := bundlestore.NewS3(bundlestore.S3Config{Endpoint: endpoint, Bucket: c.String("bundle-s3-bucket"),
		Prefix: c.String("bundle-s3-prefix"), Region: c.String("bundle-s3-region"), Insecure: c.Bool("bundle-s3-insecure")})
	if err != nil {
		return nil, cli.Exit(err.Error(), 1)
	}
	ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
	defer cancel()
	if err := s.CheckBucket(ctx); err != nil {
		return nil, cli.Exit(err.Error(), 1)
	}
	return s, nil
}

// envNATSToken holds the token caravan server presents to --nats-url,
// unless --nats-token-file names a file that does.
const envNATSToken = "CARAVAN_NATS_TOKEN"

// secretFlag is the secret in the file flag file names (read once;
// surrounding space trimmed), or else in the environment variable env.
func secretFlag(c *cli.Context, env, file string) (string, error) {
	path := c.String(file)
	if path == "" {
		return os.Getenv(env), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", file, err)
	}
	if strings.TrimSpace(string(b)) == "" {
		return "", fmt.Errorf("--%s: %s is empty", file, path)
	}
	return strings.TrimSpace(string(b)), nil
}
