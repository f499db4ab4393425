package devstack

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
)

// Ports are every port a stack listens on, all on 127.0.0.1.
type Ports struct {
	ConsulHTTP, ConsulServer, ConsulSerfLAN, ConsulSerfWAN int
	NomadHTTP, NomadRPC, NomadSerf                         int
	TraefikWeb, TraefikWebsecure, TraefikAdmin             int
	Pebble, PebbleMgmt, ChallDNS, ChallMgmt                int
	Caravan                                                int
	// The two caravan proxies' data and admin addresses.
	Proxy0, Proxy0Admin, Proxy1, Proxy1Admin int
	// The admin address of the caravan proxy inside Traefik's process
	// (package intraefik).
	TraefikProxyAdmin int
}

// all lists the ports with their names, for picking and printing.
func (p *Ports) all() []struct {
	name string
	ptr  *int
} {
	return []struct {
		name string
		ptr  *int
	}{
		{"consul-http", &p.ConsulHTTP}, {"consul-server", &p.ConsulServer},
		{"consul-serf-lan", &p.ConsulSerfLAN}, {"consul-serf-wan", &p.ConsulSerfWAN},
		{"nomad-http", &p.NomadHTTP}, {"nomad-rpc", &p.NomadRPC}, {"nomad-serf", &p.NomadSerf},
		{"traefik-web", &p.TraefikWeb}, {"traefik-websecure", &p.TraefikWebsecure}, {"traefik-admin", &p.TraefikAdmin},
		{"pebble", &p.Pebble}, {"pebble-mgmt", &p.PebbleMgmt}, {"challtestsrv-dns", &p.ChallDNS},
		{"challtestsrv-mgmt", &p.ChallMgmt}, {"caravan", &p.Caravan},
		{"caravan-proxy-0", &p.Proxy0}, {"caravan-proxy-0-admin", &p.Proxy0Admin},
		{"caravan-proxy-1", &p.Proxy1}, {"caravan-proxy-1-admin", &p.Proxy1Admin},
		{"traefik-proxy-admin", &p.TraefikProxyAdmin},
	}
}

// DefaultPorts are tried first by `caravan dev up`; any that is taken is
// replaced by a free one.
var DefaultPorts = Ports{
	ConsulHTTP: 8500, ConsulServer: 8300, ConsulSerfLAN: 8301, ConsulSerfWAN: 8302,
	NomadHTTP: 4646, NomadRPC: 4647, NomadSerf: 4648,
	TraefikWeb: 8080, TraefikWebsecure: 8443, TraefikAdmin: 8081,
	Pebble: 14000, PebbleMgmt: 15000, ChallDNS: 8053, ChallMgmt: 8055,
	Caravan: 7474,
	Proxy0:  7480, Proxy0Admin: 7481, Proxy1: 7482, Proxy1Admin: 7483,
	TraefikProxyAdmin: 7484,
}

func consulConfig(p Ports) string {
	cfg := map[string]any{
		"bind_addr":      "127.0.0.1",
		"client_addr":    "127.0.0.1",
		"advertise_addr": "127.0.0.1",
		"log_level":      "WARN",
		"ports": map[string]int{
			"http": p.ConsulHTTP, "server": p.ConsulServer,
			"serf_lan": p.ConsulSerfLAN, "serf_wan": p.ConsulSerfWAN,
			"dns": -1, "grpc": -1, "grpc_tls": -1,
		},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return string(b)
}

// FakeGPUs asks the stack for test GPUs: Count devices of Model, reported
// by caravan's fake device plugin.
type FakeGPUs struct {
	Model string
	Count int
}

// nomadAgentHead is the start every Nomad agent's configuration of the
// stacks shares: who wrote it, the agent's name and data directory (left
// out when name is empty: the single-agent stack runs nomad agent -dev),
// and its HTTP, RPC and Serf ports on and advertised at 127.0.0.1.
func nomadAgentHead(writer, name, dataDir string, http, rpc, serf int) string {
	named := ""
	if name != "" {
		named = fmt.Sprintf("name      = %q\ndata_dir  = %q\n", name, dataDir)
	}
	return fmt.Sprintf(`# Written by %s.
%sbind_addr = "127.0.0.1"
log_level = "INFO"

ports {
  http = %d
  rpc  = %d
  serf = %d
}

advertise {
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}

`, writer, named, http, rpc, serf)
}

func nomadConfig(p Ports, stateDir string, gpus *FakeGPUs) string {
	plugin := ""
	if gpus != nil {
		plugin = fmt.Sprintf(`
plugin_dir = %q

plugin %q {
  config {
    model = %q
    count = %d
  }
}
`, filepath.Join(stateDir, "nomad", "plugins"), FakeGPUPlugin.Name, gpus.Model, gpus.Count)
	}
	return nomadAgentHead("caravan dev up", "", "", p.NomadHTTP, p.NomadRPC, p.NomadSerf) + fmt.Sprintf(`consul {
  address = "127.0.0.1:%d"
}

client {
  alloc_dir = %q
  options {
    # Cloud fingerprinters probe metadata services this machine cannot reach
    # (and fail outright when AWS_CA_BUNDLE is set).
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}
%s`, p.ConsulHTTP, filepath.Join(stateDir, "nomad", "alloc"), plugin)
}

// CertResolver is the name of the stack's ACME resolver in Traefik
// (TLS-ALPN-01); DNSCertResolver answers DNS-01, which wildcard names need.
const (
	CertResolver    = "caravan"
	DNSCertResolver = "caravan-dns"
)

// dns01Hook is lego's exec DNS provider hook for the local stack: lego runs
// it as `hook present|cleanup <fqdn> <value>`, and it sets or clears the TXT
// record in pebble-challtestsrv, which Pebble asks when it validates.
func dns01Hook(p Ports) string {
	return fmt.Sprintf(`#!/usr/bin/env node
// Written by caravan dev up: lego's exec DNS-01 hook for pebble-challtestsrv.
const [action, fqdn, value] = process.argv.slice(2);
const path = action === "present" ? "/set-txt" : "/clear-txt";
const body = JSON.stringify(action === "present" ? {host: fqdn, value} : {host: fqdn});
const req = require("http").request({host: "127.0.0.1", port: %d, path, method: "POST",
  headers: {"content-type": "application/json", "content-length": Buffer.byteLength(body)}}, res => {
  res.resume();
  res.on("end", () => process.exit(res.statusCode === 200 ? 0 : 1));
});
req.on("error", e => { console.error(e.message); process.exit(1); });
req.end(body);
`, p.ChallMgmt)
}

// traefikConfig is Traefik's static configuration; consulToken, when set,
// is the ACL token both Consul providers present, and consulCA, when set,
// the CA that verifies Consul's HTTPS (a cluster's agents speak no plain
// HTTP).
func traefikConfig(p Ports, stateDir, consulToken, consulCA string) string {
	token := ""
	if consulToken != "" {
		token = fmt.Sprintf("\n    token: %q", consulToken)
	}
	if consulCA != "" {
		token += fmt.Sprintf("\n    tls:\n      ca: %q", consulCA)
	}
	catalog := strings.ReplaceAll(token, "\n    ", "\n      ")
	if consulCA != "" {
		catalog = "\n      scheme: https" + catalog
	}
	return fmt.Sprintf(`# Written by caravan dev up.
entryPoints:
  web:
    address: "127.0.0.1:%d"
    http:
      redirections:
        entryPoint:
          to: websecure
          scheme: https
  websecure:
    address: "127.0.0.1:%d"
  traefik:
    address: "127.0.0.1:%d"

ping:
  entryPoint: traefik

# Read-only, on the loopback admin entry point: caravan server watches
# its routers and services to see a traffic split applied.
api:
  dashboard: false
  insecure: true

experimental:
  localPlugins:
    %s:
      moduleName: %s

log:
  level: INFO

providers:
  # Routes change within a fraction of a second of a Consul change.
  providersThrottleDuration: 200ms
  consulCatalog:
    endpoint:
      address: "127.0.0.1:%d"%s
    exposedByDefault: false
    watch: true
    stale: false
  # Traffic splits of canary and blue-green rollouts, which caravan
  # publishes under traefik/ in Consul KV.
  consul:
    rootKey: traefik
    endpoints: ["127.0.0.1:%d"]%s

certificatesResolvers:
  %s:
    acme:
      email: "dev@caravan.localhost"
      storage: %q
      caServer: "https://127.0.0.1:%d/dir"
      tlsChallenge: {}
  %s:
    acme:
      email: "dev@caravan.localhost"
      storage: %q
      caServer: "https://127.0.0.1:%d/dir"
      dnsChallenge:
        provider: exec
        resolvers: ["127.0.0.1:%d"]
        propagation:
          # challtestsrv is Pebble's only DNS: nothing to propagate.
          disableChecks: true
`, p.TraefikWeb, p.TraefikWebsecure, p.TraefikAdmin, BodyLimitPlugin, bodyLimitModule, p.ConsulHTTP, catalog, p.ConsulHTTP, token, CertResolver,
		filepath.Join(stateDir, "traefik", "acme.json"), p.Pebble,
		DNSCertResolver, filepath.Join(stateDir, "traefik", "acme-dns.json"), p.Pebble, p.ChallDNS)
}

func pebbleConfig(p Ports, stateDir string) string {
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", p.Pebble),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", p.PebbleMgmt),
		"certificate":                    filepath.Join(stateDir, "pebble", "cert.pem"),
		"privateKey":                     filepath.Join(stateDir, "pebble", "key.pem"),
		"httpPort":                       p.TraefikWeb,
		"tlsPort":                        p.TraefikWebsecure,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return string(b)
}

func addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
