package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/proxy"
	nomad "github.com/hashicorp/nomad/api"
)

// TestClusterDeploy: an app of two containers deploys through the first
// caravan server, lands on both Nomad clients, answers over HTTPS, and a
// redeploy through the second caravan server (on another Nomad server)
// serves the new version.
func TestClusterDeploy(t *testing.T) {
	const job = "e2e--spread"
	purge(t, job)
	res := deploy(t, env.servers[0], "spread.hcl", nodeServer("spread", "v1\n", 2), api.DeployBody{})
	t.Logf("deployed version %d in %s", res.Version, res.Duration.Round(time.Millisecond))
	answers(t, res.Functions[0].URL, "v1\n")
	on, err := onNodes(job)
	if err != nil {
		t.Fatal(err)
	}
	if on["nomad-client-0"] != 1 || on["nomad-client-1"] != 1 {
		t.Errorf("containers per client: %v, want one on each", on)
	}
	res = deploy(t, env.servers[1], "spread.hcl", nodeServer("spread", "v2\n", 2), api.DeployBody{})
	t.Logf("redeployed through the second server: version %d in %s", res.Version, res.Duration.Round(time.Millisecond))
	if res.Version != 2 {
		t.Errorf("version %d, want 2", res.Version)
	}
	answers(t, res.Functions[0].URL, "v2\n")
}

// TestClusterRollingUnderLoad: rolling redeploys under bounded load on
// the cluster fail no request.
func TestClusterRollingUnderLoad(t *testing.T) {
	const app, job = "steady", "e2e--steady"
	purge(t, job)
	first := deploy(t, env.client, "steady.hcl", nodeServer(app, "v0\n", 2), api.DeployBody{})
	url := first.Functions[0].URL
	answers(t, url, "v0\n")
	stop := make(chan struct{})
	began := time.Now()
	l := runLoad(context.Background(), url+"/", 50, stop)
	for i := 1; i <= 3; i++ {
		// Alternate servers: either can drive a rollout.
		res := deploy(t, env.servers[i%2], "steady.hcl", nodeServer(app, fmt.Sprintf("v%d\n", i), 2), api.DeployBody{Strategy: "rolling"})
		t.Logf("redeploy %d through server %d: version %d in %s", i, i%2, res.Version, res.Duration.Round(time.Millisecond))
	}
	answers(t, url, "v3\n")
	close(stop)
	<-l.Done
	elapsed := time.Since(began)
	sent, failed := l.Sent.Load(), l.Failed.Load()
	t.Logf("load: %d requests in %s (%.0f/s), %d failed", sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), failed)
	if failed != 0 {
		t.Fatalf("%d of %d requests failed across 3 rolling redeploys; first: %v", failed, sent, l.FirstErrors())
	}
}

var urlRE = regexp.MustCompile(`https://\S+`)

// TestClusterBundleOnSecondClient: with the first client ineligible, a
// bundled app lands on the second, which fetches the bundle from caravan
// server and runs it from its own task directory.
func TestClusterBundleOnSecondClient(t *testing.T) {
	const job = "e2e--elsewhere"
	first, second := env.nodes["nomad-client-0"], env.nodes["nomad-client-1"]
	eligible := func() {
		if _, err := env.nomad.Nodes().ToggleEligibility(first, true, nil); err != nil {
			t.Logf("making the first client eligible again: %v", err)
		}
	}
	t.Cleanup(eligible)
	purge(t, job)
	if _, err := env.nomad.Nodes().ToggleEligibility(first, false, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	js := `require("http").createServer((q, s) => s.end(__dirname + " " + require("fs").readFileSync(__dirname + "/msg.txt", "utf8"))).listen(process.env.PORT, process.env.HOST);`
	os.WriteFile(filepath.Join(dir, "server.js"), []byte(js), 0o644)
	os.WriteFile(filepath.Join(dir, "msg.txt"), []byte("from the bundle\n"), 0o644)
	path := filepath.Join(dir, "elsewhere.hcl")
	os.WriteFile(path, []byte(`app "elsewhere" {
  workspace = "e2e"
  function "web" {
    command = "node"
    args    = ["${spec_dir}/server.js"]
    web {}
  }
}
`), 0o644)
	out, code := runCLI(t, "deploy", path)
	eligible()
	if code != 0 {
		t.Fatalf("deploy: exit %d\n%s", code, out)
	}
	url := urlRE.FindString(out)
	clientDir := env.stack.Cluster.NomadClients[1].Dir
	eventually(t, 30*time.Second, "the function answers from the second client's task directory", func() error {
		status, body, err := get(url)
		if err != nil {
			return err
		}
		if status != 200 || !strings.HasPrefix(body, clientDir+"/") || !strings.HasSuffix(body, "/web/local/bundle from the bundle\n") {
			return fmt.Errorf("%d %q, want the bundle under %s", status, body, clientDir)
		}
		return nil
	})
	allocs, _, err := env.nomad.Jobs().Allocations(job, false, inNamespace(job))
	if err != nil || len(allocs) != 1 || allocs[0].NodeID != second {
		t.Fatalf("allocations %v, %v; want one on the second client %s", allocs, err, second)
	}
}

// TestClusterTenancy: a token of another workspace neither lists nor
// reads workspace e2e's apps, nor deploys into it.
func TestClusterTenancy(t *testing.T) {
	const job = "e2e--mine"
	purge(t, job)
	deploy(t, env.client, "mine.hcl", nodeServer("mine", "mine\n", 1), api.DeployBody{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nt, err := env.client.CreateToken(ctx, "intruder", "other")
	if err != nil {
		t.Fatal(err)
	}
	other := &api.Client{Addr: env.servers[1].Addr, Token: nt.Token}
	apps, err := other.Apps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range apps {
		if a.Workspace != "other" {
			t.Errorf("workspace other's token lists %s/%s", a.Workspace, a.App)
		}
	}
	if _, err := other.History(ctx, "mine", api.ChangeBody{Workspace: "e2e"}); !isForbidden(err) {
		t.Errorf("workspace other's token reads e2e/mine's history: %v, want forbidden", err)
	}
	_, err = other.Deploy(ctx, "mine.hcl", []byte(nodeServer("mine", "stolen\n", 1)), 0)
	if !isForbidden(err) {
		t.Errorf("workspace other's token deploys into e2e: %v, want forbidden", err)
	}
	t.Logf("another workspace's token: %v", err)
}

func isForbidden(err error) bool {
	var ae *api.APIError
	return errors.As(err, &ae) && (ae.Status == 403 || ae.Status == 404)
}

// TestClusterMissingPermission: a caravan server whose Nomad token may
// only read cannot deploy, and says why; the cluster's ACLs, not caravan,
// refuse it.
func TestClusterMissingPermission(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pol := &nomad.ACLPolicy{Name: "e2e-read-only", Rules: `namespace "*" { policy = "read" }
node { policy = "read" }
agent { policy = "read" }`}
	if _, err := env.nomad.ACLPolicies().Upsert(pol, nil); err != nil {
		t.Fatal(err)
	}
	tok, _, err := env.nomad.ACLTokens().Create(&nomad.ACLToken{Name: "e2e-read-only", Type: "client", Policies: []string{pol.Name}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.nomad.ACLTokens().Delete(tok.AccessorID, nil)
		env.nomad.ACLPolicies().Delete(pol.Name, nil)
	})
	file := filepath.Join(env.stack.StateDir, "nomad-read-only.token")
	if err := os.WriteFile(file, []byte(tok.SecretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cl, err := startCaravan(ctx, "caravan-server-read-only", freeAddr(), strings.TrimPrefix(env.client.Addr, "http://"), 2,
		file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.stack.Stop("caravan-server-read-only") })
	cl.Token = env.client.Token
	purge(t, "e2e--denied")
	_, err = cl.Deploy(ctx, "denied.hcl", []byte(nodeServer("denied", "no\n", 1)), 0)
	t.Logf("deploy with a read-only Nomad token: %v", err)
	if err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Fatalf("deploy with a read-only Nomad token: %v, want Nomad's permission denied", err)
	}
	if _, _, err := env.nomad.Jobs().Info("e2e--denied", inNamespace("e2e--denied")); err == nil {
		t.Fatal("the job was registered anyway")
	}
}

// TestClusterConsulTLSOnly: every Consul server's HTTP port speaks HTTPS
// only. A plain HTTP request gets no answer from Consul (Go's TLS server
// turns it away with a 400, or the connection fails); the same request
// over HTTPS, verified by the cluster's CA, gets one. Everything else in
// these tests (caravan servers, proxies, Traefik, Nomad's service
// registrations) reaches Consul that way.
func TestClusterConsulTLSOnly(t *testing.T) {
	c := env.stack.Cluster
	pem, err := os.ReadFile(c.CACert())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("the cluster's CA does not parse")
	}
	verified := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	plain := &http.Client{Timeout: 5 * time.Second}
	for _, n := range c.ConsulServers {
		hostPort := fmt.Sprintf("127.0.0.1:%d", n.HTTP)
		if resp, err := plain.Get("http://" + hostPort + "/v1/status/leader"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("%s answered plain HTTP: %d %q", n.Name, resp.StatusCode, body)
			} else {
				t.Logf("%s turned plain HTTP away: %d %q", n.Name, resp.StatusCode, strings.TrimSpace(string(body)))
			}
		} else {
			t.Logf("%s turned plain HTTP away: %v", n.Name, err)
		}
		resp, err := verified.Get("https://" + hostPort + "/v1/status/leader")
		if err != nil {
			t.Errorf("%s over HTTPS with the cluster's CA: %v", n.Name, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s over HTTPS: status %d", n.Name, resp.StatusCode)
		}
	}
}

// TestClusterProxyInTraefik: the cluster's Traefik (caravan's build) runs
// the proxy inside it with deploy/acl's caravan-proxy Consul token over
// Consul's TLS: it registers and passes its check, and caravan server
// leaves it out of the proxies' failover chain.
func TestClusterProxyInTraefik(t *testing.T) {
	admin := fmt.Sprintf("http://127.0.0.1:%d", env.stack.Ports.TraefikProxyAdmin)
	deadline := time.Now().Add(time.Minute)
	for {
		entries, _, err := env.consul.Health().Service(proxy.ServiceName, "", true, nil)
		found := false
		for _, e := range entries {
			found = found || (e.Service.Meta[proxy.MetaInTraefik] == "true" && e.Service.Meta[proxy.MetaAdmin] == admin)
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no passing proxy inside Traefik at %s after a minute (%d passing proxies, %v)", admin, len(entries), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	pairs, _, err := env.consul.KV().List("traefik/http/services/caravan-prox", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		if strings.Contains(string(p.Value), fmt.Sprintf(":%d", env.stack.Ports.TraefikProxyAdmin)) {
			t.Errorf("the failover chain lists the proxy inside Traefik: %s = %s", p.Key, p.Value)
		}
	}
}
