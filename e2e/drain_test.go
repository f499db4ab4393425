package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/proxy"
)

// drainJS answers /slow?ms=N after N ms with "done idx=<index>
// v=<VERSION>"; /hold answers when the container itself gets /release,
// which is answered first: a draining container stops as soon as its
// proxied requests end, and the test's own /release, which no proxy
// counts, must not be cut off by that (it was, once in a few runs).
const drainJS = `const idx = process.env.NOMAD_ALLOC_INDEX, v = process.env.VERSION;
const held = [];
require("http").createServer((q, s) => {
  if (q.url === "/healthz") { s.end("ok"); return; }
  if (q.url === "/hold") { held.push(s); return; }
  if (q.url === "/release") { s.end("released"); while (held.length) held.shift().end("done held idx=" + idx + " v=" + v); return; }
  const p = new URL(q.url, "http://x").searchParams;
  const ms = +(p.get("ms") || 0);
  setTimeout(() => s.end("done idx=" + idx + " v=" + v), ms);
}).listen(process.env.PORT, process.env.HOST);`

// drainSpec is an autoscaled function of drainJS.
func drainSpec(app, version string, min, max, maxInputs int, window string) string {
	return fmt.Sprintf(`app %q {
  workspace = "e2e"
  function "web" {
    command = "node"
    args    = ["-e", %s]
    env = {
      VERSION = %q
    }
    resources {
      memory = 64
    }
    min_containers   = %d
    max_containers   = %d
    scaledown_window = %q
    concurrency {
      max_inputs = %d
    }
    web {
      health_path = "/healthz"
    }
  }
}
`, app, strconv.Quote(drainJS), version, min, max, window, maxInputs)
}

// drainedLines counts the drains caravan server logged.
func drainedLines(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.stack.StateDir, "logs", "caravan-server.log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "allocation drained")
}

// longRequests sends a GET of url every `every` until stop closes, each
// allowed a minute, and returns how many answered and the failures.
type longRequests struct {
	mu       sync.Mutex
	ok       int
	failures []string
	bodies   []string
	wg       sync.WaitGroup
}

func (l *longRequests) send(t *testing.T, url string) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		status, body, err := getWithin(t, url, time.Minute)
		l.mu.Lock()
		defer l.mu.Unlock()
		if err != nil || status != http.StatusOK || !strings.HasPrefix(body, "done") {
			l.failures = append(l.failures, fmt.Sprintf("%d %q %v", status, body, err))
			return
		}
		l.ok++
		l.bodies = append(l.bodies, body)
	}()
}

func (l *longRequests) check(t *testing.T, what string) {
	t.Helper()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%s: %d requests answered 200, %d failed", what, l.ok, len(l.failures))
	for _, f := range l.failures {
		t.Errorf("%s: a request was cut: %s", what, f)
	}
}

// TestDrainRollingKeepsLongRequests redeploys an autoscaled function
// (rolling) while 5 s requests are in flight, a new one every 250 ms from
// before the deploy until after it: the old container is drained at the
// proxies before it stops, and every request answers 200.
func TestDrainRollingKeepsLongRequests(t *testing.T) {
	const app, job, service = "drainroll", "e2e--drainroll", "e2e--drainroll-web"
	purgeWithSettings(t, job, service)
	res := deploy(t, "drainroll.hcl", drainSpec(app, "v1", 1, 3, 40, "60s"), api.DeployBody{})
	url := res.Functions[0].URL + "/slow?ms=5000"
	drainsBefore := drainedLines(t)

	var reqs longRequests
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				reqs.send(t, url)
			}
		}
	}()
	// Requests are in flight at the old container before the deploy.
	eventually(t, time.Minute, "requests in flight at the proxies", func() error {
		if n := inFlight(t, service); n < 4 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	r2 := deploy(t, "drainroll.hcl", drainSpec(app, "v2", 1, 3, 40, "60s"), api.DeployBody{Strategy: "rolling"})
	t.Logf("rolling redeploy: version %d in %s", r2.Version, r2.Duration.Round(time.Millisecond))
	// The old container's drain: caravan server logs it once the
	// requests it had are done.
	eventually(t, time.Minute, "the old container drained", func() error {
		if drainedLines(t) == drainsBefore {
			return fmt.Errorf("no drain logged yet")
		}
		return nil
	})
	close(stop)
	<-sent
	reqs.check(t, "rolling with 5 s requests")
	answersVersion(t, res.Functions[0].URL+"/slow?ms=0", "v2")
}

// oneEach says why the proxies do not report two containers of service
// with one request in flight each, or nil.
func oneEach(service string) error {
	var seen []string
	for _, admin := range env.stack.ProxyAdmins() {
		rep, err := proxy.FetchLoad(context.Background(), http.DefaultClient, admin)
		if err != nil {
			return err
		}
		for _, fl := range rep.Functions {
			if fl.Function != service {
				continue
			}
			for _, in := range fl.Instances {
				seen = append(seen, fmt.Sprintf("%s:%d", in.ID, in.InFlight))
			}
			if fl.InFlight > 0 {
				busy := 0
				for _, in := range fl.Instances {
					if in.InFlight == 1 {
						busy++
					}
				}
				if busy == 2 {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("instances %v", seen)
}

// inFlight is the requests of service in flight over every proxy.
func inFlight(t *testing.T, service string) int {
	t.Helper()
	n := 0
	for _, admin := range env.stack.ProxyAdmins() {
		rep, err := proxy.FetchLoad(context.Background(), http.DefaultClient, admin)
		if err != nil {
			continue
		}
		for _, fl := range rep.Functions {
			if fl.Function == service {
				n += fl.InFlight
			}
		}
	}
	return n
}

// TestDrainRecreateUnderSteadyLoad redeploys an autoscaled function with
// the recreate strategy twice under a steady load: the old containers
// drain, the requests of the gap wait in the proxies' queue until the new
// version is up, and none fails.
func TestDrainRecreateUnderSteadyLoad(t *testing.T) {
	const app, job, service = "drainre", "e2e--drainre", "e2e--drainre-web"
	purgeWithSettings(t, job, service)
	res := deploy(t, "drainre.hcl", drainSpec(app, "v1", 1, 2, 8, "60s"), api.DeployBody{})
	base := res.Functions[0].URL

	stop := make(chan struct{})
	began := time.Now()
	l := runLoad(context.Background(), base+"/slow?ms=100", 20, stop)
	for i, v := range []string{"v2", "v3"} {
		r := deploy(t, "drainre.hcl", drainSpec(app, v, 1, 2, 8, "60s"), api.DeployBody{Strategy: "recreate"})
		t.Logf("recreate %d: version %d in %s", i+1, r.Version, r.Duration.Round(time.Millisecond))
	}
	answersVersion(t, base+"/slow?ms=0", "v3")
	close(stop)
	<-l.Done
	elapsed := time.Since(began)
	sent, failed := l.Sent.Load(), l.Failed.Load()
	t.Logf("load: %d requests in %s (%.0f/s), %d failed", sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), failed)
	if failed != 0 {
		t.Fatalf("%d of %d requests failed across 2 recreate deploys; first: %v", failed, sent, l.FirstErrors())
	}
}

// TestDrainScaleDownFinishesLongRequest scales an autoscaled function
// from 2 containers to 1 while the container Nomad stops (the highest
// index) serves a request held open (/hold, answered when the container
// itself is told /release): the container keeps running, drained, until
// the request is done, and the request answers 200.
func TestDrainScaleDownFinishesLongRequest(t *testing.T) {
	const app, job, service = "drainscale", "e2e--drainscale", "e2e--drainscale-web"
	purgeWithSettings(t, job, service)
	res := deploy(t, "drainscale.hcl", drainSpec(app, "v1", 1, 2, 1, "5s"), api.DeployBody{})
	base := res.Functions[0].URL

	// Two at once against max_inputs 1: a second container.
	var warm longRequests
	warm.send(t, base+"/slow?ms=3000")
	warm.send(t, base+"/slow?ms=3000")
	addrs := map[string]string{} // Consul service ID -> host:port
	eventually(t, 2*time.Minute, "two containers passing", func() error {
		entries, _, err := env.consul.Health().Service(service, "", true, nil)
		if err != nil || len(entries) != 2 {
			return fmt.Errorf("%d passing (%v)", len(entries), err)
		}
		for _, e := range entries {
			addrs[e.Service.ID] = fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port)
		}
		return nil
	})
	warm.check(t, "warm-up")
	drainsBefore := drainedLines(t)

	// Which container a scale to 1 stops: the highest index.
	allocs, _, err := env.nomad.Jobs().Allocations(job, false, nsq(job))
	if err != nil {
		t.Fatal(err)
	}
	var high, low, highAddr, lowAddr string
	highIdx := -1
	for _, a := range allocs {
		if a.ClientStatus != "running" || a.DesiredStatus != "run" {
			continue
		}
		i := strings.LastIndex(a.Name, "[")
		idx, _ := strconv.Atoi(strings.TrimSuffix(a.Name[i+1:], "]"))
		if idx > highIdx {
			if high != "" {
				low = high
			}
			high, highIdx = a.ID, idx
		} else {
			low = a.ID
		}
	}
	for id, addr := range addrs {
		switch {
		case strings.HasPrefix(id, "_nomad-task-"+high+"-"):
			highAddr = addr
		case strings.HasPrefix(id, "_nomad-task-"+low+"-"):
			lowAddr = addr
		}
	}
	if highAddr == "" || lowAddr == "" {
		t.Fatalf("containers: %v; allocations high %s, low %s", addrs, high, low)
	}
	release := func(addr string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/release")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	// One held request per container, through the proxies.
	var held longRequests
	held.send(t, base+"/hold")
	held.send(t, base+"/hold")
	eventually(t, 30*time.Second, "both containers serve one held request each", func() error {
		return oneEach(service)
	})
	// The load falls to 1: after the 5 s window Nomad stops the high one.
	release(lowAddr)
	eventually(t, time.Minute, "the scale-down stops allocation "+high, func() error {
		a, _, err := env.nomad.Allocations().Info(high, nil)
		if err != nil {
			return err
		}
		if a.DesiredStatus != "stop" {
			return fmt.Errorf("desired %s", a.DesiredStatus)
		}
		return nil
	})
	// It drains: it leaves Consul, its request is still served, and its
	// task keeps running while it is.
	eventually(t, 30*time.Second, "allocation "+high+" leaves Consul", func() error {
		entries, _, err := env.consul.Health().Service(service, "", false, nil)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Service.ID, "_nomad-task-"+high+"-") {
				return fmt.Errorf("still registered")
			}
		}
		return nil
	})
	held.mu.Lock()
	answered := held.ok + len(held.failures)
	held.mu.Unlock()
	if answered != 1 {
		t.Fatalf("%d held requests answered before the drained container was told to answer, want 1", answered)
	}
	if a, _, err := env.nomad.Allocations().Info(high, nil); err != nil || a.ClientStatus != "running" {
		t.Fatalf("the stopping allocation is not running while its request is in flight: %v", err)
	}
	release(highAddr)
	held.check(t, "scale-down with a held request")
	t.Logf("answers: %q", held.bodies)
	eventually(t, 30*time.Second, "caravan server logs the drain of the scale-down", func() error {
		if drainedLines(t) == drainsBefore {
			return fmt.Errorf("no drain logged")
		}
		return nil
	})
	eventually(t, time.Minute, "allocation "+high+" completes", func() error {
		a, _, err := env.nomad.Allocations().Info(high, nil)
		if err != nil {
			return err
		}
		if a.ClientStatus == "running" {
			return fmt.Errorf("still running")
		}
		return nil
	})
}

// answersVersion polls url until it answers 200 from version v.
func answersVersion(t *testing.T, url, v string) {
	t.Helper()
	eventually(t, 30*time.Second, "GET "+url+" answers from "+v, func() error {
		status, got, err := get(t, url)
		if err != nil {
			return err
		}
		if status != 200 || !strings.HasSuffix(got, " v="+v) {
			return fmt.Errorf("%d %q", status, got)
		}
		return nil
	})
}
