// Package e2e runs caravan against the real Nomad, Consul and Traefik, with
// Pebble as the ACME CA, all on 127.0.0.1 on free ports: the same stack
// `caravan dev up` starts, through the same devstack package. caravan server
// runs in-process so the tests exercise its real wiring.
package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/devstack"
	"github.com/caravanhq/caravan/e2e/e2ekit"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/policy"
	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/server"
	consul "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	nomad "github.com/hashicorp/nomad/api"
)

// env is the stack every test shares.
var env struct {
	stack  *devstack.Stack
	client *api.Client
	nomad  *nomad.Client
	consul *consul.Client
	https  *http.Client
	roots  *x509.CertPool
	server *server.Server
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv("CARAVAN_SKIP_E2E") != "" {
		fmt.Println("e2e: skipped (CARAVAN_SKIP_E2E is set)")
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	state, err := os.MkdirTemp("", "caravan-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tools, err := filepath.Abs("../tools")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The stack's caravan proxies run the CLI built from this tree.
	bin, err := buildCaravan()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	stack, err := devstack.Up(ctx, devstack.Options{
		Caravan:     bin,
		StateDir:    state,
		RandomPorts: true,
		Installer:   &devstack.Installer{ToolsDir: tools, Out: os.Stderr},
		Out:         os.Stderr,
		// Two GPUs the scheduler can place against (caravan's fake device plugin).
		FakeGPUs: &devstack.FakeGPUs{Model: "H100", Count: 2},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: starting the stack:", err)
		return 1
	}
	env.stack = stack
	// Ctrl-C (or CI's SIGTERM) must not leave the stack running.
	e2ekit.DownOnSignal("e2e", stack.Down)
	code := func() int {
		defer func() {
			if err := stack.Down(); err != nil {
				fmt.Fprintln(os.Stderr, "e2e: stopping the stack:", err)
			}
		}()
		if err := setup(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: setup:", err)
			return 1
		}
		defer env.server.Shutdown(context.Background())
		return m.Run()
	}()
	if code == 0 && os.Getenv("CARAVAN_E2E_KEEP") == "" {
		os.RemoveAll(state)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: logs of the stack are kept in %s/logs\n", state)
	}
	return code
}

func setup(ctx context.Context) error {
	s := env.stack
	root, err := s.RootCA(ctx)
	if err != nil {
		return err
	}
	env.roots = x509.NewCertPool()
	env.roots.AppendCertsFromPEM(root)
	env.https = orchestrator.ProxyClient(s.HTTPSAddr(), env.roots)

	env.nomad, err = nomad.NewClient(&nomad.Config{Address: s.NomadAddr()})
	if err != nil {
		return err
	}
	env.consul, err = consul.NewClient(&consul.Config{Address: s.ConsulAddr()})
	if err != nil {
		return err
	}
	if err := os.WriteFile(policyPath(), []byte(e2ePolicy), 0o644); err != nil {
		return err
	}
	srv, err := startServer("caravan-server")
	if err != nil {
		return err
	}
	env.server = srv
	// The server asked Traefik for the wildcard certificate as it started;
	// `caravan dev up` waits for it the same way.
	if err := s.AwaitWildcard(ctx, env.roots, 2*time.Minute); err != nil {
		return err
	}
	token, err := srv.Tokens().Create("e2e", "*")
	if err != nil {
		return err
	}
	env.client = &api.Client{Addr: "http://" + srv.Addr(), Token: token}
	// The tests' custom domains are workspace e2e's: an operator assigned
	// them (TestCustomDomainVerification proves one over DNS instead).
	for _, d := range testDomains {
		if _, err := env.client.AssignDomain(ctx, d, "e2e"); err != nil {
			return fmt.Errorf("assigning %s: %w", d, err)
		}
	}
	return nil
}

// testDomains are bound to workspace e2e before any test runs.
var testDomains = []string{"caravan-e2e.test", "example.test"}

// e2ePolicy is the policy of the tests' servers: the workspaces the tests
// and examples deploy to (e2e, dev) may use raw_exec; any other gets what
// a server without a policy file allows (TestPolicyRefusesRawExec deploys
// to one).
const e2ePolicy = `workspace "e2e" {
  drivers = ["raw_exec", "exec", "docker"]
}

workspace "dev" {
  drivers = ["raw_exec", "exec", "docker"]
}

workspace "*" {
  drivers = ["exec", "docker"]
}
`

// bundleDir is the local bundle store of the stack's servers.
func bundleDir() string { return filepath.Join(env.stack.StateDir, "bundles") }

// policyPath is where setup writes e2ePolicy.
func policyPath() string { return filepath.Join(env.stack.StateDir, "policy.hcl") }

// serverFlags are the flags of a caravan server for the stack, beside the
// tests' own (env.server): the same route settings, its forwardAuth
// address included.
func serverFlags(listen string) []string {
	s := env.stack
	natsURL, natsToken := env.server.NATS()
	return []string{"--listen", listen, "--nomad-addr", s.NomadAddr(), "--consul-addr", s.ConsulAddr(), "--create-namespaces",
		"--domain", s.Domain, "--https-port", strconv.Itoa(s.Ports.TraefikWebsecure), "--auth-url", clusterAuthURL(),
		"--bundle-url", clusterBundleURL(),
		"--proxy-addr", s.HTTPSAddr(), "--root-ca", s.PebbleRootPath(), "--dns-resolver", s.ChallDNSAddr(), "--policy", policyPath(),
		"--bundle-dir", bundleDir(),
		// The cluster's NATS: the first server's.
		"--nats-url", natsURL, "--nats-token-file", natsTokenFile(natsToken)}
}

// natsTokenFile writes token to a file of the stack's (mode 0600) and
// names it: a token is no flag's value.
func natsTokenFile(token string) string {
	path := filepath.Join(env.stack.StateDir, "nats-admin.token")
	if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
		panic(err)
	}
	return path
}

// clusterAuthURL is the forwardAuth address every caravan server of the
// tests renders with: that of the first, env.server, which lives as long
// as the stack. The servers of a cluster must agree on it (see
// server.RouterMismatchError); empty before the first starts.
func clusterAuthURL() string {
	if env.server == nil {
		return ""
	}
	return router.AuthURL(env.server.Addr())
}

// clusterBundleURL is, likewise, where Nomad's clients fetch bundles from:
// the first server, whose bundle directory every server of the tests
// shares.
func clusterBundleURL() string {
	if env.server == nil {
		return ""
	}
	return router.BundleURL(env.server.Addr())
}

// startServer starts an in-process caravan server for the stack, logging
// to logs/<name>.log.
func startServer(name string) (*server.Server, error) { return startServerWith(name, nil) }

// startServerWith is startServer with change applied to its configuration.
func startServerWith(name string, change func(*server.Config)) (*server.Server, error) {
	s := env.stack
	logf, err := os.Create(filepath.Join(s.StateDir, "logs", name+".log"))
	if err != nil {
		return nil, err
	}
	if _, err := buildCaravan(); err != nil {
		return nil, err
	}
	// What `caravan dev up` gives its server: the defaults (devstack's tests
	// check that its Traefik uses their names) with the stack's domain and
	// port. The first server listens on a free port, so its forwardAuth is
	// left to server.New to point at it; later ones use the first's.
	rc := router.DefaultConfig
	rc.Domain, rc.HTTPSPort, rc.AuthURL, rc.BundleURL = s.Domain, s.Ports.TraefikWebsecure, clusterAuthURL(), clusterBundleURL()
	pol, diags := policy.Load(policyPath())
	if diags.HasErrors() {
		return nil, diags
	}
	cfg := server.Config{
		Listen:     "127.0.0.1:0",
		NomadAddr:  s.NomadAddr(),
		ConsulAddr: s.ConsulAddr(),
		// The -dev agent has no ACLs: any token may create namespaces.
		CreateNamespaces: true,
		Router:           rc,
		ProxyAddr:        s.HTTPSAddr(),
		RootCAFile:       s.PebbleRootPath(),
		TraefikAPI:       s.TraefikAPI(),
		// Custom domains are proved in pebble-challtestsrv's DNS.
		DNSResolver: s.ChallDNSAddr(),
		Policy:      pol,
		Logger:      hclog.New(&hclog.LoggerOptions{Name: "caravan", Level: hclog.Debug, Output: logf}),
		// Every server of the stack shares one bundle directory, as
		// servers of a cluster share their S3 bucket.
		BundleDir: bundleDir(),
		// This process is the test binary: tasks get the agent binary
		// built from this tree (beside the CLI, as `just build` and a
		// release put it).
		AgentBinary: caravanBin.agent,
	}
	// CARAVAN_E2E_AGENT_COMMAND=1: the tasks run that agent binary in
	// place (as on clients with caravan-agent installed,
	// --agent-command) instead of fetching it, to measure what the fetch
	// costs a cold start.
	if os.Getenv("CARAVAN_E2E_AGENT_COMMAND") != "" {
		cfg.Router.AgentCommand = caravanBin.agent
	}
	// The first server embeds the stack's NATS; the others use it, as
	// servers of a cluster share an external one. Workers start as the
	// agent binary (built for the tests, fetched as an artifact),
	// and hold an input 3s without a heartbeat (a killed worker's input is
	// redelivered that soon).
	cfg.NATS = server.NATSConfig{Dir: filepath.Join(s.StateDir, "nats"), AckWait: warmAckWait}
	// CARAVAN_E2E_CREDENTIAL_LIFETIME=4s: the workers' credentials
	// live that long (default 1h), so that the warm tests run across
	// their renewals (no "NATS" in its name: TestWarmCall looks for that
	// in a function's environment, which the stack passes on).
	if v := os.Getenv("CARAVAN_E2E_CREDENTIAL_LIFETIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("CARAVAN_E2E_CREDENTIAL_LIFETIME: %w", err)
		}
		cfg.NATS.CredentialLifetime = d
	}
	if env.server != nil {
		cfg.NATS.URL, cfg.NATS.Token = env.server.NATS()
	}
	if change != nil {
		change(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		return nil, err
	}
	return srv, srv.Start()
}

// startServerApart starts another caravan server of the stack, with
// change applied to its configuration, and stops it when t ends. Servers
// that share a cluster must agree on their route settings
// (server.RouterMismatchError): the cluster's, in Consul, are set aside
// while it starts, so it records its own, and put back once it has.
func startServerApart(t *testing.T, name string, change func(*server.Config)) *server.Server {
	t.Helper()
	kv := env.consul.KV()
	rec, _, err := kv.Get("caravan/router-config", nil)
	if err != nil || rec == nil {
		t.Fatalf("the cluster's route settings: %v, %v", rec, err)
	}
	if _, err := kv.Delete(rec.Key, nil); err != nil {
		t.Fatal(err)
	}
	srv, err := startServerWith(name, change)
	if _, perr := kv.Put(&consul.KVPair{Key: rec.Key, Value: rec.Value}, nil); perr != nil {
		t.Fatalf("putting the cluster's route settings back: %v", perr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv
}

var caravanBin struct {
	once  sync.Once
	path  string
	agent string // cmd/caravan-agent, beside path
	err   error
}

// caravanBinary builds the caravan CLI once per test run.
func caravanBinary(t *testing.T) string {
	t.Helper()
	path, err := buildCaravan()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// buildCaravan builds the caravan CLI, and the agent binary beside it,
// once per test run.
func buildCaravan() (string, error) {
	caravanBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "caravan-bin-")
		if err != nil {
			caravanBin.err = err
			return
		}
		caravanBin.path = filepath.Join(dir, "caravan")
		caravanBin.agent = filepath.Join(dir, agent.BinaryName)
		for _, b := range []struct{ path, pkg string }{{caravanBin.path, "../cmd/caravan"}, {caravanBin.agent, "../cmd/caravan-agent"}} {
			if out, err := exec.Command("go", "build", "-o", b.path, b.pkg).CombinedOutput(); err != nil {
				caravanBin.err = fmt.Errorf("building %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	return caravanBin.path, caravanBin.err
}

// runCLI runs the caravan CLI against the tests' server with the suite's
// token and returns its combined output and exit code.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return runCLIAt(t, env.client.Addr, args...)
}

// runCLIAt runs the CLI against the server at addr.
func runCLIAt(t *testing.T, addr string, args ...string) (string, int) {
	t.Helper()
	return e2ekit.RunCLI(t, caravanBinary(t), addr, env.client.Token, args...)
}

// get fetches url through Traefik and returns the status and body.
func get(t *testing.T, url string) (int, string, error) {
	t.Helper()
	return e2ekit.Get(env.https, url)
}

// eventually polls cond every 200ms until it returns nil or the deadline
// passes, then fails the test with the last error.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	e2ekit.Eventually(t, timeout, what, cond)
}

// nodeServer is a spec of one web function running a Node.js server that
// answers body (and exits 1 at start when crash is true).
func nodeServer(app, body string, crash bool) string {
	js := fmt.Sprintf(`require("http").createServer((q, s) => s.end(%s)).listen(process.env.PORT, process.env.HOST);`, strconv.Quote(body))
	if crash {
		js = `process.exit(1);`
	}
	return nodeApp(app, js)
}

// nodeApp is a one-function web app that runs js under node.
func nodeApp(app, js string) string {
	return fmt.Sprintf(`app %q {
  workspace = "e2e"
  function "web" {
    command = "node"
    args    = ["-e", %s]
    resources {
      memory = 64
    }
    web {}
  }
}
`, app, strconv.Quote(js))
}

// purge removes an app's job and its records when the test ends.
func purge(t *testing.T, jobID string) { e2ekit.Purge(t, env.nomad, env.consul, jobID) }

// purgeWithSettings is purge that also deletes the proxy settings of the
// app's function service (Consul's name, e2e--<app>-web), for a test
// that set them.
func purgeWithSettings(t *testing.T, jobID, service string) {
	purge(t, jobID)
	t.Cleanup(func() { env.consul.KV().Delete(proxy.SettingsKVPrefix+service, nil) })
}

// deploy deploys src as app file name and fails the test on error.
func deploy(t *testing.T, name, src string, body api.DeployBody) *orchestrator.DeployResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	body.Filename, body.Spec = name, src
	res, err := env.client.DeployBody(ctx, body)
	if err != nil {
		t.Fatalf("deploy %s: %v", name, err)
	}
	return res
}

// answers polls url until it answers 200 with body.
func answers(t *testing.T, url, body string) {
	t.Helper()
	e2ekit.Answers(t, env.https, 30*time.Second, url, body)
}

func specFile(t *testing.T, name, src string) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, []byte(src)
}

func newGet(ctx context.Context, url string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func proxyClientFromPEM(t *testing.T, addr string, pem []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in PEM")
	}
	return orchestrator.ProxyClient(addr, pool)
}

// nsq and nsw are options in the Nomad namespace of job (or of a prefix
// of caravan's job IDs): its workspace's, where caravan registers it.
func nsq(job string) *nomad.QueryOptions {
	return &nomad.QueryOptions{Namespace: jobs.NamespaceOfJob(job)}
}

func nsw(job string) *nomad.WriteOptions {
	return &nomad.WriteOptions{Namespace: jobs.NamespaceOfJob(job)}
}

// nsPrefix lists the jobs whose IDs start with prefix, in its namespace.
func nsPrefix(prefix string) *nomad.QueryOptions {
	return &nomad.QueryOptions{Namespace: jobs.NamespaceOfJob(prefix), Prefix: prefix}
}

// ensureNamespace creates the Nomad namespace of workspace (an upsert:
// one that exists stays as it is), for jobs a test registers or validates
// without caravan server.
func ensureNamespace(t testing.TB, workspace string) {
	t.Helper()
	if _, err := env.nomad.Namespaces().Register(&nomad.Namespace{Name: jobs.Namespace(workspace)}, nil); err != nil {
		t.Fatalf("creating namespace %s: %v", jobs.Namespace(workspace), err)
	}
}

// uploadBundle packs dir as the CLI does (bundle.Collect, every file) and
// uploads it to caravan server unless it has it: its ID, and whether it
// was uploaded.
func uploadBundle(ctx context.Context, t *testing.T, dir string) (id string, uploaded bool) {
	t.Helper()
	tree, diags := bundle.Collect(dir, bundle.Selection{}, bundle.Limits{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	id, err := bundle.Hash(tree)
	if err != nil {
		t.Fatal(err)
	}
	missing, err := env.client.MissingBundles(ctx, "e2e", []string{id})
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) == 0 {
		return id, false
	}
	pr, pw := io.Pipe()
	go func() { _, err := bundle.Pack(pw, tree); pw.CloseWithError(err) }()
	if _, err := env.client.UploadBundle(ctx, "e2e", id, pr); err != nil {
		t.Fatal(err)
	}
	return id, true
}
