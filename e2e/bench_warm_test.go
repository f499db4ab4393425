//go:build bench

package e2e

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/router"
	consul "github.com/hashicorp/consul/api"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
)

// publishDirect routes host through Traefik straight to the container at
// addr (http), over the platform's wildcard certificate, through
// middlewares (by name, in Traefik's KV), as the router (and service)
// name, until the test ends.
func publishDirect(t *testing.T, name, host, addr string, middlewares []string) {
	t.Helper()
	rc := router.DefaultConfig
	rc.Domain = env.stack.Domain
	passHost := true
	cfg := &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{
		Routers: map[string]*dynamic.Router{name: {
			EntryPoints: []string{rc.EntryPoint}, Rule: "Host(`" + host + "`)", Priority: router.PriorityGenerated,
			Service: name, TLS: rc.GeneratedTLS(host), Middlewares: middlewares,
		}},
		Services: map[string]*dynamic.Service{name: {LoadBalancer: &dynamic.ServersLoadBalancer{
			PassHostHeader: &passHost, Servers: []dynamic.Server{{URL: "http://" + addr}},
		}}},
	}}
	putRoutes(t, rc.KVRoot, cfg)
}

// putRoutes writes cfg into Traefik's KV under root, and removes it when
// the test ends.
func putRoutes(t *testing.T, root string, cfg *dynamic.Configuration) {
	t.Helper()
	pairs, err := router.KV(root, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for k := range pairs {
			env.consul.KV().Delete(k, nil)
		}
	})
	for k, v := range pairs {
		if _, err := env.consul.KV().Put(&consul.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// publishInTraefik routes host through Traefik, over the platform's
// wildcard certificate, through middlewares (by name, in Traefik's KV) and
// then the caravan plugin: the proxy inside Traefik's process
// (intraefik), as the proxied routes of a server rendering with
// --proxy-plugin end. The router is named name, until the test ends.
func publishInTraefik(t *testing.T, name, host string, middlewares []string) {
	t.Helper()
	rc := router.DefaultConfig
	rc.Domain = env.stack.Domain
	plugin := name + "-plugin"
	cfg := &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{
		Routers: map[string]*dynamic.Router{name: {
			EntryPoints: []string{rc.EntryPoint}, Rule: "Host(`" + host + "`)", Priority: router.PriorityGenerated,
			Service: router.NoopService, TLS: rc.GeneratedTLS(host), Middlewares: append(slices.Clone(middlewares), plugin),
		}},
		Middlewares: map[string]*dynamic.Middleware{plugin: {Plugin: map[string]dynamic.PluginConf{"caravan": {"in": "traefik"}}}},
	}}
	putRoutes(t, rc.KVRoot, cfg)
}

// Warm-path bench rounds: each round measures every path, in an order
// rotated by one each round; per path and round, warmSeq sequential GETs,
// then warmClients clients for warmConc.
const (
	warmRounds  = 10
	warmSeq     = 300
	warmClients = 16
	warmConc    = time.Second
)

// TestBenchWarmPath prints the warm path's cost (issue 13's figure): the
// same warm container reached through Traefik → caravan proxy → container
// (its real route) and through Traefik → container (routers the bench
// publishes: one with the route's middlewares but the two the proxy
// brings, one with all of them), in one run, over verified HTTPS with
// keep-alive; plus the container called directly (the floor) and the
// proxy alone. The paths are measured in short interleaved rounds (see
// interleaved) and the goal's figures are medians of the per-round
// differences and ratios, printed beside each path's own figures, the CPU
// each process spent per request and the machine's load. It asserts
// nothing about speed.
func TestBenchWarmPath(t *testing.T) {
	const app, job, service = "warmbench", "e2e--warmbench", "e2e--warmbench-web"
	purgeWithSettings(t, job, service)
	// max_inputs above the bench's 16 clients: the proxy never queues;
	// no rate limit: the bench is about the proxy. The comment marks the
	// container's process, whose CPU the bench reads.
	src := fmt.Sprintf(`app %q {
  workspace = "e2e"
  function "web" {
    command = "node"
    args    = ["-e", %s]
    resources {
      memory = 64
    }
    min_containers   = 0
    max_containers   = 1
    scaledown_window = "10m"
    concurrency {
      max_inputs = 64
    }
    web {
      rate_limit = 0
    }
  }
}
`, app, strconv.Quote(`/* warmbench */ require("http").createServer((q, s) => s.end("ok\n")).listen(process.env.PORT, process.env.HOST);`))
	proxied := deploy(t, "warmbench.hcl", src, api.DeployBody{}).Functions[0].URL + "/"
	if a := fetch(proxied, time.Minute); a.status != 200 {
		t.Fatalf("first request (cold start): %s", a)
	}
	// The proxy's own probe let the first request through; Traefik's
	// direct router needs the address, once Consul passes it.
	var addr string
	eventually(t, time.Minute, "the container passes its checks in Consul", func() error {
		entries, _, err := env.consul.Health().Service(service, "", true, nil)
		if err != nil || len(entries) != 1 {
			return fmt.Errorf("%d passing (%v)", len(entries), err)
		}
		addr = fmt.Sprintf("%s:%d", entries[0].Service.Address, entries[0].Service.Port)
		return nil
	})
	// One direct router goes through the route's own middlewares (the
	// body limit plugin, the credential strip), all but the two the
	// proxy brings: the Caravan-Function header and the retry; the other
	// through all of them, the same chain as the proxied route's.
	mws := routeMiddlewares(t, service)
	var same []string
	for _, m := range mws {
		if !strings.Contains(m, "-function") && !strings.Contains(m, "-proxy-retry") {
			same = append(same, m)
		}
	}
	host, hostAll := "e2e--warmdirect."+env.stack.Domain, "e2e--warmdirectall."+env.stack.Domain
	publishDirect(t, "caravan-bench-direct", host, addr, same)
	publishDirect(t, "caravan-bench-direct-all", hostAll, addr, mws)
	// The proxy inside Traefik: the proxied route's middlewares but the
	// retry (nothing to retry in one process), then the plugin.
	var inMws []string
	for _, m := range mws {
		if !strings.Contains(m, "-proxy-retry") {
			inMws = append(inMws, m)
		}
	}
	hostIn := "e2e--warmintraefik." + env.stack.Domain
	publishInTraefik(t, "caravan-bench-in-traefik", hostIn, inMws)
	inTraefik := fmt.Sprintf("https://%s:%d/", hostIn, env.stack.Ports.TraefikWebsecure)
	answers(t, inTraefik, "ok\n")
	direct := fmt.Sprintf("https://%s:%d/", host, env.stack.Ports.TraefikWebsecure)
	directAll := fmt.Sprintf("https://%s:%d/", hostAll, env.stack.Ports.TraefikWebsecure)
	answers(t, direct, "ok\n")
	answers(t, directAll, "ok\n")

	client := func() *http.Client {
		c := orchestrator.ProxyClient(env.stack.HTTPSAddr(), env.roots)
		c.Transport.(*http.Transport).MaxIdleConnsPerHost = 32
		return c
	}
	plain := func(rt http.RoundTripper) *http.Client { return &http.Client{Transport: rt, Timeout: 10 * time.Second} }
	paths := []benchPath{
		{"container (HTTP, no Traefik): the floor", plain(&http.Transport{MaxIdleConnsPerHost: 32}), "http://" + addr + "/"},
		// The proxy alone, over HTTP (its data address, the function
		// named by header as Traefik names it): the proxy's own hop.
		{"caravan proxy → container (HTTP, no Traefik)", plain(&namedFunction{service: service, next: &http.Transport{MaxIdleConnsPerHost: 32}}),
			fmt.Sprintf("http://127.0.0.1:%d/", env.stack.Ports.Proxy0)},
		{"Traefik → container", client(), direct},
		{"Traefik → container, all the route's mws", client(), directAll},
		{"Traefik → caravan proxy → container", client(), proxied},
		{"Traefik (caravan proxy inside) → container", client(), inTraefik},
	}
	const floor, alone, dir, dirAll, prox, inside = 0, 1, 2, 3, 4, 5
	// Warm every path (connections, Traefik's and the proxy's pools).
	for _, p := range paths {
		measureN(p.client, p.url, 200)
		throughput(p.client, p.url, warmClients, 200*time.Millisecond, 1_000_000)
	}
	watch := map[string][]int{
		"Traefik": pidsOf("traefik", "--configFile="+env.stack.StateDir),
		"proxies": append(pidsOf(" proxy ", fmt.Sprintf("--listen 127.0.0.1:%d ", env.stack.Ports.Proxy0)),
			pidsOf(" proxy ", fmt.Sprintf("--listen 127.0.0.1:%d ", env.stack.Ports.Proxy1))...),
		"container": pidsOf("node", "/* warmbench */"),
		"client":    {os.Getpid()},
	}
	for name, pids := range watch {
		if len(pids) == 0 {
			t.Logf("no process found for %s: its CPU is not read", name)
		}
	}
	load0 := loadAvg()
	busy0, total0 := machineBusy()
	began := time.Now()
	res := interleaved(paths, warmRounds, warmSeq, warmClients, warmConc, watch)
	took := time.Since(began)
	busy1, total1 := machineBusy()
	load1 := loadAvg()

	fmt.Printf("\ncaravan bench: warm path, one warm Node.js container, keep-alive, verified HTTPS to Traefik; %s\n", benchSetup())
	fmt.Printf("    %d interleaved rounds in %s, each path once a round in an order rotated by one each round: %d sequential GETs (latency), then %d concurrent clients for %s (throughput), after 200 warm-up GETs and 200 ms of load per path\n",
		warmRounds, took.Round(time.Second), warmSeq, warmClients, warmConc)
	cores := 0.0
	if total1 > total0 {
		cores = float64(runtime.NumCPU()) * float64(busy1-busy0) / float64(total1-total0)
	}
	fmt.Printf("    machine: load average (1 min) %.2f before, %.2f after; %.2f of %d CPUs busy during the rounds (/proc/stat, this bench's own load included)\n",
		load0, load1, cores, runtime.NumCPU())
	names := slices.Sorted(maps.Keys(watch))
	fmt.Printf("%-46s %9s %9s %9s %15s   CPU µs per request (throughput phases): %s\n", "path", "p50", "p99", "req/s", "(min-max)", strings.Join(names, ", "))
	for i, p := range paths {
		var lat []time.Duration
		var rps []float64
		var ok int64
		ticks := map[string]int64{}
		for _, r := range res {
			lat = append(lat, r[i].lat...)
			rps = append(rps, r[i].rps)
			ok += r[i].ok
			for n, v := range r[i].ticks {
				ticks[n] += v
			}
			if r[i].bad > 0 {
				fmt.Printf("    %s: %d of %d concurrent requests failed or were not 200 in a round (first: %s)\n", p.name, r[i].bad, r[i].bad+r[i].ok, r[i].first)
			}
		}
		var cpu []string
		for _, n := range names {
			cpu = append(cpu, fmt.Sprintf("%.0f", float64(ticks[n])*1e4/float64(max(ok, 1)))) // a tick is 10 ms
		}
		fmt.Printf("%-46s %9s %9s %9.0f %15s   %s\n", p.name, percentile(lat, 50).Round(time.Microsecond), percentile(lat, 99).Round(time.Microsecond),
			medianF(rps), fmt.Sprintf("(%.0f-%.0f)", slices.Min(rps), slices.Max(rps)), strings.Join(cpu, ", "))
	}
	fmt.Println("    p50, p99: of every round's sequential GETs together; req/s: the median round (the range of rounds)")
	added := func(via, base int) {
		var d50, d99 []time.Duration
		var ratio []float64
		for _, r := range res {
			d50 = append(d50, r[via].p50-r[base].p50)
			d99 = append(d99, r[via].p99-r[base].p99)
			ratio = append(ratio, 100*r[via].rps/r[base].rps)
		}
		label := paths[via].name + ", against " + paths[base].name
		rng := func(ds []time.Duration) string {
			return fmt.Sprintf("%s..%s", slices.Min(ds).Round(time.Microsecond), slices.Max(ds).Round(time.Microsecond))
		}
		fmt.Printf("added by the caravan proxy, %s: p50 %s (goal ≤ 150µs; rounds %s), p99 %s (goal ≤ 1ms; rounds %s), throughput %.0f%% (goal ≥ 80%%; rounds %.0f..%.0f%%)\n",
			label, medianD(d50).Round(time.Microsecond), rng(d50), medianD(d99).Round(time.Microsecond), rng(d99), medianF(ratio), slices.Min(ratio), slices.Max(ratio))
	}
	added(prox, dir)
	added(prox, dirAll)
	added(inside, dir)
	added(inside, dirAll)
	fmt.Println("    medians of the per-round differences (proxied − direct, same round) and ratios (proxied / direct req/s), with their range over the rounds")
	fmt.Printf("    Traefik → container: routers the bench publishes in Traefik's KV to the same container, one through the route's middlewares %v, one through all of them %v (the proxied route's, whose service is the proxies' failover chain)\n", same, mws)
	_ = floor
	_ = alone
}

// routeMiddlewares are the middlewares of the proxied router of service,
// from Traefik's KV.
func routeMiddlewares(t *testing.T, service string) []string {
	t.Helper()
	pairs, _, err := env.consul.KV().List("traefik/http/routers/", nil)
	if err != nil {
		t.Fatal(err)
	}
	byRouter := map[string]map[int]string{}
	for _, p := range pairs {
		rest := strings.TrimPrefix(p.Key, "traefik/http/routers/")
		name, field, _ := strings.Cut(rest, "/")
		if !strings.HasPrefix(name, service+"-") {
			continue
		}
		if i, ok := strings.CutPrefix(field, "middlewares/"); ok {
			n, _ := strconv.Atoi(i)
			if byRouter[name] == nil {
				byRouter[name] = map[int]string{}
			}
			byRouter[name][n] = string(p.Value)
		}
	}
	for name, m := range byRouter {
		if rest := strings.TrimPrefix(name, service); strings.HasPrefix(rest, "--") { // --custom, --wildcard, --probe
			continue
		}
		out := make([]string, len(m))
		for i, v := range m {
			out[i] = v
		}
		return out
	}
	t.Fatalf("no router of %s in Traefik's KV", service)
	return nil
}

// namedFunction sets HeaderFunction on every request, as Traefik does.
type namedFunction struct {
	service string
	next    http.RoundTripper
}

func (n *namedFunction) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(proxy.HeaderFunction, n.service)
	return n.next.RoundTrip(r)
}

// measureN sends n sequential GETs (a warm-up).
func measureN(client *http.Client, url string, n int) {
	for range n {
		if resp, err := client.Get(url); err == nil {
			drain(resp)
		}
	}
}

// reactionJS reports, at /info, "<process start ms> <listen ms> <first
// served ms> <served>" (unix ms; 0 before the first), counting the
// requests it served besides /info and /healthz; /slow?ms=N answers after
// N ms.
const reactionJS = `const started = Date.now() - Math.round(process.uptime() * 1000);
let listened = 0, first = 0, served = 0;
require("http").createServer((q, s) => {
  if (q.url === "/info") { s.end(started + " " + listened + " " + first + " " + served); return; }
  if (q.url === "/healthz") { s.end("ok"); return; }
  if (!first) first = Date.now();
  served++;
  const ms = +(new URL(q.url, "http://x").searchParams.get("ms") || 0);
  setTimeout(() => s.end("done"), ms);
}).listen(process.env.PORT, process.env.HOST, () => { listened = Date.now(); });`

// TestBenchReaction prints how fast a function reacts to a load step
// (issue 13's figure): one client keeps one container busy (max_inputs
// 1); a second client starts; the time until the new container serves
// its first request, minus its own start (process start to listen), is
// caravan's reaction: the autoscaler's decision, Nomad's placement, the
// proxy learning of the container. Then the second client stops and the
// count goes back to one after the scaledown_window, three times, and to
// zero at the end; every request of the ramps and scale-downs is
// counted, and the failed ones printed.
func TestBenchReaction(t *testing.T) {
	const app, job, service = "reactbench", "e2e--reactbench", "e2e--reactbench-web"
	const runs = 3
	purgeWithSettings(t, job, service)
	src := scaleFromZeroSpec(app, reactionJS, 2, "3s")
	url := deploy(t, "reactbench.hcl", src, api.DeployBody{}).Functions[0].URL + "/slow?ms=100"

	loop := &closedLoop{url: url}
	client := loop.client
	count := func(want int) func() error {
		return func() error {
			if d, r := groupCount(t, job); d != want || r != want {
				return fmt.Errorf("%d desired, %d running", d, r)
			}
			// The stopped container leaves Consul too.
			if entries, _, err := env.consul.Health().Service(service, "", false, nil); err != nil || len(entries) != want {
				return fmt.Errorf("%d containers in Consul (%v)", len(entries), err)
			}
			return nil
		}
	}
	var base sync.WaitGroup
	stopBase := make(chan struct{})
	base.Add(1)
	go client(stopBase, &base)
	eventually(t, time.Minute, "one container for one client", count(1))

	var reactions, overheads []time.Duration
	for i := range runs {
		before := map[string]bool{}
		entries, _, err := env.consul.Health().Service(service, "", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			before[e.Service.ID] = true
		}
		var extra sync.WaitGroup
		stopExtra := make(chan struct{})
		step := time.Now()
		extra.Add(1)
		go client(stopExtra, &extra)
		var info [4]int64
		eventually(t, time.Minute, "a new container serves", func() error {
			entries, _, err := env.consul.Health().Service(service, "", false, nil)
			if err != nil {
				return err
			}
			for _, e := range entries {
				if before[e.Service.ID] {
					continue
				}
				resp, err := http.Get(fmt.Sprintf("http://%s:%d/info", e.Service.Address, e.Service.Port))
				if err != nil {
					return err
				}
				body := readAll(resp)
				resp.Body.Close()
				if _, err := fmt.Sscanf(body, "%d %d %d %d", &info[0], &info[1], &info[2], &info[3]); err != nil {
					return fmt.Errorf("/info %q: %v", body, err)
				}
				if info[2] == 0 {
					return fmt.Errorf("the new container has served nothing yet")
				}
				return nil
			}
			return fmt.Errorf("no new container yet")
		})
		reaction := time.UnixMilli(info[2]).Sub(step)
		own := time.Duration(info[1]-info[0]) * time.Millisecond
		reactions, overheads = append(reactions, reaction), append(overheads, reaction-own)
		t.Logf("run %d: step → new container's first request %s; its own start (process → listen) %s; step → its process start %s; its listen → first request %s",
			i, reaction.Round(time.Millisecond), own, time.UnixMilli(info[0]).Sub(step).Round(time.Millisecond),
			time.Duration(info[2]-info[1])*time.Millisecond)
		close(stopExtra)
		extra.Wait()
		eventually(t, time.Minute, "back to one container", count(1))
	}
	close(stopBase)
	base.Wait()
	eventually(t, time.Minute, "the function scales to zero", count(0))

	fmt.Printf("\ncaravan bench: reaction to a load step, one Node.js container at max_inputs 1 busy with one client, a second client starts; %s\n", benchSetup())
	fmt.Printf("%-44s %s\n", "step → new container's first request", fmtDurations(reactions))
	fmt.Printf("%-44s %s  (goal ≤ 2s)\n", "  minus its own start (process → listen)", fmtDurations(overheads))
	fmt.Println("    the container reports (unix ms) its process start, its listen and its first request; the step is when the second client starts; 3 runs, back to one container between them")
	fmt.Printf("%-44s %d of %d  (goal 0)\n", "failed requests across ramps and scale-downs", loop.failed.Load(), loop.failed.Load()+loop.ok.Load())
	fmt.Printf("    two clients sending GET /slow?ms=100 back to back through Traefik → caravan proxy: 1 → 2 → 1 containers %d times (scaledown_window 3s), then 1 → 0\n", runs)
	loop.mu.Lock()
	for _, e := range loop.errs[:min(len(loop.errs), 10)] {
		t.Errorf("a request failed: %s", e)
	}
	loop.mu.Unlock()
}
