package devstack

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// prepareCluster writes what the cluster's agents read: the CA and
// certificates, the two management tokens (mode 0600) and each agent's
// configuration (mode 0600: they hold the Consul token). It returns the
// Consul token, which Traefik's configuration needs too.
func (s *Stack) prepareCluster() (string, error) {
	c := s.Cluster
	if err := writeClusterTLS(c.TLSDir); err != nil {
		return "", fmt.Errorf("making the cluster's certificates: %w", err)
	}
	consulToken, nomadToken := newUUID(), newUUID()
	for path, tok := range map[string]string{c.ConsulTokenFile: consulToken, c.NomadTokenFile: nomadToken} {
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			return "", err
		}
	}
	files := map[string]string{}
	for i, n := range c.ConsulServers {
		files[filepath.Join(n.Dir, "consul.json")] = consulServerConfig(c, n, consulToken)
		files[filepath.Join(c.NomadServers[i].Dir, "nomad.hcl")] = nomadServerConfig(c, c.NomadServers[i], n.HTTP, consulToken)
	}
	for i, n := range c.NomadClients {
		// Each client registers its services with a Consul agent of its own.
		files[filepath.Join(n.Dir, "nomad.hcl")] = nomadClientConfig(c, n, c.ConsulServers[i%len(c.ConsulServers)].HTTP, consulToken)
	}
	for path, body := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", err
		}
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			return "", err
		}
	}
	return consulToken, nil
}

// upCluster starts the Consul servers, then the Nomad servers, then the
// Nomad clients, each group at once, waiting for a leader and the ACL
// bootstrap between groups.
func (s *Stack) upCluster(ctx context.Context, out io.Writer, bins map[string]string) error {
	c := s.Cluster
	nomadToken, err := readToken(c.NomadTokenFile)
	if err != nil {
		return err
	}

	var consuls []*Proc
	for _, n := range c.ConsulServers {
		p, err := s.startNode(out, n, []string{bins["consul"], "agent", "-config-file", filepath.Join(n.Dir, "consul.json")})
		if err != nil {
			return err
		}
		consuls = append(consuls, p)
	}
	// Ready when every server sees three peers and the management token
	// works (the leader has written it).
	err = waitForAll(ctx, 90*time.Second, consuls, func(ctx context.Context) error {
		for _, n := range c.ConsulServers {
			cc, err := s.ConsulClient("https://" + addr(n.HTTP))
			if err != nil {
				return err
			}
			peers, err := cc.Status().PeersWithQueryOptions((&consul.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			if len(peers) != len(c.ConsulServers) {
				return fmt.Errorf("%s sees %d raft peers", n.Name, len(peers))
			}
		}
		cc, err := s.ConsulClient(s.ConsulAddr())
		if err != nil {
			return err
		}
		_, _, err = cc.ACL().TokenReadSelf((&consul.QueryOptions{}).WithContext(ctx))
		return err
	})
	if err != nil {
		return fmt.Errorf("the Consul servers did not form a cluster: %w", err)
	}

	var servers []*Proc
	for _, n := range c.NomadServers {
		p, err := s.startNode(out, n, []string{bins["nomad"], "agent", "-config", filepath.Join(n.Dir, "nomad.hcl")})
		if err != nil {
			return err
		}
		servers = append(servers, p)
	}
	// Once a leader is elected, bootstrap ACLs with the token the stack
	// chose (Nomad takes a bootstrap secret since 1.5).
	bootstrapped := false
	err = waitForAll(ctx, 90*time.Second, servers, func(ctx context.Context) error {
		nc, err := s.NomadClient(s.NomadAddr())
		if err != nil {
			return err
		}
		defer nc.Close()
		if !bootstrapped {
			if leader, err := nc.Status().Leader(); err != nil || leader == "" {
				return fmt.Errorf("no Nomad leader yet (%v)", err)
			}
			if _, _, err := nc.ACLTokens().BootstrapOpts(nomadToken, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil &&
				!strings.Contains(err.Error(), "already done") {
				return fmt.Errorf("bootstrapping Nomad's ACLs: %w", err)
			}
			bootstrapped = true
		}
		for _, n := range c.NomadServers {
			nc, err := s.NomadClient("https://" + addr(n.HTTP))
			if err != nil {
				return err
			}
			defer nc.Close()
			peers, err := nc.Status().Peers()
			if err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			if len(peers) != len(c.NomadServers) {
				return fmt.Errorf("%s sees %d raft peers", n.Name, len(peers))
			}
		}
		_, _, err = nc.ACLTokens().Self((&nomad.QueryOptions{}).WithContext(ctx))
		return err
	})
	if err != nil {
		return fmt.Errorf("the Nomad servers did not form a cluster: %w", err)
	}

	var clients []*Proc
	for _, n := range c.NomadClients {
		p, err := s.startNode(out, n, []string{bins["nomad"], "agent", "-config", filepath.Join(n.Dir, "nomad.hcl")})
		if err != nil {
			return err
		}
		clients = append(clients, p)
	}
	err = waitForAll(ctx, 90*time.Second, clients, func(ctx context.Context) error {
		ready, err := s.ReadyClients(ctx)
		if err != nil {
			return err
		}
		for _, n := range c.NomadClients {
			if _, ok := ready[n.Name]; !ok {
				return fmt.Errorf("client %s is not ready with raw_exec yet", n.Name)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("the Nomad clients did not join: %w", err)
	}
	return nil
}

// ReadyClients maps the name of every Nomad client that is ready with
// raw_exec to its node ID.
func (s *Stack) ReadyClients(ctx context.Context) (map[string]string, error) {
	nc, err := s.NomadClient(s.NomadAddr())
	if err != nil {
		return nil, err
	}
	// Polled: a client per call, whose kept-alive connection would
	// otherwise stay open, until Nomad's limit of 100 connections from
	// one address answers 429.
	defer nc.Close()
	nodes, _, err := nc.Nodes().List((&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, n := range nodes {
		if d := n.Drivers["raw_exec"]; n.Status == "ready" && d != nil && d.Detected && d.Healthy {
			out[n.Name] = n.ID
		}
	}
	return out, nil
}

func (s *Stack) startNode(out io.Writer, n Node, args []string) (*Proc, error) {
	fmt.Fprintf(out, "==> starting %s on %s\n", n.Name, addr(n.HTTP))
	if err := os.MkdirAll(filepath.Join(n.Dir, "data"), 0o700); err != nil {
		return nil, err
	}
	p, err := start(s.StateDir, n.Name, addr(n.HTTP), args, nil)
	if err != nil {
		return nil, err
	}
	s.Procs = append(s.Procs, p)
	return p, s.save()
}

// NomadClient is a Nomad API client for the agent at address (a URL),
// with the cluster's CA and management token when the stack is a cluster.
func (s *Stack) NomadClient(address string) (*nomad.Client, error) {
	cfg := &nomad.Config{Address: address}
	if c := s.Cluster; c != nil {
		tok, err := readToken(c.NomadTokenFile)
		if err != nil {
			return nil, err
		}
		cfg.SecretID = tok
		cfg.TLSConfig = &nomad.TLSConfig{CACert: c.CACert()}
	}
	return nomad.NewClient(cfg)
}

// ConsulClient is a Consul API client for the agent at address
// (host:port, or https://host:port), with the cluster's CA and management
// token when the stack is a cluster (whose agents speak HTTPS only).
func (s *Stack) ConsulClient(address string) (*consul.Client, error) {
	cfg := &consul.Config{Address: address}
	if c := s.Cluster; c != nil {
		tok, err := readToken(c.ConsulTokenFile)
		if err != nil {
			return nil, err
		}
		cfg.Token = tok
		cfg.Scheme = "https"
		cfg.TLSConfig = consul.TLSConfig{CAFile: c.CACert()}
	}
	return consul.NewClient(cfg)
}

// consulCA is the CA file that verifies the stack's Consul: none on a
// single stack (plain HTTP).
func (s *Stack) consulCA() string {
	if s.Cluster == nil {
		return ""
	}
	return s.Cluster.CACert()
}

// consulEnv is the environment of a stack process that talks to Consul
// through the official client (the proxies): the token file's path, never
// the token, and the CA that verifies the cluster's HTTPS.
func (s *Stack) consulEnv() []string {
	if s.Cluster == nil {
		return nil
	}
	return []string{"CONSUL_HTTP_TOKEN_FILE=" + s.Cluster.TokenFile("consul", "caravan-proxy"), "CONSUL_CACERT=" + s.Cluster.CACert()}
}

// ServerFlags are the flags of a caravan server on the cluster: the CA
// that verifies Nomad and Consul and the files of its tokens (of
// deploy/acl's policies when the stack made them). None for a single
// stack.
func (s *Stack) ServerFlags() []string {
	c := s.Cluster
	if c == nil {
		return nil
	}
	return []string{"--nomad-ca-cert", c.CACert(), "--nomad-token-file", c.TokenFile("nomad", "caravan-server"),
		"--consul-ca-cert", c.CACert(), "--consul-token-file", c.TokenFile("consul", "caravan-server")}
}

// NATSFlags are the NATS flags of one of the stack's caravan servers: the
// first (embed) keeps the stack's NATS in its state directory, the others
// use that one, as the servers of a cluster share theirs. The others'
// start once the first answers (its address and token are in the
// directory by then).
func (s *Stack) NATSFlags(embed bool) []string {
	dir := filepath.Join(s.StateDir, "nats")
	if embed {
		return []string{"--nats-dir", dir}
	}
	listen, _ := os.ReadFile(filepath.Join(dir, "listen"))
	return []string{"--nats-url", "nats://" + strings.TrimSpace(string(listen)), "--nats-token-file", filepath.Join(dir, "token")}
}

// Kill kills the stack's process name and everything below it at once
// (see Proc.Kill); it stays in the stack, dead, so Down still reaps what
// is left.
func (s *Stack) Kill(name string) error {
	for _, p := range s.Procs {
		if p.Name == name {
			return p.Kill()
		}
	}
	return fmt.Errorf("the stack has no process %q", name)
}

// Proc is the stack's process name, or nil.
func (s *Stack) Proc(name string) *Proc {
	for _, p := range s.Procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the cluster's token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// newUUID is a random (version 4) UUID, the form Consul and Nomad want
// their secrets in.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// freePortsBesides picks n free ports none of which p already uses.
func freePortsBesides(n int, p Ports) ([]int, error) {
	taken := map[int]bool{}
	for _, e := range p.all() {
		taken[*e.ptr] = true
	}
	for range 5 {
		ports, err := freePorts(n)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(ports, func(x int) bool { return taken[x] }) {
			return ports, nil
		}
	}
	return nil, errors.New("no set of free ports apart from the stack's after 5 tries")
}

// waitForAll polls ready until it succeeds, any of procs exits, or
// timeout passes.
func waitForAll(ctx context.Context, timeout time.Duration, procs []*Proc, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		for _, p := range procs {
			if err := p.Exited(); err != nil {
				return err
			}
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		last = ready(rctx)
		rcancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			var logs []string
			for _, p := range procs {
				logs = append(logs, p.Log)
			}
			return fmt.Errorf("not ready after %s: %v; see %s", timeout, last, strings.Join(logs, ", "))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
