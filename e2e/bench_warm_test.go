//go:build bench

package e2e

import (
	"fmt"
	"net/http"
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

// directRouter names the Traefik router (and service) TestBenchWarmPath
// publishes in Traefik's KV: Traefik straight to the container the
// proxied route reaches through a caravan proxy.
const directRouter = "caravan-bench-direct"

// publishDirect routes host through Traefik straight to the container at
// addr (http), over the platform's wildcard certificate, through
// middlewares (by name, in Traefik's KV), until the test ends.
func publishDirect(t *testing.T, host, addr string, middlewares []string) {
	t.Helper()
	rc := router.DefaultConfig
	rc.Domain = env.stack.Domain
	passHost := true
	cfg := &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{
		Routers: map[string]*dynamic.Router{directRouter: {
			EntryPoints: []string{rc.EntryPoint}, Rule: "Host(`" + host + "`)", Priority: router.PriorityGenerated,
			Service: directRouter, TLS: rc.GeneratedTLS(host), Middlewares: middlewares,
		}},
		Services: map[string]*dynamic.Service{directRouter: {LoadBalancer: &dynamic.ServersLoadBalancer{
			PassHostHeader: &passHost, Servers: []dynamic.Server{{URL: "http://" + addr}},
		}}},
	}}
	pairs, err := router.KV(rc.KVRoot, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.consul.KV().DeleteTree(rc.KVRoot+"/http/routers/"+directRouter, nil)
		env.consul.KV().DeleteTree(rc.KVRoot+"/http/services/"+directRouter, nil)
	})
	for k, v := range pairs {
		if _, err := env.consul.KV().Put(&consul.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBenchWarmPath prints the warm path's cost (issue 13's figure): the
// same warm container reached through Traefik → caravan proxy → container
// (its real route) and through Traefik → container (a router the bench
// publishes), in one run, both over verified HTTPS with keep-alive; plus
// the container called directly as the floor. It asserts nothing about
// speed.
func TestBenchWarmPath(t *testing.T) {
	const app, job, service = "warmbench", "e2e--warmbench", "e2e--warmbench-web"
	purgeWithSettings(t, job, service)
	// max_inputs above the bench's 16 clients: the proxy never queues;
	// no rate limit: the bench is about the proxy.
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
`, app, strconv.Quote(`require("http").createServer((q, s) => s.end("ok\n")).listen(process.env.PORT, process.env.HOST);`))
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
	// The direct router goes through the route's own middlewares (the
	// body limit plugin, the credential strip), all but the two the
	// proxy brings: the Caravan-Function header and the retry.
	mws := routeMiddlewares(t, service)
	var same []string
	for _, m := range mws {
		if !strings.Contains(m, "-function") && !strings.Contains(m, "-proxy-retry") {
			same = append(same, m)
		}
	}
	host := "e2e--warmdirect." + env.stack.Domain
	publishDirect(t, host, addr, same)
	direct := fmt.Sprintf("https://%s:%d/", host, env.stack.Ports.TraefikWebsecure)
	answers(t, direct, "ok\n")

	client := func() *http.Client {
		c := orchestrator.ProxyClient(env.stack.HTTPSAddr(), env.roots)
		c.Transport.(*http.Transport).MaxIdleConnsPerHost = 32
		return c
	}
	// Warm both paths (connections, Traefik's and the proxy's pools).
	measureN(client(), direct, 200)
	measureN(client(), proxied, 200)
	tr := &http.Transport{MaxIdleConnsPerHost: 32}
	cp50, cp99, crps := measure(&http.Client{Transport: tr, Timeout: 10 * time.Second}, "http://"+addr+"/")
	// The proxy alone, over HTTP (its data address, the function named
	// by header as Traefik names it): the proxy's own hop.
	hp50, hp99, hrps := measure(&http.Client{Transport: &namedFunction{service: service, next: &http.Transport{MaxIdleConnsPerHost: 32}},
		Timeout: 10 * time.Second}, fmt.Sprintf("http://127.0.0.1:%d/", env.stack.Ports.Proxy0))
	// Two rounds, the second in the other order, so that a change in
	// the machine's load (shared) weighs on both paths alike.
	dp50, dp99, drps := measure(client(), direct)
	pp50, pp99, prps := measure(client(), proxied)
	pp50b, pp99b, prpsb := measure(client(), proxied)
	dp50b, dp99b, drpsb := measure(client(), direct)
	dp50, dp99, drps = (dp50+dp50b)/2, (dp99+dp99b)/2, (drps+drpsb)/2
	pp50, pp99, prps = (pp50+pp50b)/2, (pp99+pp99b)/2, (prps+prpsb)/2

	fmt.Printf("\ncaravan bench: warm path, one warm Node.js container, keep-alive, verified HTTPS to Traefik; %s\n", benchSetup())
	row := func(name string, p50, p99 time.Duration, rps float64) {
		fmt.Printf("%-44s p50 %8s  p99 %8s  %7.0f req/s\n", name, p50.Round(time.Microsecond), p99.Round(time.Microsecond), rps)
	}
	row("container (HTTP, no Traefik): the floor", cp50, cp99, crps)
	row("caravan proxy → container (HTTP, no Traefik)", hp50, hp99, hrps)
	row("Traefik → container", dp50, dp99, drps)
	row("Traefik → caravan proxy → container", pp50, pp99, prps)
	fmt.Printf("%-44s p50 %8s (goal ≤ 150µs)  p99 %8s (goal ≤ 1ms)  throughput %.0f%% of Traefik → container (goal ≥ 80%%)\n",
		"added by the caravan proxy", (pp50 - dp50).Round(time.Microsecond), (pp99 - dp99).Round(time.Microsecond), 100*prps/drps)
	fmt.Println("    latency: 1,000 sequential GETs per path; throughput: 16 concurrent clients for 5 s per path; two rounds (direct, proxied, proxied, direct), their means, after 200 warm-up GETs each")
	fmt.Printf("    Traefik → container is a router the bench publishes in Traefik's KV to the same container, through the route's middlewares %v; the proxied route adds its Caravan-Function header and retry\n", same)
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
