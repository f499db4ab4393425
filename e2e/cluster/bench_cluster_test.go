//go:build bench

package cluster

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/devstack"
	"github.com/caravanhq/caravan/e2e/e2ekit"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/server"
	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// The cluster's figures (`just cluster-bench`): deploy time of a new app,
// the faults the cluster tests inject, measured and printed, and P6, 100
// apps deployed at once. Each prints what it measured and how; none
// asserts a time.

// untilAnswered is how long after start every url answers 200 with body
// through Traefik over HTTPS verified by the stack's CA (polling every
// 100ms, for at most timeout).
func untilAnswered(start time.Time, timeout time.Duration, urls []string, body string) (time.Duration, error) {
	return untilAnsweredBy(env.https, start, timeout, urls, body)
}

// untilAnsweredBy is untilAnswered through c (another stack's Traefik).
func untilAnsweredBy(c *http.Client, start time.Time, timeout time.Duration, urls []string, body string) (time.Duration, error) {
	deadline := start.Add(timeout)
	pending := slices.Clone(urls)
	for {
		var left []string
		var last error
		for _, u := range pending {
			status, got, err := e2ekit.Get(c, u)
			if err == nil && status == 200 && got == body {
				continue
			}
			if err == nil {
				err = fmt.Errorf("%s: %d %q", u, status, got)
			}
			last = err
			left = append(left, u)
		}
		if pending = left; len(pending) == 0 {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("%d of %d URLs do not answer after %s: %v", len(pending), len(urls), timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// quantiles are the p50 and max of ds.
func quantiles(ds []time.Duration) (p50, max time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2], s[len(s)-1]
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// threeFunctions is a spec of app with three web functions of one
// container each, every one answering body.
func threeFunctions(app, body string) string {
	js := fmt.Sprintf(`require("http").createServer((q, s) => s.end(%s)).listen(process.env.PORT, process.env.HOST);`, strconv.Quote(body))
	var b strings.Builder
	fmt.Fprintf(&b, "app %q {\n  workspace = \"e2e\"\n", app)
	for _, fn := range []string{"a", "b", "c"} {
		fmt.Fprintf(&b, `  function %q {
    command        = "node"
    args           = ["-e", %s]
    min_containers = 1
    resources {
      memory = 64
    }
    web {}
  }
`, fn, strconv.Quote(js))
	}
	b.WriteString("}\n")
	return b.String()
}

// TestBenchClusterDeploy: deploy time on the cluster against the single
// agent, in the same run. It starts the single-agent stack (what `caravan
// dev up` starts: one -dev Nomad agent, one -dev Consul, plain HTTP, no
// ACLs) beside the package's cluster, with one caravan server process of
// the same binary and the same flags but the cluster's (TLS, tokens), and
// deploys a new 3-function app alternately on each, five runs each (the
// first of a pair alternating too, and the cluster's two servers
// alternating), each timed from the deploy request until all three URLs
// answer over TLS verified by that stack's CA.
func TestBenchClusterDeploy(t *testing.T) {
	const runs = 5
	single := startSingle(t)
	type side struct {
		name         string
		deploy       func(i int, app string) *api.DeployResult
		https        *http.Client
		calls, total []time.Duration
	}
	sides := []*side{
		{name: "single agent", https: single.https, deploy: func(i int, app string) *api.DeployResult {
			e2ekit.Purge(t, single.nomad, single.consul, "e2e--"+app)
			return deploy(t, single.client, app+".hcl", threeFunctions(app, "hi\n"), api.DeployBody{})
		}},
		{name: "cluster", https: env.https, deploy: func(i int, app string) *api.DeployResult {
			purge(t, "e2e--"+app)
			return deploy(t, env.servers[i%2], app+".hcl", threeFunctions(app, "hi\n"), api.DeployBody{})
		}},
	}
	for i := range runs {
		order := sides
		if i%2 == 1 {
			order = []*side{sides[1], sides[0]}
		}
		for _, sd := range order {
			app := fmt.Sprintf("benchdeploy%d", i)
			began := time.Now()
			res := sd.deploy(i, app)
			call := time.Since(began)
			var urls []string
			for _, f := range res.Functions {
				urls = append(urls, f.URL)
			}
			if len(urls) != 3 {
				t.Fatalf("%s: %d function URLs, want 3", sd.name, len(urls))
			}
			total, err := untilAnsweredBy(sd.https, began, 2*time.Minute, urls, "hi\n")
			if err != nil {
				t.Fatalf("%s: %v", sd.name, err)
			}
			sd.calls, sd.total = append(sd.calls, call), append(sd.total, total)
			t.Logf("run %d, %s: deploy call %s, all 3 URLs answer after %s", i+1, sd.name, ms(call), ms(total))
		}
	}
	for _, sd := range sides {
		cp50, cmax := quantiles(sd.calls)
		tp50, tmax := quantiles(sd.total)
		t.Logf("FIGURE deploy of a new 3-function app (1 container each, node, raw_exec) on the %s, %d runs alternating with the other stack in the same run: "+
			"until every URL answers 200 over HTTPS verified by the stack's CA (polled every 100ms) p50 %s max %s; the deploy call alone p50 %s max %s",
			sd.name, runs, ms(tp50), ms(tmax), ms(cp50), ms(cmax))
	}
}

// singleStack is the single-agent stack TestBenchClusterDeploy compares
// the cluster with, and its caravan server.
type singleStack struct {
	stack  *devstack.Stack
	client *api.Client
	nomad  *nomad.Client
	consul *consul.Client
	https  *http.Client
}

// startSingle starts the single-agent stack (devstack.Up without Cluster)
// on free ports, and a caravan server process for it with the flags the
// cluster's servers get (startCaravan) less the cluster's own, as `caravan
// dev up` starts its server; both stop when the test ends.
func startSingle(t *testing.T) *singleStack {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	state := t.TempDir()
	tools, err := filepath.Abs("../../tools")
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	s, err := devstack.Up(ctx, devstack.Options{Caravan: env.bin, StateDir: state, RandomPorts: true,
		Installer: &devstack.Installer{ToolsDir: tools, Out: os.Stderr}, Out: io.Discard})
	if err != nil {
		t.Fatalf("starting the single-agent stack: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Down(); err != nil {
			t.Logf("stopping the single-agent stack: %v", err)
		}
	})
	root, err := s.RootCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(root)
	out := &singleStack{stack: s, https: orchestrator.ProxyClient(s.HTTPSAddr(), roots)}
	if out.nomad, err = s.NomadClient(s.NomadAddr()); err != nil {
		t.Fatal(err)
	}
	if out.consul, err = s.ConsulClient(s.ConsulAddr()); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(state, "policy.hcl")
	if err := os.WriteFile(policy, []byte(clusterPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	token, err := (&server.Tokens{KV: server.ConsulKV{KV: out.consul.KV()}}).Create("e2e", "*")
	if err != nil {
		t.Fatal(err)
	}
	listen := strings.TrimPrefix(s.CaravanAddr(), "http://")
	out.client = &api.Client{Addr: "http://" + listen, Token: token}
	err = s.StartProcess(ctx, "caravan-server", listen, append([]string{env.bin, "server", "--log-level", "debug",
		"--listen", listen, "--nomad-addr", s.NomadAddr(), "--consul-addr", s.ConsulAddr(), "--create-namespaces",
		"--domain", s.Domain, "--https-port", strconv.Itoa(s.Ports.TraefikWebsecure),
		"--auth-url", router.AuthURL(listen), "--bundle-url", router.BundleURL(listen),
		"--proxy-addr", s.HTTPSAddr(), "--root-ca", s.PebbleRootPath(), "--traefik-api", s.TraefikAPI(),
		"--dns-resolver", s.ChallDNSAddr(), "--policy", policy,
		"--bundle-dir", filepath.Join(state, "bundles")}, s.NATSFlags(true)...), nil, out.client.Health)
	if err != nil {
		t.Fatalf("starting the single agent's caravan server: %v", err)
	}
	if err := s.AwaitWildcard(ctx, roots, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("single-agent stack and its caravan server up in %s", ms(time.Since(began)))
	return out
}

// TestBenchClusterFaults runs the cluster tests' faults under the bench
// tag; each prints its own figures (requests sent and failed under 50/s
// loopback load, time to recovery) as "lost client:", "Nomad leader",
// "Consul leader" and "caravan-server-1 killed" lines.
func TestBenchClusterFaults(t *testing.T) {
	t.Run("LostClient", TestClusterLostClient)
	t.Run("NomadLeaderKilled", TestClusterNomadLeaderKilled)
	t.Run("ConsulLeaderKilled", TestClusterConsulLeaderKilled)
	t.Run("ServerKilledMidRollout", TestClusterServerKilledMidRollout)
}

// TestBenchClusterP6: P6 of the compass, 100 apps deployed at once: 100
// goroutines each deploy an app of one small function (64 MB, 20 MHz)
// through one of the two caravan servers (alternating) and poll its URL
// until it answers over verified TLS. It prints the total time, the p50
// and max per app, the failures, and how long deploys waited for their
// turn to reach Nomad.
func TestBenchClusterP6(t *testing.T) {
	const apps = 100
	var (
		mu       sync.Mutex
		per      []time.Duration
		queued   []time.Duration // of the deploys that waited their turn (caravan server's --max-starting)
		failures []string
		wg       sync.WaitGroup
	)
	began := time.Now()
	for i := range apps {
		app := fmt.Sprintf("p6app%03d", i)
		purge(t, "e2e--"+app)
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			body := app + "\n"
			js := fmt.Sprintf(`require("http").createServer((q, s) => s.end(%s)).listen(process.env.PORT, process.env.HOST);`, strconv.Quote(body))
			spec := fmt.Sprintf(`app %q {
  workspace = "e2e"
  function "web" {
    command = "node"
    args    = ["-e", %s]
    resources {
      cpu    = 20
      memory = 64
    }
    web {}
  }
}
`, app, strconv.Quote(js))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			res, err := env.servers[i%2].DeployBody(ctx, api.DeployBody{Filename: app + ".hcl", Spec: spec})
			if err == nil {
				_, err = untilAnswered(start, 10*time.Minute-time.Since(start), []string{res.Functions[0].URL}, body)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, fmt.Sprintf("%s: %v", app, err))
				return
			}
			per = append(per, time.Since(start))
			if res.Queued > 0 {
				queued = append(queued, res.Queued)
			}
		}()
	}
	wg.Wait()
	total := time.Since(began)
	p50, max := quantiles(per)
	for _, f := range failures {
		t.Logf("failed: %s", f)
	}
	q50, qmax := quantiles(queued)
	t.Logf("FIGURE P6: %d apps (1 function, 1 container, node, 64 MB, 20 MHz) deployed at once by %d goroutines through the two caravan servers: "+
		"all answering over HTTPS verified by the stack's CA after %s; per app (deploy request until its URL answers, polled every 100ms) p50 %s max %s; %d failed; "+
		"%d waited their turn to reach Nomad (the servers' rollout queue), p50 %s max %s",
		apps, apps, ms(total), ms(p50), ms(max), len(failures), len(queued), ms(q50), ms(qmax))
}
