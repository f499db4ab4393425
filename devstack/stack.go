package devstack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// Options configure Up.
type Options struct {
	// StateDir holds configs, logs, pids and certificates.
	StateDir string
	// RandomPorts picks a free port for everything (tests); otherwise
	// DefaultPorts are tried first.
	RandomPorts bool
	// Domain of generated hostnames (default "caravan.localhost").
	Domain    string
	Installer *Installer
	Out       io.Writer
	// FakeGPUs, when set, gives the Nomad client test GPUs.
	FakeGPUs *FakeGPUs
	// Caravan is the caravan executable, which runs the stack's two
	// caravan proxies (`caravan proxy --register`) beside Traefik; empty
	// starts none (autoscaled functions then have nowhere to go).
	Caravan string
	// Registry is where stacks record themselves so a later Up can stop
	// what an interrupted run left (default DefaultRegistryDir()).
	Registry string
	// ACLDir holds the policies of deploy/acl; a cluster stack makes
	// caravan server, the proxies and Traefik tokens of them (empty: the
	// management tokens).
	ACLDir string
	// Cluster runs three Consul servers, three Nomad servers and two
	// Nomad clients with ACLs and TLS instead of one agent of each (see
	// Cluster).
	Cluster bool
}

// Stack is a running local stack; Up writes it to <state>/stack.json.
type Stack struct {
	StateDir string    `json:"state_dir"`
	Domain   string    `json:"domain"`
	Ports    Ports     `json:"ports"`
	Procs    []*Proc   `json:"procs"`
	FakeGPUs *FakeGPUs `json:"fake_gpus,omitempty"`
	// Cluster is set for a cluster stack (Options.Cluster).
	Cluster *Cluster `json:"cluster,omitempty"`

	// ID names the stack's record in Registry.
	ID       string `json:"id,omitempty"`
	Registry string `json:"registry,omitempty"`
	// Owner is the process whose end leaves the stack to be reaped (the
	// one that ran Up), until Detach; nil for a detached stack.
	Owner *ProcID `json:"owner,omitempty"`
}

// DefaultStateDir is $CARAVAN_STATE_DIR, else ~/.local/state/caravan/dev.
func DefaultStateDir() string {
	if d := os.Getenv("CARAVAN_STATE_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "caravan-dev")
	}
	return filepath.Join(home, ".local", "state", "caravan", "dev")
}

// Load reads the stack recorded in stateDir.
func Load(stateDir string) (*Stack, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "stack.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (no %s)", errNotUp, filepath.Join(stateDir, "stack.json"))
	}
	if err != nil {
		return nil, err
	}
	var s Stack
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(stateDir, "stack.json"), err)
	}
	return &s, nil
}

func (s *Stack) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if reg := s.registryPath(); reg != "" {
		if err := writeFileAtomic(reg, b, 0o600); err != nil {
			return fmt.Errorf("recording the stack in %s: %w", s.Registry, err)
		}
	}
	return os.WriteFile(filepath.Join(s.StateDir, "stack.json"), b, 0o644)
}

// Up installs what is missing and starts Pebble, Consul, Nomad and Traefik,
// waiting until each is healthy. On failure it stops what it started.
func Up(ctx context.Context, opts Options) (*Stack, error) {
	for attempt := 1; ; attempt++ {
		s, err := up(ctx, opts)
		if err == nil || !opts.RandomPorts || attempt == upAttempts || !portTaken(err) || ctx.Err() != nil {
			return s, err
		}
		// A free port picked for one server was bound by another
		// process (another stack starting) before that server bound it:
		// everything this attempt started is down again; pick anew.
		if opts.Out != nil {
			fmt.Fprintf(opts.Out, "==> a port was taken before its server bound it; starting again on other ports (%d of %d)\n", attempt+1, upAttempts)
		}
	}
}

// upAttempts is how many times Up starts a stack on random ports whose
// ports another process took meanwhile.
const upAttempts = 3

// portTaken says whether err is a server failing to bind its port.
func portTaken(err error) bool {
	return strings.Contains(err.Error(), "address already in use")
}

func up(ctx context.Context, opts Options) (_ *Stack, err error) {
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	if opts.Domain == "" {
		opts.Domain = "caravan.localhost"
	}
	if opts.Registry == "" {
		opts.Registry = DefaultRegistryDir()
	}
	// Whatever an interrupted run left holds ports, memory and CPU that
	// this stack needs; a failure to stop some of it is worth saying, not
	// worth refusing to start.
	if err := ReapOrphans(opts.Registry, out); err != nil {
		fmt.Fprintln(out, "==> warning: stopping what earlier runs left:", err)
	}
	if prev, err := Load(opts.StateDir); err == nil && prev.Running() {
		return nil, fmt.Errorf("a stack already runs from %s: run `caravan dev down` first", opts.StateDir)
	}
	bins := map[string]string{}
	for _, t := range Tools {
		bin, err := opts.Installer.Ensure(ctx, t)
		if err != nil {
			return nil, err
		}
		bins[t.Name] = bin
	}
	if opts.FakeGPUs != nil {
		bin, err := opts.Installer.Ensure(ctx, FakeGPUPlugin)
		if err != nil {
			return nil, err
		}
		bins[FakeGPUPlugin.Name] = bin
	}
	pebble, chall, err := LookPebble(ctx, out)
	if err != nil {
		return nil, err
	}

	for _, d := range []string{"logs", "pebble", "traefik", "nomad"} {
		if err := os.MkdirAll(filepath.Join(opts.StateDir, d), 0o755); err != nil {
			return nil, err
		}
	}
	ports, err := pickPorts(opts.RandomPorts)
	if err != nil {
		return nil, err
	}
	s := &Stack{StateDir: opts.StateDir, Domain: opts.Domain, Ports: ports, FakeGPUs: opts.FakeGPUs}
	if opts.Cluster {
		if opts.FakeGPUs != nil {
			return nil, errors.New("a cluster stack has no fake GPUs: drop one of the two options")
		}
		extra, err := freePortsBesides(clusterPortCount, ports)
		if err != nil {
			return nil, err
		}
		s.Cluster = clusterLayout(s.StateDir, extra)
		// Where one address is asked for (Traefik, the proxies, NomadAddr),
		// the first of each kind stands for the cluster.
		c0, n0 := s.Cluster.ConsulServers[0], s.Cluster.NomadServers[0]
		s.Ports.ConsulHTTP, s.Ports.ConsulServer, s.Ports.ConsulSerfLAN, s.Ports.ConsulSerfWAN = c0.HTTP, c0.RPC, c0.Serf, c0.SerfWAN
		s.Ports.NomadHTTP, s.Ports.NomadRPC, s.Ports.NomadSerf = n0.HTTP, n0.RPC, n0.Serf
		ports = s.Ports
	}
	// Recorded before anything starts, so a run killed mid-way is reaped too.
	if err := s.register(opts.Registry); err != nil {
		return nil, err
	}
	if opts.FakeGPUs != nil {
		dir := filepath.Join(opts.StateDir, "nomad", "plugins")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		link := filepath.Join(dir, FakeGPUPlugin.Name)
		os.Remove(link)
		if err := os.Symlink(bins[FakeGPUPlugin.Name], link); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			_ = s.Down()
		}
	}()

	if err := writePlugins(s.StateDir); err != nil {
		return nil, fmt.Errorf("writing Traefik's plugins: %w", err)
	}
	pdir := filepath.Join(s.StateDir, "pebble")
	if err := writePebbleTLS(pdir); err != nil {
		return nil, fmt.Errorf("making Pebble's certificate: %w", err)
	}
	consulToken := ""
	if s.Cluster != nil {
		if consulToken, err = s.prepareCluster(); err != nil {
			return nil, err
		}
	}
	files := map[string]string{
		"traefik/traefik.yml":       traefikConfig(ports, s.StateDir, consulToken, s.consulCA()),
		"pebble/pebble-config.json": pebbleConfig(ports, s.StateDir),
		"traefik/dns01-hook":        dns01Hook(ports),
	}
	if s.Cluster == nil {
		files["consul.json"] = consulConfig(ports)
		files["nomad.hcl"] = nomadConfig(ports, s.StateDir, opts.FakeGPUs)
	}
	for name, body := range files {
		// traefik.yml of a cluster holds a Consul token.
		if err := os.WriteFile(filepath.Join(s.StateDir, name), []byte(body), 0o700); err != nil {
			return nil, err
		}
	}

	type step struct {
		name, addr string
		args, env  []string
		ready      func(context.Context) error
	}
	steps := []step{
		{"challtestsrv", addr(ports.ChallMgmt), []string{chall,
			"-management", addr(ports.ChallMgmt), "-dns01", addr(ports.ChallDNS),
			"-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv6", "", "-defaultIPv4", "127.0.0.1"},
			nil, func(ctx context.Context) error { return dialable(addr(ports.ChallMgmt)) }},
		{"pebble", addr(ports.Pebble), []string{pebble,
			"-config", filepath.Join(pdir, "pebble-config.json"), "-dnsserver", addr(ports.ChallDNS)},
			[]string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}, s.pebbleReady},
		{"consul", addr(ports.ConsulHTTP), []string{bins["consul"], "agent", "-dev",
			"-config-file", filepath.Join(s.StateDir, "consul.json")}, nil, s.consulReady},
		{"nomad", addr(ports.NomadHTTP), []string{bins["nomad"], "agent", "-dev",
			"-config", filepath.Join(s.StateDir, "nomad.hcl")}, nil, s.nomadReady},
		{"cluster", "", nil, nil, nil},
		{"traefik", addr(ports.TraefikWebsecure), []string{bins[TraefikCaravan.Name],
			"--configFile=" + filepath.Join(s.StateDir, "traefik", "traefik.yml")},
			append([]string{"LEGO_CA_CERTIFICATES=" + filepath.Join(pdir, "ca.pem"),
				"EXEC_PATH=" + filepath.Join(s.StateDir, "traefik", "dns01-hook")}, s.traefikProxyEnv(opts)...), s.traefikReady},
	}
	if opts.Caravan != "" {
		for i, pp := range [][2]int{{ports.Proxy0, ports.Proxy0Admin}, {ports.Proxy1, ports.Proxy1Admin}} {
			data, admin := addr(pp[0]), addr(pp[1])
			steps = append(steps, step{fmt.Sprintf("caravan-proxy-%d", i), data, []string{opts.Caravan, "proxy",
				"--listen", data, "--admin-listen", admin, "--consul-addr", s.ConsulAddr(),
				"--domain", opts.Domain, "--register"}, s.consulEnv(), func(ctx context.Context) error { return s.proxyReady(ctx, data) }})
		}
	}
	for _, st := range steps {
		switch {
		case st.name == "cluster" && s.Cluster != nil:
			if err := s.upCluster(ctx, out, bins); err != nil {
				return nil, err
			}
			if opts.ACLDir != "" {
				fmt.Fprintf(out, "==> making tokens of the policies in %s\n", opts.ACLDir)
				if err := s.makeTokens(ctx, opts.ACLDir); err != nil {
					return nil, err
				}
				// Traefik reads Consul with a token of its own policy.
				tok, err := readToken(s.Cluster.TokenFile("consul", "traefik"))
				if err != nil {
					return nil, err
				}
				if err := os.WriteFile(filepath.Join(s.StateDir, "traefik", "traefik.yml"), []byte(traefikConfig(ports, s.StateDir, tok, s.consulCA())), 0o600); err != nil {
					return nil, err
				}
			}
			continue
		case st.name == "cluster", s.Cluster != nil && (st.name == "consul" || st.name == "nomad"):
			continue
		}
		fmt.Fprintf(out, "==> starting %s on %s\n", st.name, st.addr)
		p, err := start(s.StateDir, st.name, st.addr, st.args, st.env)
		if err != nil {
			return nil, err
		}
		s.Procs = append(s.Procs, p)
		if err := s.save(); err != nil {
			return nil, err
		}
		if err := waitFor(ctx, 90*time.Second, p, st.ready); err != nil {
			return nil, fmt.Errorf("%s did not become healthy: %w", st.name, err)
		}
	}
	return s, s.save()
}

// StartProcess starts another process as part of the stack (caravan server)
// and waits until ready succeeds.
func (s *Stack) StartProcess(ctx context.Context, name, address string, args, env []string, ready func(context.Context) error) error {
	p, err := start(s.StateDir, name, address, args, env)
	if err != nil {
		return err
	}
	s.Procs = append(s.Procs, p)
	if err := s.save(); err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, p, ready)
}

// Restart stops the named process and starts it again as it was started,
// waiting until it is healthy again (Traefik, for instance, to show that
// certificates outlive it).
func (s *Stack) Restart(ctx context.Context, name string) error {
	ready := map[string]func(context.Context) error{
		"pebble": s.pebbleReady, "consul": s.consulReady, "nomad": s.nomadReady, "traefik": s.traefikReady,
	}[name]
	for i, p := range s.Procs {
		if p.Name != name {
			continue
		}
		if err := p.Stop(15 * time.Second); err != nil {
			return err
		}
		np, err := start(s.StateDir, p.Name, p.Addr, p.Args, p.Env)
		if err != nil {
			return err
		}
		s.Procs[i] = np
		if err := s.save(); err != nil {
			return err
		}
		if ready == nil {
			return nil
		}
		return waitFor(ctx, 90*time.Second, np, ready)
	}
	return fmt.Errorf("the stack has no process %q", name)
}

// Running reports whether any process of the stack still runs.
func (s *Stack) Running() bool {
	for _, p := range s.Procs {
		if p.Alive() {
			return true
		}
	}
	return false
}

// Down stops every process Up started, newest first, by pid, and nothing
// else; it then forgets them.
func (s *Stack) Down() error {
	var errs []error
	for i := len(s.Procs) - 1; i >= 0; i-- {
		if err := s.Procs[i].Stop(15 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	s.Procs = nil
	if err := unmountUnder(s.StateDir); err != nil {
		errs = append(errs, err)
	}
	if err := s.save(); err != nil {
		errs = append(errs, err)
	}
	if reg := s.registryPath(); reg != "" && len(errs) == 0 {
		// What failed to stop stays recorded, for a later run to reap.
		if err := os.Remove(reg); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Addresses of the stack's services.
func (s *Stack) NomadAddr() string {
	if s.Cluster != nil {
		return "https://" + addr(s.Ports.NomadHTTP)
	}
	return "http://" + addr(s.Ports.NomadHTTP)
}

// ConsulAddr is the Consul agent's address: host:port on a single stack,
// https://host:port on a cluster, whose agents serve HTTPS only (verified
// by Cluster.CACert).
func (s *Stack) ConsulAddr() string {
	if s.Cluster != nil {
		return "https://" + addr(s.Ports.ConsulHTTP)
	}
	return addr(s.Ports.ConsulHTTP)
}

func (s *Stack) CaravanAddr() string {
	return "http://" + addr(s.Ports.Caravan)
}

// HTTPSAddr is where Traefik serves HTTPS.
func (s *Stack) HTTPSAddr() string { return addr(s.Ports.TraefikWebsecure) }

// ChallDNSAddr is pebble-challtestsrv's DNS server: caravan server's
// --dns-resolver, which proves custom domains by their TXT records.
func (s *Stack) ChallDNSAddr() string { return addr(s.Ports.ChallDNS) }

// TraefikAPI is the base URL of Traefik's API (on its admin entry point).
func (s *Stack) TraefikAPI() string { return "http://" + addr(s.Ports.TraefikAdmin) }

// PebbleRootPath is where RootCA writes Pebble's issuing root.
func (s *Stack) PebbleRootPath() string { return filepath.Join(s.StateDir, "pebble", "root.pem") }

// RootCA fetches the root that signs the certificates Pebble issues (it is
// new each time Pebble starts), writes it to PebbleRootPath, and returns it.
func (s *Stack) RootCA(ctx context.Context) ([]byte, error) {
	client, err := s.pebbleClient()
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://%s/roots/0", addr(s.Ports.PebbleMgmt)), nil)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pebble roots: %s", resp.Status)
	}
	return b, os.WriteFile(s.PebbleRootPath(), b, 0o644)
}

func (s *Stack) pebbleClient() (*http.Client, error) {
	ca, err := os.ReadFile(filepath.Join(s.StateDir, "pebble", "ca.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

func (s *Stack) pebbleReady(ctx context.Context) error {
	client, err := s.pebbleClient()
	if err != nil {
		return err
	}
	return httpOK(ctx, client, fmt.Sprintf("https://%s/dir", addr(s.Ports.Pebble)))
}

func (s *Stack) consulReady(ctx context.Context) error {
	c, err := s.ConsulClient(s.ConsulAddr())
	if err != nil {
		return err
	}
	leader, err := c.Status().Leader()
	if err != nil {
		return err
	}
	if leader == "" {
		return errors.New("no leader yet")
	}
	return nil
}

func (s *Stack) nomadReady(ctx context.Context) error {
	c, err := s.NomadClient(s.NomadAddr())
	if err != nil {
		return err
	}
	defer c.Close()
	nodes, _, err := c.Nodes().List((&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if d := n.Drivers["raw_exec"]; n.Status != "ready" || d == nil || !d.Detected || !d.Healthy {
			continue
		}
		if s.FakeGPUs == nil {
			return nil
		}
		node, _, err := c.Nodes().Info(n.ID, (&nomad.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		if node.NodeResources != nil {
			for _, d := range node.NodeResources.Devices {
				if d.Vendor == "nvidia" && d.Type == "gpu" && len(d.Instances) == s.FakeGPUs.Count {
					return nil
				}
			}
		}
		return errors.New("the client has not reported its GPUs yet")
	}
	return errors.New("no ready client node with raw_exec yet")
}

// ProxyAdmins are the admin base URLs (http://host:port) of the stack's
// caravan proxies: their load reports, drains and metrics.
func (s *Stack) ProxyAdmins() []string {
	return []string{"http://" + addr(s.Ports.Proxy0Admin), "http://" + addr(s.Ports.Proxy1Admin)}
}

// proxyReady is ready once the proxy on data passes its check in Consul:
// Traefik routes to it from then on.
func (s *Stack) proxyReady(ctx context.Context, data string) error {
	c, err := s.ConsulClient(s.ConsulAddr())
	if err != nil {
		return err
	}
	entries, _, err := c.Health().Service(proxyServiceName, "", true, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Service != nil && net.JoinHostPort(e.Service.Address, fmt.Sprint(e.Service.Port)) == data {
			return nil
		}
	}
	return fmt.Errorf("%s does not pass its check in Consul yet", data)
}

// proxyServiceName is proxy.ServiceName (devstack does not link the proxy).
const proxyServiceName = "caravan-proxy"

// traefikProxyEnv configures the caravan proxy inside Traefik's process
// (package intraefik; the stack's Traefik is caravan's build of it) when
// the stack runs caravan's proxies: its admin address, and Consul as the
// standalone proxies reach it. Routes use it when caravan server renders
// with --proxy-plugin (router.Config.ProxyPlugin).
func (s *Stack) traefikProxyEnv(opts Options) []string {
	if opts.Caravan == "" {
		return nil
	}
	return append([]string{"CARAVAN_PROXY_ADMIN_LISTEN=" + addr(s.Ports.TraefikProxyAdmin),
		"CARAVAN_PROXY_DOMAIN=" + opts.Domain, "CONSUL_HTTP_ADDR=" + s.ConsulAddr()}, s.consulEnv()...)
}

func (s *Stack) traefikReady(ctx context.Context) error {
	return httpOK(ctx, http.DefaultClient, fmt.Sprintf("http://%s/ping", addr(s.Ports.TraefikAdmin)))
}

func httpOK(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func dialable(a string) error {
	c, err := net.DialTimeout("tcp", a, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// waitFor polls ready until it succeeds, p exits, or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, p *Proc, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if err := p.Exited(); err != nil {
			return err
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		last = ready(rctx)
		rcancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %v; see %s", timeout, last, p.Log)
		case <-time.After(150 * time.Millisecond):
		}
	}
}

// pickPorts keeps every listener open until all ports are chosen, so no
// port is handed out twice.
func pickPorts(random bool) (Ports, error) {
	p := DefaultPorts
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for _, e := range p.all() {
		if !random {
			if l, err := net.Listen("tcp", addr(*e.ptr)); err == nil {
				held = append(held, l)
				continue
			}
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return p, fmt.Errorf("finding a free port for %s: %w", e.name, err)
		}
		held = append(held, l)
		*e.ptr = l.Addr().(*net.TCPAddr).Port
	}
	return p, nil
}
