package cluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/e2e/e2ekit"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/proxy"
	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// systemNamespace is the Nomad namespace of caravan's own jobs
// (deploy/nomad's default).
const systemNamespace = "caravan-system"

// jobFile reads one of deploy/nomad's job files.
func jobFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nomad", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// parseJob parses a job file as `nomad job run -var-file` would, with
// vars as the variables file's content, by the cluster's own parser.
func parseJob(t *testing.T, name, vars string) *nomad.Job {
	t.Helper()
	job, err := env.nomad.Jobs().ParseHCLOpts(&nomad.JobsParseRequest{JobHCL: jobFile(t, name), Variables: vars, Canonicalize: true})
	if err != nil {
		t.Fatalf("parsing deploy/nomad/%s: %v", name, err)
	}
	return job
}

// proxyVars are the variables of caravan-proxy.nomad.hcl on this cluster:
// raw_exec and the caravan binary the tests built, already on the clients.
func proxyVars() string {
	return fmt.Sprintf("driver = \"raw_exec\"\ncaravan_command = %q\nconsul_addr = %q\ndomain = %q\n",
		env.bin, env.stack.ConsulAddr(), env.stack.Domain)
}

// TestClusterJobFilesPlan: every job file of deploy/nomad parses with its
// variables filled in and plans on the cluster. The jobs needing docker
// (Traefik, NATS by default) cannot be placed on this cluster's raw_exec
// clients: their plans say so, and nothing else; Traefik's raw_exec variant
// (a key "FILE VARIANT") plans on one client (NATS's raw_exec variant runs
// in TestClusterNATSJob).
func TestClusterJobFilesPlan(t *testing.T) {
	ctx := context.Background()
	if err := env.stack.CreateNamespaces(ctx, systemNamespace); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"caravan-proxy.nomad.hcl": proxyVars(),
		"caravan-server.nomad.hcl": fmt.Sprintf("driver = \"raw_exec\"\ncaravan_command = %q\ncaravan_url = \"http://caravan.example.com:7474\"\n"+
			"domain = %q\nnats_url = \"nats://nats.example.com:4222\"\nbundle_s3_endpoint = \"s3.example.com\"\nbundle_s3_bucket = \"bundles\"\n"+
			"workspace_policy = \"workspace \\\"*\\\" {\\n  drivers = [\\\"exec\\\"]\\n}\\n\"\n", env.bin, env.stack.Domain),
		"traefik.nomad.hcl": "acme_email = \"ops@example.com\"\ndns_provider = \"cloudflare\"\n",
		"nats.nomad.hcl":    natsVars(natsNodes(t), ""),
	}
	// raw_exec on one client, as TestClusterSelfHostedTraefik runs it.
	files["traefik.nomad.hcl raw_exec"] = traefikVars(t, "80", "443", "8081", "https://example.com/bodylimit.tar.gz", onFirstClient())
	needsDocker := map[string]bool{"traefik.nomad.hcl": true, "nats.nomad.hcl": true}
	for name, vars := range files {
		t.Run(name, func(t *testing.T) {
			file, _, _ := strings.Cut(name, " ")
			job := parseJob(t, file, vars)
			if *job.Namespace != systemNamespace {
				t.Errorf("namespace %q, want %q", *job.Namespace, systemNamespace)
			}
			plan, _, err := env.nomad.Jobs().Plan(job, false, &nomad.WriteOptions{Namespace: systemNamespace})
			if err != nil {
				t.Fatalf("planning %s: %v", name, err)
			}
			for group, failed := range plan.FailedTGAllocs {
				if !needsDocker[name] {
					t.Errorf("group %s cannot be placed: %+v", group, failed)
					continue
				}
				if failed.ConstraintFiltered["missing drivers"] == 0 {
					t.Errorf("group %s cannot be placed, not for want of docker: %+v", group, failed.ConstraintFiltered)
				}
			}
			t.Logf("%s: %s, %d groups, plan: %d placement failures", name, *job.ID, len(job.TaskGroups), len(plan.FailedTGAllocs))
		})
	}
}

// TestClusterSelfHosted: deploy/nomad/caravan-proxy.nomad.hcl runs on the
// cluster as a system job, its Consul token (deploy/acl's caravan-proxy
// policy) read from its Nomad Variable; Nomad registers one caravan-proxy
// per client in Consul, each passes its check and answers its load
// report on the admin address its meta names.
func TestClusterSelfHosted(t *testing.T) {
	ctx := context.Background()
	s := env.stack
	if err := s.CreateNamespaces(ctx, systemNamespace); err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(s.Cluster.TokenFile("consul", "caravan-proxy"))
	if err != nil {
		t.Fatal(err)
	}
	// Consul speaks HTTPS only: the proxy verifies it by the cluster's CA.
	ca, err := os.ReadFile(s.Cluster.CACert())
	if err != nil {
		t.Fatal(err)
	}
	if !s.Cluster.Tokens["consul/caravan-proxy"] {
		t.Fatal("the stack made no caravan-proxy token of deploy/acl's policy")
	}
	w := &nomad.WriteOptions{Namespace: systemNamespace}
	if _, _, err := env.nomad.Variables().Create(&nomad.Variable{Namespace: systemNamespace, Path: "nomad/jobs/caravan-proxy",
		Items: map[string]string{"consul_token": strings.TrimSpace(string(token)), "consul_ca_pem": string(ca)}}, w); err != nil {
		t.Fatal(err)
	}
	job := parseJob(t, "caravan-proxy.nomad.hcl", proxyVars())
	began := time.Now()
	if _, _, err := env.nomad.Jobs().Register(job, w); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, _, err := env.nomad.Jobs().Deregister(*job.ID, true, w); err != nil {
			t.Logf("purging %s: %v", *job.ID, err)
		}
		if _, err := env.nomad.Variables().Delete("nomad/jobs/caravan-proxy", w); err != nil {
			t.Logf("deleting its Variable: %v", err)
		}
	})

	t.Cleanup(func() {
		if t.Failed() {
			logTasks(t, *job.ID, "proxy")
		}
	})

	// The job's instances in Consul: those whose admin address is one of
	// its allocations' (the stack's own proxies are caravan-proxy too).
	var admins []string
	eventually(t, 2*time.Minute, "caravan-proxy of the job passing in Consul on both clients", func() error {
		allocs, _, err := env.nomad.Jobs().Allocations(*job.ID, false, &nomad.QueryOptions{Namespace: systemNamespace})
		if err != nil {
			return err
		}
		mine := map[string]bool{}
		for _, a := range allocs {
			if a.ClientStatus != "running" {
				continue
			}
			full, _, err := env.nomad.Allocations().Info(a.ID, &nomad.QueryOptions{Namespace: systemNamespace})
			if err != nil {
				return err
			}
			for _, n := range full.AllocatedResources.Shared.Networks {
				for _, p := range n.DynamicPorts {
					if p.Label == "admin" {
						mine[fmt.Sprintf("http://%s:%d", n.IP, p.Value)] = true
					}
				}
			}
		}
		entries, _, err := env.consul.Health().Service(proxy.ServiceName, "", true, &consul.QueryOptions{})
		if err != nil {
			return err
		}
		admins = admins[:0]
		for _, e := range entries {
			if a := e.Service.Meta[proxy.MetaAdmin]; mine[a] {
				admins = append(admins, a)
			}
		}
		if len(mine) != len(env.nodes) || len(admins) != len(env.nodes) {
			return fmt.Errorf("%d allocations running, %d of them passing in Consul; want %d", len(mine), len(admins), len(env.nodes))
		}
		return nil
	})
	t.Logf("caravan-proxy on %d clients, passing in Consul %s after the job's registration", len(admins), time.Since(began).Round(100*time.Millisecond))
	for _, a := range admins {
		resp, err := http.Get(a + proxy.LoadPath)
		if err != nil {
			t.Fatal(err)
		}
		var report proxy.Report
		err = json.NewDecoder(resp.Body).Decode(&report)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil {
			t.Errorf("GET %s%s: %d, %v", a, proxy.LoadPath, resp.StatusCode, err)
		}
	}
}

// logTasks logs the last stderr of task in each allocation of job (in
// caravan's own namespace), for a failed test.
func logTasks(t *testing.T, job, task string) {
	allocs, _, err := env.nomad.Jobs().Allocations(job, true, &nomad.QueryOptions{Namespace: systemNamespace})
	if err != nil {
		t.Logf("allocations of %s: %v", job, err)
		return
	}
	for _, a := range allocs {
		full, _, err := env.nomad.Allocations().Info(a.ID, &nomad.QueryOptions{Namespace: systemNamespace})
		if err != nil {
			t.Logf("allocation %s: %v", a.ID, err)
			continue
		}
		if ts := full.TaskStates[task]; ts != nil {
			for _, e := range ts.Events {
				t.Logf("%s %s: %s %s %s", a.ID[:8], task, e.Type, e.DisplayMessage, e.DriverError)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		frames, errs := env.nomad.AllocFS().Logs(full, false, task, "stderr", "end", 4096, ctx.Done(), &nomad.QueryOptions{Namespace: systemNamespace})
		var out []byte
	read:
		for {
			select {
			case f, ok := <-frames:
				if !ok {
					break read
				}
				out = append(out, f.Data...)
			case err := <-errs:
				if err != nil {
					t.Logf("stderr of %s: %v", a.ID[:8], err)
				}
				break read
			case <-ctx.Done():
				break read
			}
		}
		cancel()
		t.Logf("stderr of %s %s:\n%s", a.ID[:8], task, out)
	}
}

// TestClusterSelfHostedServer: deploy/nomad/caravan-server.nomad.hcl runs
// on the cluster (one instance: the stack's clients share 127.0.0.1, so
// two would want the same static port), its Nomad and Consul tokens of
// deploy/acl's policies, Nomad's CA and the NATS token read from its
// Nomad Variable; an app deployed through it answers over HTTPS. It
// shares the stack's servers' address (caravan_url), NATS and bundle
// directory, as the servers of one cluster must.
func TestClusterSelfHostedServer(t *testing.T) {
	ctx := context.Background()
	s := env.stack
	if err := s.CreateNamespaces(ctx, systemNamespace); err != nil {
		t.Fatal(err)
	}
	natsDir := filepath.Join(s.StateDir, "nats")
	w := &nomad.WriteOptions{Namespace: systemNamespace}
	if _, _, err := env.nomad.Variables().Create(&nomad.Variable{Namespace: systemNamespace, Path: "nomad/jobs/caravan-server",
		Items: map[string]string{
			"nomad_token":   readTrimmed(t, s.Cluster.TokenFile("nomad", "caravan-server")),
			"consul_token":  readTrimmed(t, s.Cluster.TokenFile("consul", "caravan-server")),
			"nats_token":    readTrimmed(t, filepath.Join(natsDir, "token")),
			"nomad_ca_pem":  readTrimmed(t, s.Cluster.CACert()),
			"consul_ca_pem": readTrimmed(t, s.Cluster.CACert()),
		}}, w); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr()
	_, port, _ := strings.Cut(listen, ":")
	vars := fmt.Sprintf(`driver = "raw_exec"
caravan_command = %q
count = 1
port = %s
caravan_url = %q
nomad_addr = "https://127.0.0.1:%d"
consul_addr = %q
domain = %q
https_port = %d
traefik_api = %q
nats_url = "nats://%s"
bundle_dir = %q
workspace_policy = %q
`, env.bin, port, env.servers[0].Addr, s.Cluster.NomadServers[2].HTTP, s.ConsulAddr(), s.Domain, s.Ports.TraefikWebsecure,
		s.TraefikAPI(), readTrimmed(t, filepath.Join(natsDir, "listen")), filepath.Join(s.StateDir, "bundles"), clusterPolicy)
	job := parseJob(t, "caravan-server.nomad.hcl", vars)
	began := time.Now()
	if _, _, err := env.nomad.Jobs().Register(job, w); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTasks(t, *job.ID, "server")
		}
		if _, _, err := env.nomad.Jobs().Deregister(*job.ID, true, w); err != nil {
			t.Logf("purging %s: %v", *job.ID, err)
		}
		if _, err := env.nomad.Variables().Delete("nomad/jobs/caravan-server", w); err != nil {
			t.Logf("deleting its Variable: %v", err)
		}
	})
	// It listens on its allocation's address (the client's fingerprinted
	// IP, as Nomad gives static ports), which the test reads from Nomad.
	cl := &api.Client{Token: env.client.Token}
	eventually(t, 2*time.Minute, "caravan server of the job answering /v1/health", func() error {
		if cl.Addr == "" {
			allocs, _, err := env.nomad.Jobs().Allocations(*job.ID, false, &nomad.QueryOptions{Namespace: systemNamespace})
			if err != nil {
				return err
			}
			for _, a := range allocs {
				full, _, err := env.nomad.Allocations().Info(a.ID, &nomad.QueryOptions{Namespace: systemNamespace})
				if err != nil {
					return err
				}
				for _, n := range full.AllocatedResources.Shared.Networks {
					cl.Addr = "http://" + n.IP + ":" + port
				}
			}
			if cl.Addr == "" {
				return fmt.Errorf("no allocation of %s has an address yet", *job.ID)
			}
		}
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return cl.Health(hctx)
	})
	t.Logf("caravan server of the job healthy %s after its registration", time.Since(began).Round(100*time.Millisecond))

	const job2 = "e2e--selfhosted"
	purge(t, job2)
	res := deploy(t, cl, "selfhosted.hcl", nodeServer("selfhosted", "through the job\n", 1), api.DeployBody{})
	t.Logf("deployed through the job's server: version %d in %s", res.Version, res.Duration.Round(time.Millisecond))
	answers(t, res.Functions[0].URL, "through the job\n")
}

// traefikVars are the variables of traefik.nomad.hcl on this cluster:
// raw_exec and the stack's Traefik binary, the given ports (free ones:
// the stack's Traefik holds its own), Consul as host:port (Traefik's
// Consul client takes no scheme there; consul_ca_pem makes it HTTPS),
// Pebble as the ACME CA and its
// challenge DNS server answering the wildcard's DNS-01 through the
// stack's exec hook, the plugin's go-getter URL, and constraints (HCL
// of a list of constraint objects).
func traefikVars(t *testing.T, web, websecure, admin, plugin, constraints string) string {
	t.Helper()
	s := env.stack
	traefik := s.Proc("traefik")
	if traefik == nil {
		t.Fatal("the stack runs no traefik")
	}
	return fmt.Sprintf(`driver = "raw_exec"
traefik_command = %q
web_port = %s
websecure_port = %s
admin_port = %s
consul_addr = %q
acme_email = "ops@caravan.localhost"
acme_ca_server = "https://127.0.0.1:%d/dir"
dns_provider = "exec"
dns_resolvers = [%q]
dns_propagation_checks = false
bodylimit_plugin_source = %q
constraints = %s
`, traefik.Args[0], web, websecure, admin, fmt.Sprintf("127.0.0.1:%d", s.Ports.ConsulHTTP), s.Ports.Pebble, s.ChallDNSAddr(), plugin, constraints)
}

// servePlugin serves this tree's body-limit plugin as a .tar.gz until
// the test ends and returns its URL: Nomad's artifacts fetch no local
// paths (its go-getter has no file getter), so the job fetches it over
// HTTP, as it would a release's archive.
func servePlugin(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "devstack", "plugin", "bodylimit")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: e.Name(), Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(buf.Bytes())
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/bodylimit.tar.gz"
}

// logStdout logs the last stdout of task in each allocation of job (in
// caravan's own namespace), where Traefik writes its log.
func logStdout(t *testing.T, job, task string) {
	allocs, _, err := env.nomad.Jobs().Allocations(job, true, &nomad.QueryOptions{Namespace: systemNamespace})
	if err != nil {
		t.Logf("allocations of %s: %v", job, err)
		return
	}
	for _, a := range allocs {
		out, err := stdoutOf(a.ID, task)
		t.Logf("stdout of %s %s (%v):\n%s", a.ID[:8], task, err, out)
	}
}

// stdoutOf is the last 8 KiB of task's stdout in allocation id (in
// caravan's own namespace).
func stdoutOf(id, task string) (string, error) {
	q := &nomad.QueryOptions{Namespace: systemNamespace}
	full, _, err := env.nomad.Allocations().Info(id, q)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	frames, errs := env.nomad.AllocFS().Logs(full, false, task, "stdout", "end", 8192, ctx.Done(), q)
	var out []byte
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return string(out), nil
			}
			out = append(out, f.Data...)
		case err := <-errs:
			return string(out), err
		case <-ctx.Done():
			return string(out), nil
		}
	}
}

// firstClient is the name of the stack's first Nomad client (by name).
func firstClient() string {
	var names []string
	for name := range env.nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names[0]
}

// onFirstClient is traefik.nomad.hcl's constraints (HCL) that place it on
// firstClient only.
func onFirstClient() string {
	return fmt.Sprintf(`[{attribute = "$${node.unique.name}", operator = "=", value = %q}]`, firstClient())
}

// TestClusterSelfHostedTraefik: deploy/nomad/traefik.nomad.hcl runs on
// the cluster with raw_exec (the stack's Traefik binary), its Consul
// token of deploy/acl's consul-traefik policy, Consul's CA, Pebble's CA
// and the DNS-01 hook read from its Nomad Variable; it answers /ping,
// gets the wildcard certificate from Pebble by DNS-01, and serves an app
// deployed through the stack's caravan server over HTTPS with it; with a
// wrong Consul token it serves the app no more and logs why.
//
// A system job places one Traefik on every client, and each binds the
// same static ports; the stack's two clients are one host with one set
// of addresses, so the second would find them taken. The job is constrained to the first
// client (the constraints variable, as an operator narrows the edge
// clients): per-node ports would not be sound, since an edge's ports
// are what *.domain and the ACME CA's TLS-ALPN-01 reach.
func TestClusterSelfHostedTraefik(t *testing.T) {
	ctx := context.Background()
	s := env.stack
	if err := s.CreateNamespaces(ctx, systemNamespace); err != nil {
		t.Fatal(err)
	}
	if !s.Cluster.Tokens["consul/traefik"] {
		t.Fatal("the stack made no traefik token of deploy/acl's policy")
	}
	w := &nomad.WriteOptions{Namespace: systemNamespace}
	items := map[string]string{
		"consul_token":  readTrimmed(t, s.Cluster.TokenFile("consul", "traefik")),
		"consul_ca_pem": readTrimmed(t, s.Cluster.CACert()),
		"acme_ca_pem":   readTrimmed(t, filepath.Join(s.StateDir, "pebble", "ca.pem")),
		"EXEC_PATH":     filepath.Join(s.StateDir, "traefik", "dns01-hook"),
	}
	if _, _, err := env.nomad.Variables().Create(&nomad.Variable{Namespace: systemNamespace, Path: "nomad/jobs/traefik", Items: items}, w); err != nil {
		t.Fatal(err)
	}
	port := func() string { _, p, _ := strings.Cut(freeAddr(), ":"); return p }
	web, websecure, admin := port(), port(), port()
	job := parseJob(t, "traefik.nomad.hcl", traefikVars(t, web, websecure, admin, servePlugin(t), onFirstClient()))
	began := time.Now()
	if _, _, err := env.nomad.Jobs().Register(job, w); err != nil {
		t.Fatal(err)
	}
	var ip, alloc string
	t.Cleanup(func() {
		if t.Failed() {
			logTasks(t, *job.ID, "traefik")
			logStdout(t, *job.ID, "traefik")
			if ip != "" {
				_, routers, err := e2ekit.Get(http.DefaultClient, "http://"+ip+":"+admin+"/api/http/routers")
				t.Logf("routers of the job's Traefik: %s %v", routers, err)
			}
		}
		if _, _, err := env.nomad.Jobs().Deregister(*job.ID, true, w); err != nil {
			t.Logf("purging %s: %v", *job.ID, err)
		}
		if _, err := env.nomad.Variables().Delete("nomad/jobs/traefik", w); err != nil {
			t.Logf("deleting its Variable: %v", err)
		}
	})

	// Its ports are bound on its allocation's address (the client's
	// fingerprinted IP), which the test reads from Nomad.
	eventually(t, 2*time.Minute, "Traefik of the job answering /ping", func() error {
		if ip == "" {
			allocs, _, err := env.nomad.Jobs().Allocations(*job.ID, false, &nomad.QueryOptions{Namespace: systemNamespace})
			if err != nil {
				return err
			}
			if len(allocs) != 1 {
				return fmt.Errorf("%d allocations, want 1 (on %s only)", len(allocs), firstClient())
			}
			full, _, err := env.nomad.Allocations().Info(allocs[0].ID, &nomad.QueryOptions{Namespace: systemNamespace})
			if err != nil {
				return err
			}
			for _, n := range full.AllocatedResources.Shared.Networks {
				ip = n.IP
			}
			if ip == "" {
				return fmt.Errorf("allocation %s has no address yet", allocs[0].ID)
			}
			alloc = allocs[0].ID
		}
		status, _, err := e2ekit.Get(http.DefaultClient, "http://"+ip+":"+admin+"/ping")
		if err == nil && status != 200 {
			err = fmt.Errorf("status %d", status)
		}
		return err
	})
	t.Logf("Traefik of the job answering /ping %s after its registration", time.Since(began).Round(100*time.Millisecond))

	const app = "e2e--jobtraefik"
	purge(t, app)
	res := deploy(t, env.client, "jobtraefik.hcl", nodeServer("jobtraefik", "through the job's traefik\n", 1), api.DeployBody{})
	t.Logf("deployed: version %d in %s", res.Version, res.Duration.Round(time.Millisecond))
	// The app's hostname (its URL names the stack's HTTPS port) through
	// the job's websecure entry point, trusting Pebble's root: the
	// wildcard certificate the job's Traefik got by DNS-01.
	through := orchestrator.ProxyClient(ip+":"+websecure, env.roots)
	e2ekit.Answers(t, through, 60*time.Second, res.Functions[0].URL, "through the job's traefik\n")
	t.Logf("the app answered through the job's Traefik %s after its registration", time.Since(began).Round(100*time.Millisecond))

	// A wrong Consul token in the Variable: Nomad renders the
	// configuration anew and restarts Traefik, which then routes nothing
	// of Consul's and says why in its log. Its check (/ping) still
	// passes: the log and the missing routes are what show it.
	items["consul_token"] = "00000000-0000-4000-8000-000000000000"
	if _, _, err := env.nomad.Variables().Update(&nomad.Variable{Namespace: systemNamespace, Path: "nomad/jobs/traefik", Items: items}, w); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the job's Traefik, with a wrong Consul token, routing nothing and logging Consul's refusal", func() error {
		out, err := stdoutOf(alloc, "traefik")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "ACL not found") {
			return errors.New("its log names no Consul ACL error yet")
		}
		status, _, err := e2ekit.Get(through, res.Functions[0].URL)
		if err == nil && status != http.StatusNotFound {
			err = fmt.Errorf("the app answers %d, want 404", status)
		}
		return err
	})
}

// readTrimmed is the file at path without surrounding space (a token, a
// PEM, an address the stack wrote).
func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
