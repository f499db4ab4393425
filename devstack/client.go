package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// clientConfig is the configuration of a Nomad client (only) named name
// that joins the stack's server: its own data and alloc directories, its
// own cgroup parent (two clients on one host must not share Nomad's
// cgroup tree), and free ports.
func clientConfig(p Ports, name, dir string, http, rpc, serf int) string {
	return nomadAgentHead("devstack.StartClient", name, filepath.Join(dir, "data"), http, rpc, serf) + fmt.Sprintf(`server {
  enabled = false
}

client {
  enabled       = true
  servers       = ["127.0.0.1:%d"]
  alloc_dir     = %q
  cgroup_parent = %q
  options {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}

consul {
  address = "127.0.0.1:%d"
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}
`, p.NomadRPC, filepath.Join(dir, "alloc"), name+".slice", p.ConsulHTTP)
}

// ClientDir is where the extra client name keeps its data and
// allocations.
func (s *Stack) ClientDir(name string) string { return filepath.Join(s.StateDir, "clients", name) }

// StartClient starts one more Nomad client, named name, with a data
// directory of its own, and waits until the server lists it ready with
// raw_exec. It returns the client's node ID. Stop(name) stops it.
func (s *Stack) StartClient(ctx context.Context, name string) (string, error) {
	var bin string
	for _, p := range s.Procs {
		if p.Name == "nomad" {
			bin = p.Args[0]
		}
	}
	if bin == "" {
		return "", errors.New("the stack runs no Nomad")
	}
	dir := s.ClientDir(name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	ports, err := freePorts(3)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "client.hcl")
	if err := os.WriteFile(path, []byte(clientConfig(s.Ports, name, dir, ports[0], ports[1], ports[2])), 0o644); err != nil {
		return "", err
	}
	c, err := s.NomadClient(s.NomadAddr())
	if err != nil {
		return "", err
	}
	var nodeID string
	ready := func(ctx context.Context) error {
		nodes, _, err := c.Nodes().List((&nomad.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if d := n.Drivers["raw_exec"]; n.Name == name && n.Status == "ready" && d != nil && d.Detected && d.Healthy {
				nodeID = n.ID
				return nil
			}
		}
		return fmt.Errorf("client %s is not ready with raw_exec yet", name)
	}
	err = s.StartProcess(ctx, name, addr(ports[0]), []string{bin, "agent", "-config", path}, nil, ready)
	return nodeID, err
}

// Stop stops the stack's process name (an extra client, say) and forgets it.
func (s *Stack) Stop(name string) error {
	for i, p := range s.Procs {
		if p.Name != name {
			continue
		}
		if err := p.Stop(15 * time.Second); err != nil {
			return err
		}
		s.Procs = append(s.Procs[:i], s.Procs[i+1:]...)
		return s.save()
	}
	return fmt.Errorf("the stack has no process %q", name)
}

// freePorts picks n free ports on the loopback, all different.
func freePorts(n int) ([]int, error) {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		held = append(held, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
