package server

import (
	"testing"

	"github.com/caravanhq/caravan/proxy"
	consul "github.com/hashicorp/consul/api"
)

// TestProxyServersLeaveOutTheProxyInTraefik: the failover chain lists
// the standalone proxies by data URL, and not the proxy inside Traefik's
// process, which has no data address (its routers reach it through the
// plugin).
func TestProxyServersLeaveOutTheProxyInTraefik(t *testing.T) {
	entry := func(addr string, port int, meta map[string]string) *consul.ServiceEntry {
		return &consul.ServiceEntry{Service: &consul.AgentService{Address: addr, Port: port, Meta: meta}}
	}
	got := proxyServers([]*consul.ServiceEntry{
		entry("127.0.0.1", 7482, map[string]string{proxy.MetaAdmin: "http://127.0.0.1:7483"}),
		entry("127.0.0.1", 7484, map[string]string{proxy.MetaAdmin: "http://127.0.0.1:7484", proxy.MetaInTraefik: "true"}),
		entry("127.0.0.1", 7480, map[string]string{proxy.MetaAdmin: "http://127.0.0.1:7481"}),
		{Service: nil},
	})
	if len(got) != 2 || got[0].URL != "http://127.0.0.1:7480" || got[0].HealthPort != 7481 || got[1].URL != "http://127.0.0.1:7482" {
		t.Errorf("proxyServers = %+v, want the two standalone proxies, by URL", got)
	}
}

func TestPassingInTraefik(t *testing.T) {
	check := func(status string) consul.HealthChecks { return consul.HealthChecks{{Status: status}} }
	in := map[string]string{proxy.MetaInTraefik: "true"}
	entries := []*consul.ServiceEntry{
		{Service: &consul.AgentService{Meta: in}, Checks: check(consul.HealthPassing)},
		{Service: &consul.AgentService{Meta: in}, Checks: check(consul.HealthCritical)},
		{Service: &consul.AgentService{Meta: map[string]string{}}, Checks: check(consul.HealthPassing)},
		{Service: nil},
	}
	if n := passingInTraefik(entries); n != 1 {
		t.Errorf("passingInTraefik = %d, want 1 (the passing one inside Traefik)", n)
	}
}
