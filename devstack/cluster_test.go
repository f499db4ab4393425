package devstack

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

func testLayout() *Cluster {
	ports := make([]int, clusterPortCount)
	for i := range ports {
		ports[i] = 40000 + i
	}
	return clusterLayout("/state", ports)
}

// Every agent gets ports, a directory and a name of its own, and the two
// clients' dynamic port ranges neither overlap nor fall in Linux's
// ephemeral range (where free-port picks come from).
func TestClusterLayoutKeepsAgentsApart(t *testing.T) {
	c := testLayout()
	seenPort, seenDir, seenName := map[int]string{}, map[string]bool{}, map[string]bool{}
	nodes := append(append(append([]Node{}, c.ConsulServers...), c.NomadServers...), c.NomadClients...)
	if len(c.ConsulServers) != 3 || len(c.NomadServers) != 3 || len(c.NomadClients) != 2 {
		t.Fatalf("layout %d/%d/%d, want 3 Consul servers, 3 Nomad servers, 2 clients", len(c.ConsulServers), len(c.NomadServers), len(c.NomadClients))
	}
	for _, n := range nodes {
		for _, p := range []int{n.HTTP, n.RPC, n.Serf, n.SerfWAN} {
			if p == 0 {
				continue
			}
			if other, ok := seenPort[p]; ok {
				t.Errorf("port %d of %s is %s's too", p, n.Name, other)
			}
			seenPort[p] = n.Name
		}
		if seenDir[n.Dir] || seenName[n.Name] {
			t.Errorf("%s shares its name or directory %s", n.Name, n.Dir)
		}
		seenDir[n.Dir], seenName[n.Name] = true, true
	}
	a, b := c.NomadClients[0], c.NomadClients[1]
	if a.MinPort > a.MaxPort || b.MinPort > b.MaxPort || !(a.MaxPort < b.MinPort || b.MaxPort < a.MinPort) {
		t.Errorf("dynamic ranges %d-%d and %d-%d overlap", a.MinPort, a.MaxPort, b.MinPort, b.MaxPort)
	}
	for _, n := range c.NomadClients {
		if n.MinPort <= 60999 || n.MaxPort > 65535 {
			t.Errorf("%s's range %d-%d is not between Linux's ephemeral ports and 65535", n.Name, n.MinPort, n.MaxPort)
		}
	}
}

// Each Consul server expects three and joins the other two; ACLs deny
// by default; it serves HTTPS only on its HTTP port, and its RPC is
// mutual TLS that checks the servers' name.
func TestConsulServerConfig(t *testing.T) {
	c := testLayout()
	var cfg struct {
		NodeName        string   `json:"node_name"`
		Server          bool     `json:"server"`
		BootstrapExpect int      `json:"bootstrap_expect"`
		RetryJoin       []string `json:"retry_join"`
		ACL             struct {
			Enabled       bool   `json:"enabled"`
			DefaultPolicy string `json:"default_policy"`
		} `json:"acl"`
		Ports map[string]int `json:"ports"`
		TLS   struct {
			Defaults struct {
				CAFile         string `json:"ca_file"`
				CertFile       string `json:"cert_file"`
				VerifyIncoming bool   `json:"verify_incoming"`
				VerifyOutgoing bool   `json:"verify_outgoing"`
			} `json:"defaults"`
			InternalRPC struct {
				VerifyServerHostname bool `json:"verify_server_hostname"`
			} `json:"internal_rpc"`
		} `json:"tls"`
	}
	if err := json.Unmarshal([]byte(consulServerConfig(c, c.ConsulServers[1], "tok")), &cfg); err != nil {
		t.Fatal(err)
	}
	want := []string{addr(c.ConsulServers[0].Serf), addr(c.ConsulServers[2].Serf)}
	if cfg.NodeName != "consul-1" || !cfg.Server || cfg.BootstrapExpect != 3 || strings.Join(cfg.RetryJoin, ",") != strings.Join(want, ",") ||
		!cfg.ACL.Enabled || cfg.ACL.DefaultPolicy != "deny" {
		t.Errorf("config %+v, want consul-1, a server expecting 3, joining %v, ACLs deny by default", cfg, want)
	}
	n := c.ConsulServers[1]
	if cfg.Ports["http"] != -1 || cfg.Ports["https"] != n.HTTP {
		t.Errorf("ports %v, want http -1 (off) and https %d", cfg.Ports, n.HTTP)
	}
	d := cfg.TLS.Defaults
	if d.CAFile != c.CACert() || d.CertFile != filepath.Join(c.TLSDir, "consul-server.pem") || !d.VerifyIncoming || !d.VerifyOutgoing ||
		!cfg.TLS.InternalRPC.VerifyServerHostname {
		t.Errorf("tls %+v, want the cluster's CA and consul-server certificate, verifying both ways and the server name", cfg.TLS)
	}
}

// Every Nomad agent reaches Consul over HTTPS, verified by the cluster's
// CA.
func TestNomadConsulTLS(t *testing.T) {
	c := testLayout()
	for _, cfg := range []string{nomadServerConfig(c, c.NomadServers[0], 8501, "tok"), nomadClientConfig(c, c.NomadClients[0], 8501, "tok")} {
		for _, want := range []string{`ssl              = true`, `verify_ssl       = true`, fmt.Sprintf(`ca_file          = %q`, c.CACert())} {
			if !strings.Contains(cfg, want) {
				t.Errorf("config lacks %s:\n%s", want, cfg)
			}
		}
	}
}

// The Nomad configurations are valid HCL with TLS and ACLs on, the
// servers joining each other and the clients every server.
func TestNomadConfigs(t *testing.T) {
	c := testLayout()
	cases := []struct {
		name, src string
		want      []string
	}{
		{"server", nomadServerConfig(c, c.NomadServers[0], 8500, "tok"), []string{
			"bootstrap_expect       = 3", addr(c.NomadServers[1].Serf), addr(c.NomadServers[2].Serf),
			"verify_server_hostname = true", "rpc                    = true", filepath.Join("/state", "tls", "nomad-server.pem"),
			"acl {\n  enabled = true"}},
		{"client", nomadClientConfig(c, c.NomadClients[1], 8500, "tok"), []string{
			addr(c.NomadServers[0].RPC), addr(c.NomadServers[2].RPC), "min_dynamic_port = 63000", "max_dynamic_port = 63999",
			`cgroup_parent    = "nomad-client-1.slice"`, filepath.Join("/state", "tls", "nomad-client.pem"), "acl {\n  enabled = true"}},
	}
	for _, tc := range cases {
		// Nomad reads HCL 1 (quoted keys in client options); the
		// server's file is HCL 2 too.
		if _, diags := hclsyntax.ParseConfig([]byte(tc.src), tc.name+".hcl", hcl.InitialPos); tc.name == "server" && diags.HasErrors() {
			t.Errorf("%s: %v", tc.name, diags)
		}
		for _, w := range tc.want {
			if !strings.Contains(tc.src, w) {
				t.Errorf("%s config lacks %q:\n%s", tc.name, w, tc.src)
			}
		}
	}
}

// Without tokens of their own, the parts use the management tokens.
func TestTokenFileFallsBackToManagement(t *testing.T) {
	c := testLayout()
	if c.TokenFile("nomad", "caravan-server") != c.NomadTokenFile || c.TokenFile("consul", "traefik") != c.ConsulTokenFile {
		t.Errorf("token files without policies: %s, %s", c.TokenFile("nomad", "caravan-server"), c.TokenFile("consul", "traefik"))
	}
	c.Tokens = map[string]bool{"consul/traefik": true}
	if got := c.TokenFile("consul", "traefik"); got != "/state/tokens/consul-traefik.token" {
		t.Errorf("traefik's token file %s", got)
	}
}
