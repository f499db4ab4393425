// Package cluster runs caravan's tests that matter on a cluster stack
// (devstack.Options{Cluster: true}, what `caravan dev up --cluster`
// starts): three Consul servers, three Nomad servers and two Nomad
// clients, ACLs on in both, Nomad and Consul over TLS, and two caravan servers run
// as processes of the CLI built from this tree, which reach Nomad and
// Consul through the standard environment (NOMAD_TOKEN, NOMAD_CACERT,
// CONSUL_CACERT, CONSUL_HTTP_TOKEN_FILE). Then faults under traffic: a Nomad client lost.
// It is a package of its own so `go test ./...` runs it beside the
// single-agent e2e package.
package cluster

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/devstack"
	"github.com/caravanhq/caravan/e2e/e2ekit"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/server"
	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// env is the cluster every test shares.
var env struct {
	stack *devstack.Stack
	bin   string
	// servers are the two caravan servers (each on a Nomad server of its
	// own); client is the first's.
	servers []*api.Client
	client  *api.Client
	nomad   *nomad.Client
	consul  *consul.Client
	https   *http.Client
	roots   *x509.CertPool
	// nodes maps each Nomad client's name to its node ID.
	nodes map[string]string
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Getenv("CARAVAN_SKIP_E2E") != "" {
		fmt.Println("e2e/cluster: skipped (CARAVAN_SKIP_E2E is set)")
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	began := time.Now()
	state, err := os.MkdirTemp("", "caravan-e2e-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tools, err := filepath.Abs("../../tools")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if env.bin, err = buildCaravan(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/cluster:", err)
		return 1
	}
	stack, err := devstack.Up(ctx, devstack.Options{
		Cluster:     true,
		ACLDir:      filepath.Join(filepath.Dir(tools), "deploy", "acl"),
		Caravan:     env.bin,
		StateDir:    state,
		RandomPorts: true,
		Installer:   &devstack.Installer{ToolsDir: tools, Out: os.Stderr},
		Out:         os.Stderr,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/cluster: starting the stack:", err)
		return 1
	}
	env.stack = stack
	// Ctrl-C (or CI's SIGTERM) must not leave the stack running.
	e2ekit.DownOnSignal("e2e/cluster", stack.Down)
	code := func() int {
		defer func() {
			if err := stack.Down(); err != nil {
				fmt.Fprintln(os.Stderr, "e2e/cluster: stopping the stack:", err)
			}
		}()
		if err := setup(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/cluster: setup:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e/cluster: cluster and two caravan servers up in %s\n", time.Since(began).Round(100*time.Millisecond))
		return m.Run()
	}()
	fmt.Fprintf(os.Stderr, "e2e/cluster: whole package in %s\n", time.Since(began).Round(100*time.Millisecond))
	if code == 0 && os.Getenv("CARAVAN_E2E_KEEP") == "" {
		os.RemoveAll(state)
	} else {
		fmt.Fprintf(os.Stderr, "e2e/cluster: logs of the stack are kept in %s/logs\n", state)
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
	if env.nomad, err = s.NomadClient(s.NomadAddr()); err != nil {
		return err
	}
	if env.consul, err = s.ConsulClient(s.ConsulAddr()); err != nil {
		return err
	}
	if env.nodes, err = s.ReadyClients(ctx); err != nil {
		return err
	}
	if err := os.WriteFile(policyPath(), []byte(clusterPolicy), 0o644); err != nil {
		return err
	}
	// caravan server's token (deploy/acl's policy) may not create
	// namespaces: the tests' workspace's exists beforehand, as an
	// operator would make it.
	if err := s.CreateNamespaces(ctx, jobs.Namespace("e2e")); err != nil {
		return err
	}
	token, err := (&server.Tokens{KV: server.ConsulKV{KV: env.consul.KV()}}).Create("e2e", "*")
	if err != nil {
		return err
	}
	first := freeAddr()
	for i, listen := range []string{first, freeAddr()} {
		name := fmt.Sprintf("caravan-server-%d", i)
		cl, err := startCaravan(ctx, name, listen, first, i, s.Cluster.TokenFile("nomad", "caravan-server"))
		if err != nil {
			return err
		}
		cl.Token = token
		env.servers = append(env.servers, cl)
	}
	env.client = env.servers[0]
	return s.AwaitWildcard(ctx, env.roots, 2*time.Minute)
}

// clusterPolicy lets workspace e2e use raw_exec (the stack's clients
// have no other driver).
const clusterPolicy = `workspace "e2e" {
  drivers = ["raw_exec", "exec", "docker"]
}

workspace "*" {
  drivers = ["exec", "docker"]
}
`

func policyPath() string { return filepath.Join(env.stack.StateDir, "policy.hcl") }

// startCaravan starts `caravan server` named name on listen, talking to
// Nomad server nomadIndex with the Nomad token in nomadToken (a file) and
// the stack's flags (its CA, its Consul token of deploy/acl's policy).
// Every server renders the first's forwardAuth and bundle addresses.
func startCaravan(ctx context.Context, name, listen, first string, nomadIndex int, nomadToken string) (*api.Client, error) {
	s := env.stack
	cl := &api.Client{Addr: "http://" + listen}
	err := s.StartProcess(ctx, name, listen, append(append(append([]string{env.bin, "server", "--log-level", "debug"}, s.ServerFlags()...),
		"--listen", listen,
		"--nomad-addr", "https://127.0.0.1:"+strconv.Itoa(s.Cluster.NomadServers[nomadIndex].HTTP),
		"--consul-addr", s.ConsulAddr(),
		"--domain", s.Domain, "--https-port", strconv.Itoa(s.Ports.TraefikWebsecure),
		"--auth-url", router.AuthURL(first), "--bundle-url", router.BundleURL(first),
		"--proxy-addr", s.HTTPSAddr(), "--root-ca", s.PebbleRootPath(), "--traefik-api", s.TraefikAPI(),
		"--dns-resolver", s.ChallDNSAddr(), "--policy", policyPath(),
		"--bundle-dir", filepath.Join(s.StateDir, "bundles"),
		"--nomad-token-file", nomadToken), s.NATSFlags(listen == first)...), nil, cl.Health)
	return cl, err
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// buildCaravan builds the caravan CLI for the stack's proxies and
// servers, and beside it the agent binary the servers serve to tasks (by
// default: agent.LocateBinary).
func buildCaravan() (string, error) {
	dir, err := os.MkdirTemp("", "caravan-bin-")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "caravan")
	for _, b := range []struct{ path, pkg string }{{path, "../../cmd/caravan"}, {filepath.Join(dir, "caravan-agent"), "../../cmd/caravan-agent"}} {
		if out, err := exec.Command("go", "build", "-o", b.path, b.pkg).CombinedOutput(); err != nil {
			return "", fmt.Errorf("building %s: %v\n%s", b.pkg, err, out)
		}
	}
	return path, nil
}

// runCLI runs the caravan CLI against the first server.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return e2ekit.RunCLI(t, env.bin, env.client.Addr, env.client.Token, args...)
}

// get fetches url through Traefik.
func get(url string) (int, string, error) { return e2ekit.Get(env.https, url) }

// eventually polls cond every 200ms until it returns nil or the deadline
// passes, then fails the test with the last error.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	e2ekit.Eventually(t, timeout, what, cond)
}

// answers polls url until it answers 200 with body.
func answers(t *testing.T, url, body string) {
	t.Helper()
	e2ekit.Answers(t, env.https, 60*time.Second, url, body)
}

// nodeServer is a spec of one web function of containers Node.js
// servers answering body.
func nodeServer(app, body string, containers int) string {
	return nodeServerAfter(app, body, containers, 0)
}

// nodeServerAfter is nodeServer whose servers listen only after delay.
func nodeServerAfter(app, body string, containers int, delay time.Duration) string {
	js := fmt.Sprintf(`const srv = require("http").createServer((q, s) => s.end(%s)); setTimeout(() => srv.listen(process.env.PORT, process.env.HOST), %d);`,
		strconv.Quote(body), delay.Milliseconds())
	return fmt.Sprintf(`app %q {
  workspace = "e2e"
  function "web" {
    command        = "node"
    args           = ["-e", %s]
    min_containers = %d
    resources {
      memory = 64
    }
    web {}
  }
}
`, app, strconv.Quote(js), containers)
}

// deploy deploys src through cl and fails the test on error.
func deploy(t *testing.T, cl *api.Client, name, src string, body api.DeployBody) *api.DeployResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	body.Filename, body.Spec = name, src
	res, err := cl.DeployBody(ctx, body)
	if err != nil {
		t.Fatalf("deploy %s: %v", name, err)
	}
	return res
}

// purge removes an app's job and records when the test ends.
func purge(t *testing.T, jobID string) { e2ekit.Purge(t, env.nomad, env.consul, jobID) }

// inNamespace queries job's Nomad namespace (its workspace's).
func inNamespace(job string) *nomad.QueryOptions {
	return &nomad.QueryOptions{Namespace: jobs.NamespaceOfJob(job)}
}

// placement maps each running allocation of job to its node's name.
func placement(job string) (map[string]string, error) {
	allocs, _, err := env.nomad.Jobs().Allocations(job, false, inNamespace(job))
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	for name, id := range env.nodes {
		names[id] = name
	}
	out := map[string]string{}
	for _, a := range allocs {
		if a.ClientStatus == "running" && a.DesiredStatus == "run" {
			out[a.ID] = names[a.NodeID]
		}
	}
	return out, nil
}

// onNodes counts the running allocations of job per node name.
func onNodes(job string) (map[string]int, error) {
	p, err := placement(job)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, n := range p {
		out[n]++
	}
	return out, nil
}
