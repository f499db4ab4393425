package devstack

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
)

// Cluster is what a cluster stack (Options.Cluster) runs besides the
// single stack's Traefik, Pebble and proxies: three Consul servers, three
// Nomad servers and two Nomad clients, each its own process with its own
// data directory, ports and node name, on 127.0.0.1. ACLs are on in both
// (default deny); Nomad and Consul speak mutual TLS between agents and
// HTTPS (only) to their users, with a CA the stack makes.
type Cluster struct {
	ConsulServers []Node `json:"consul_servers"`
	NomadServers  []Node `json:"nomad_servers"`
	NomadClients  []Node `json:"nomad_clients"`
	// TLSDir holds ca.pem and the agents' and users' certificates
	// (nomad-server, nomad-client, consul-server, cli; keys mode 0600).
	TLSDir string `json:"tls_dir"`
	// The bootstrap (management) tokens' files, mode 0600: the tokens
	// themselves are never in stack.json.
	NomadTokenFile  string `json:"nomad_token_file"`
	ConsulTokenFile string `json:"consul_token_file"`
	// Tokens names the parts ("nomad/caravan-server", "consul/traefik")
	// that have a token of their own policy (see TokenFile).
	Tokens map[string]bool `json:"tokens,omitempty"`
}

// Node is one agent of the cluster.
type Node struct {
	Name string `json:"name"`
	Dir  string `json:"dir"`
	// HTTP (HTTPS: the cluster's agents serve no plain HTTP), RPC
	// (Consul: server), Serf LAN and (Consul) Serf WAN ports.
	HTTP    int `json:"http"`
	RPC     int `json:"rpc"`
	Serf    int `json:"serf"`
	SerfWAN int `json:"serf_wan,omitempty"`
	// A Nomad client's dynamic port range: two clients on one host must
	// not hand out the same port.
	MinPort int `json:"min_port,omitempty"`
	MaxPort int `json:"max_port,omitempty"`
}

// CACert is the cluster CA's certificate (PEM file).
func (c *Cluster) CACert() string { return filepath.Join(c.TLSDir, "ca.pem") }

// CLICert and CLIKey are a client certificate for Nomad's and Consul's
// APIs (which verify none: the CA is all their users need).
func (c *Cluster) CLICert() string { return filepath.Join(c.TLSDir, "cli.pem") }
func (c *Cluster) CLIKey() string  { return filepath.Join(c.TLSDir, "cli-key.pem") }

// clusterLayout names the cluster's nodes and gives them ports (ports
// holds 12 Consul, 9 Nomad server and 6 Nomad client ports, in order).
// The clients' dynamic ports lie above Linux's ephemeral range
// (32768-60999), where neither free-port picks nor another stack's Nomad
// (20000-32000 by default) hand them out.
func clusterLayout(stateDir string, ports []int) *Cluster {
	c := &Cluster{
		TLSDir:          filepath.Join(stateDir, "tls"),
		NomadTokenFile:  filepath.Join(stateDir, "nomad-management.token"),
		ConsulTokenFile: filepath.Join(stateDir, "consul-management.token"),
	}
	next := func() int { p := ports[0]; ports = ports[1:]; return p }
	for i := range 3 {
		name := fmt.Sprintf("consul-%d", i)
		c.ConsulServers = append(c.ConsulServers, Node{Name: name, Dir: filepath.Join(stateDir, name),
			HTTP: next(), RPC: next(), Serf: next(), SerfWAN: next()})
	}
	for i := range 3 {
		name := fmt.Sprintf("nomad-server-%d", i)
		c.NomadServers = append(c.NomadServers, Node{Name: name, Dir: filepath.Join(stateDir, name),
			HTTP: next(), RPC: next(), Serf: next()})
	}
	for i := range 2 {
		name := fmt.Sprintf("nomad-client-%d", i)
		c.NomadClients = append(c.NomadClients, Node{Name: name, Dir: filepath.Join(stateDir, name),
			HTTP: next(), RPC: next(), Serf: next(), MinPort: 61000 + 2000*i, MaxPort: 61999 + 2000*i})
	}
	return c
}

// clusterPortCount is how many ports clusterLayout takes.
const clusterPortCount = 3*4 + 3*3 + 2*3

// consulServerConfig is the JSON configuration of Consul server n: one of
// three that elect a leader among themselves, ACLs on with default deny.
// token is the initial management token, which the agent also uses as its
// own (a local stack's shortcut; a production agent gets a node token).
// It serves HTTPS only, on n.HTTP (users need the CA, no certificate),
// and its server RPC is mutual TLS that checks server.dc1.consul.
func consulServerConfig(c *Cluster, n Node, token string) string {
	var join []string
	for _, o := range c.ConsulServers {
		if o.Name != n.Name {
			join = append(join, addr(o.Serf))
		}
	}
	cfg := map[string]any{
		"node_name":        n.Name,
		"data_dir":         filepath.Join(n.Dir, "data"),
		"server":           true,
		"bootstrap_expect": len(c.ConsulServers),
		"retry_join":       join,
		"retry_interval":   "1s",
		"bind_addr":        "127.0.0.1",
		"client_addr":      "127.0.0.1",
		"advertise_addr":   "127.0.0.1",
		"log_level":        "WARN",
		"ports": map[string]int{
			"http": -1, "https": n.HTTP, "server": n.RPC, "serf_lan": n.Serf, "serf_wan": n.SerfWAN,
			"dns": -1, "grpc": -1, "grpc_tls": -1,
		},
		"acl": map[string]any{
			"enabled":                  true,
			"default_policy":           "deny",
			"down_policy":              "extend-cache",
			"enable_token_persistence": true,
			"tokens":                   map[string]string{"initial_management": token, "agent": token},
		},
		"tls": map[string]any{
			"defaults": map[string]any{
				"ca_file":         c.CACert(),
				"cert_file":       filepath.Join(c.TLSDir, "consul-server.pem"),
				"key_file":        filepath.Join(c.TLSDir, "consul-server-key.pem"),
				"verify_incoming": true,
				"verify_outgoing": true,
			},
			"internal_rpc": map[string]any{"verify_server_hostname": true},
			"https":        map[string]any{"verify_incoming": false},
		},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return string(b)
}

// nomadTLS is the tls block every Nomad agent of the cluster shares:
// mutual TLS between agents (verify_server_hostname checks
// server.global.nomad), HTTPS for users, who need the CA but no
// certificate of their own.
func nomadTLS(c *Cluster, cert string) string {
	return fmt.Sprintf(`tls {
  http                   = true
  rpc                    = true
  ca_file                = %q
  cert_file              = %q
  key_file               = %q
  verify_server_hostname = true
  verify_https_client    = false
}
`, c.CACert(), filepath.Join(c.TLSDir, cert+".pem"), filepath.Join(c.TLSDir, cert+"-key.pem"))
}

// nomadServerConfig is the configuration of Nomad server n, one of three.
// Its heartbeat settings notice a lost client within about ten seconds
// (Nomad's defaults take 20s, and 5 minutes after a leader election).
func nomadServerConfig(c *Cluster, n Node, consulHTTP int, consulToken string) string {
	var join []string
	for _, o := range c.NomadServers {
		if o.Name != n.Name {
			join = append(join, fmt.Sprintf("%q", addr(o.Serf)))
		}
	}
	return nomadAgentHead("caravan dev up --cluster", n.Name, filepath.Join(n.Dir, "data"), n.HTTP, n.RPC, n.Serf) + fmt.Sprintf(`server {
  enabled                = true
  bootstrap_expect       = %d
  heartbeat_grace        = "5s"
  min_heartbeat_ttl      = "5s"
  failover_heartbeat_ttl = "20s"
  server_join {
    retry_join     = [%s]
    retry_interval = "1s"
  }
}

client {
  enabled = false
}

`, len(c.NomadServers), strings.Join(join, ", ")) + clusterACLAndConsul(c, "nomad-server", consulHTTP, consulToken) + nomadTLS(c, "nomad-server")
}

// nomadClientConfig is the configuration of Nomad client n: its own data
// and alloc directories, cgroup parent and dynamic port range, joined to
// every server by RPC over TLS, registering services in the Consul agent
// at consulHTTP.
func nomadClientConfig(c *Cluster, n Node, consulHTTP int, consulToken string) string {
	var servers []string
	for _, o := range c.NomadServers {
		servers = append(servers, fmt.Sprintf("%q", addr(o.RPC)))
	}
	return nomadAgentHead("caravan dev up --cluster", n.Name, filepath.Join(n.Dir, "data"), n.HTTP, n.RPC, n.Serf) + fmt.Sprintf(`server {
  enabled = false
}

client {
  enabled          = true
  servers          = [%s]
  alloc_dir        = %q
  cgroup_parent    = %q
  min_dynamic_port = %d
  max_dynamic_port = %d
  options {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}

`, strings.Join(servers, ", "), filepath.Join(n.Dir, "alloc"), n.Name+".slice", n.MinPort, n.MaxPort) +
		clusterACLAndConsul(c, "nomad-client", consulHTTP, consulToken) + `plugin "raw_exec" {
  config {
    enabled = true
  }
}

` + nomadTLS(c, "nomad-client")
}

// clusterACLAndConsul are the blocks every Nomad agent of the cluster
// has: ACLs on, and the Consul agent at consulHTTP reached over HTTPS
// (verified by the cluster's CA; the agent's certificate cert as its
// client certificate) with consulToken, joining by no Consul discovery
// (the servers join by address).
func clusterACLAndConsul(c *Cluster, cert string, consulHTTP int, consulToken string) string {
	return fmt.Sprintf(`acl {
  enabled = true
}

consul {
  address          = "127.0.0.1:%d"
  token            = %q
  ssl              = true
  verify_ssl       = true
  ca_file          = %q
  cert_file        = %q
  key_file         = %q
  server_auto_join = false
  client_auto_join = false
}

`, consulHTTP, consulToken, c.CACert(), filepath.Join(c.TLSDir, cert+".pem"), filepath.Join(c.TLSDir, cert+"-key.pem"))
}
