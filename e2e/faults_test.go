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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/server"
)

// faultJS is concurrencyJS with two more paths: /die?ms=N exits the
// process N ms into the request, without answering it (a container that
// dies mid-request), and /who answers the container's allocation.
const faultJS = `const MAX = +process.env.MAX_INPUTS;
let now = 0, peak = 0, violations = 0;
require("http").createServer((q, s) => {
  if (q.url === "/stats") { s.end("peak=" + peak + " violations=" + violations); return; }
  if (q.url === "/healthz") { s.end("ok"); return; }
  if (q.url === "/who") { s.end(process.env.NOMAD_ALLOC_ID || "?"); return; }
  now++; peak = Math.max(peak, now); if (now > MAX) violations++;
  const u = new URL(q.url, "http://x");
  const ms = +(u.searchParams.get("ms") || 0);
  if (u.pathname === "/die") { setTimeout(() => process.exit(1), ms); return; }
  setTimeout(() => { now--; s.end("done"); }, ms);
}).listen(process.env.PORT, process.env.HOST);`

// faultSpec is an autoscaled function running faultJS; extra is HCL added
// to the function's block (a queue block, resources).
func faultSpec(app string, maxContainers, maxInputs int, window, extra string) string {
	return fmt.Sprintf(`app %q {
  workspace = "e2e"
  function "web" {
    command = "node"
    args    = ["-e", %s]
    env = {
      MAX_INPUTS = "%d"
    }
    resources {
      memory = 64
    }
    min_containers   = 0
    max_containers   = %d
    scaledown_window = %q
    concurrency {
      max_inputs = %d
    }
    web {
      health_path = "/healthz"
    }
%s
  }
}
`, app, strconv.Quote(faultJS), maxInputs, maxContainers, window, maxInputs, extra)
}

// answer is one request's outcome, headers included.
type answer struct {
	status int
	body   string
	header http.Header
	err    error
}

func (a answer) String() string {
	return fmt.Sprintf("%d %q %s=%q %v", a.status, a.body, proxy.HeaderError, a.header.Get(proxy.HeaderError), a.err)
}

// fetch GETs url through Traefik within d.
func fetch(url string, d time.Duration) answer {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := env.https.Do(req)
	if err != nil {
		return answer{err: err, header: http.Header{}}
	}
	defer resp.Body.Close()
	return answer{status: resp.StatusCode, body: readAll(resp), header: resp.Header}
}

// closedLoop counts what clients sending GETs of url one after another
// (each waits for its answer, up to a minute, before the next) got: the
// 200s and the rest, whose answers it keeps.
type closedLoop struct {
	url        string
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
}

// client sends GETs until stop is closed, then calls wg.Done.
func (c *closedLoop) client(stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if a := fetch(c.url, time.Minute); a.status != 200 {
			c.failed.Add(1)
			c.mu.Lock()
			c.errs = append(c.errs, a.String())
			c.mu.Unlock()
		} else {
			c.ok.Add(1)
		}
	}
}

// fetchAsync starts fetch and returns where its answer arrives.
func fetchAsync(url string, d time.Duration) <-chan answer {
	ch := make(chan answer, 1)
	go func() { ch <- fetch(url, d) }()
	return ch
}

// proxyLoad sums service's load over the stack's proxies that answer.
func proxyLoad(service string) (inFlight, queued, answered int) {
	for _, admin := range env.stack.ProxyAdmins() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := proxy.FetchLoad(ctx, http.DefaultClient, admin)
		cancel()
		if err != nil {
			continue
		}
		answered++
		for _, f := range r.Functions {
			if f.Function == service {
				inFlight += f.InFlight
				queued += f.Queued
			}
		}
	}
	return inFlight, queued, answered
}

// awaitLoad waits until the proxies hold exactly inFlight and queued
// requests of service.
func awaitLoad(t *testing.T, service string, inFlight, queued int) {
	t.Helper()
	eventually(t, time.Minute, fmt.Sprintf("the proxies hold %d in flight and %d queued", inFlight, queued), func() error {
		if f, q, _ := proxyLoad(service); f != inFlight || q != queued {
			return fmt.Errorf("%d in flight, %d queued", f, q)
		}
		return nil
	})
}

// TestQueueAtMaxContainers fills a function at max_containers (1
// container, max_inputs 2) and its queue (max_requests 3): every request
// the queue had room for answers 200, the next is 503 with Retry-After,
// and one that waits past the queue's timeout (3 s) is 504; `caravan app
// list` (API and CLI) shows the containers and the queue meanwhile.
func TestQueueAtMaxContainers(t *testing.T) {
	const app, job, service = "queued", "e2e--queued", "e2e--queued-web"
	purgeWithSettings(t, job, service)
	// A long window: the container stays while the test runs.
	res := deploy(t, "queued.hcl", faultSpec(app, 1, 2, "5m", "    queue {\n      max_requests = 3\n      timeout      = \"3s\"\n    }"), api.DeployBody{})
	url := res.Functions[0].URL
	if a := fetch(url+"/slow?ms=0", time.Minute); a.status != 200 {
		t.Fatalf("first request (cold start): %s", a)
	}

	// 2 in flight, 3 queued: all answered.
	var held []<-chan answer
	for range 2 {
		held = append(held, fetchAsync(url+"/slow?ms=1500", time.Minute))
	}
	awaitLoad(t, service, 2, 0)
	for range 3 {
		held = append(held, fetchAsync(url+"/slow?ms=100", time.Minute))
	}
	awaitLoad(t, service, 2, 3)
	over := fetch(url+"/slow?ms=0", 10*time.Second)
	if over.status != http.StatusServiceUnavailable || over.header.Get("Retry-After") == "" ||
		over.header.Get(proxy.HeaderError) != proxy.ErrorQueueFull {
		t.Errorf("past the queue's bound: %s, Retry-After %q; want 503 %s with Retry-After", over, over.header.Get("Retry-After"), proxy.ErrorQueueFull)
	}
	for i, ch := range held {
		if a := <-ch; a.status != 200 || a.body != "done" {
			t.Errorf("request %d the queue had room for: %s, want 200", i, a)
		}
	}

	// 2 in flight for 6 s: a queued request waits its 3 s and is 504.
	// Meanwhile `caravan app list` shows the load.
	held = held[:0]
	for range 2 {
		held = append(held, fetchAsync(url+"/slow?ms=6000", time.Minute))
	}
	awaitLoad(t, service, 2, 0)
	began := time.Now()
	lateCh := fetchAsync(url+"/slow?ms=0", time.Minute)
	awaitLoad(t, service, 2, 1)
	checkAppList(t, app, "web (1 of 1 running, 2 in flight, 1 queued)")
	late := <-lateCh
	waited := time.Since(began)
	if late.status != http.StatusGatewayTimeout || late.header.Get(proxy.HeaderError) != proxy.ErrorQueueTimeout {
		t.Errorf("past the queue's timeout: %s; want 504 %s", late, proxy.ErrorQueueTimeout)
	}
	if waited < 3*time.Second {
		t.Errorf("the 504 came after %s, before the 3 s timeout", waited)
	}
	t.Logf("503 past the bound; 504 after waiting %s", waited.Round(time.Millisecond))
	for i, ch := range held {
		if a := <-ch; a.status != 200 {
			t.Errorf("long request %d: %s, want 200", i, a)
		}
	}
	if err := checkStats(t, job); err != nil {
		t.Error(err)
	}
}

// checkAppList asks the API and the CLI for the app list: app's web
// function shows its containers and its load at the proxies as want.
func checkAppList(t *testing.T, app, want string) {
	t.Helper()
	apps, err := env.client.Apps(context.Background())
	if err != nil {
		t.Fatalf("apps: %v", err)
	}
	found := false
	for _, a := range apps {
		for _, f := range a.Functions {
			if a.App == app && f.Name == "web" {
				found = true
				t.Logf("app list: %s: %d of %d running, autoscaled %v, load %+v", app, f.Running, f.Desired, f.Autoscaled, f.Load)
				// Every proxy: the two standalone ones and the one
				// inside Traefik.
				if !f.Autoscaled || f.Load == nil || f.Load.Proxies != 3 {
					t.Errorf("app list: %s/web: autoscaled %v, load %+v; want the load of the three proxies", app, f.Autoscaled, f.Load)
				}
			}
		}
	}
	if !found {
		t.Fatalf("app list has no %s/web", app)
	}
	out, code := runCLI(t, "app", "list")
	if code != 0 || !strings.Contains(out, want) {
		t.Errorf("caravan app list (exit %d) lacks %q:\n%s", code, want, out)
	}
}

// TestProxyKilledUnderLoad kills (SIGKILL) the proxy Traefik prefers
// while a load runs: the requests it held fail, Traefik's health check
// moves the traffic to the other proxy, and the load goes on there. It
// counts every failure and requires no more than the killed proxy held:
// what Traefik sends it before its health check fails is refused, and
// tried again (router.ProxyRetryAttempts) until it reaches the other.
func TestProxyKilledUnderLoad(t *testing.T) {
	const app, job, service = "proxykill", "e2e--proxykill", "e2e--proxykill-web"
	purgeWithSettings(t, job, service)
	res := deploy(t, "proxykill.hcl", faultSpec(app, 2, 8, "5m", ""), api.DeployBody{})
	url := res.Functions[0].URL
	if a := fetch(url+"/slow?ms=0", time.Minute); a.status != 200 {
		t.Fatalf("first request (cold start): %s", a)
	}

	stop := make(chan struct{})
	l := runLoad(context.Background(), url+"/slow?ms=100", 40, stop)
	// A steady state: requests in flight at the proxy Traefik prefers
	// (the first by data URL, which port order decides).
	admins := env.stack.ProxyAdmins()
	var heldAtKill, killedIdx int
	eventually(t, time.Minute, "requests in flight at a proxy", func() error {
		for i, a := range admins {
			r, err := proxy.FetchLoad(context.Background(), http.DefaultClient, a)
			if err != nil {
				return err
			}
			for _, f := range r.Functions {
				if f.Function == service && f.InFlight > 0 {
					heldAtKill, killedIdx = f.InFlight+f.Queued, i
					return nil
				}
			}
		}
		return fmt.Errorf("none in flight")
	})
	victim, other := fmt.Sprintf("caravan-proxy-%d", killedIdx), admins[1-killedIdx]
	t.Cleanup(func() { restartProxy(t, victim) })
	failedBefore, sentBefore := l.Failed.Load(), l.Sent.Load()
	// What it holds right before the kill.
	if n, err := proxyHeld(admins[killedIdx], service); err == nil {
		heldAtKill = n
	}
	killed := time.Now()
	killProc(t, victim)
	// Traffic continues through the other proxy.
	eventually(t, 30*time.Second, "the other proxy carries the load", func() error {
		_, err := proxyInFlight(other, service)
		return err
	})
	switched := time.Now()
	sentAtSwitch := l.Sent.Load()
	failedAtSwitch := l.Failed.Load()
	// Ten more seconds of load, through the other proxy alone: none may fail.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	<-l.Done
	sent, failed := l.Sent.Load(), l.Failed.Load()
	t.Logf("load: %d requests (%d before the kill), %d failed: %d before the kill, %d from the kill until the other proxy carried the load (%s), %d after; the killed proxy held %d; first errors: %v",
		sent, sentBefore, failed, failedBefore, failedAtSwitch-failedBefore, switched.Sub(killed).Round(time.Millisecond),
		failed-failedAtSwitch, heldAtKill, l.FirstErrors())
	if failedBefore != 0 {
		t.Errorf("%d requests failed before the kill", failedBefore)
	}
	if after := failed - failedAtSwitch; after != 0 {
		t.Errorf("%d of %d requests failed once the other proxy carried the load", after, sent-sentAtSwitch)
	}
	// What the killed proxy held, and no more: what Traefik sent it
	// while its health check had not failed yet is tried again (its
	// connection refused) and reaches the other proxy. A few more may
	// have arrived between the last look at its load and the kill.
	if lost := failedAtSwitch - failedBefore; lost > int64(heldAtKill)+3 {
		t.Errorf("%d requests failed at the kill; the killed proxy held %d", lost, heldAtKill)
	}
}

// proxyInFlight is service's requests in flight at the proxy whose admin
// URL is admin; an error when it holds none.
func proxyInFlight(admin, service string) (int, error) {
	r, err := proxy.FetchLoad(context.Background(), http.DefaultClient, admin)
	if err != nil {
		return 0, err
	}
	for _, f := range r.Functions {
		if f.Function == service && f.InFlight+f.Queued > 0 {
			return f.InFlight, nil
		}
	}
	return 0, fmt.Errorf("%s holds no request of %s", admin, service)
}

// proxyHeld is service's requests in flight and queued at the proxy
// whose admin URL is admin.
func proxyHeld(admin, service string) (int, error) {
	r, err := proxy.FetchLoad(context.Background(), http.DefaultClient, admin)
	if err != nil {
		return 0, err
	}
	for _, f := range r.Functions {
		if f.Function == service {
			return f.InFlight + f.Queued, nil
		}
	}
	return 0, nil
}

// killProc sends SIGKILL to the stack's process name.
func killProc(t *testing.T, name string) {
	t.Helper()
	for _, p := range env.stack.Procs {
		if p.Name == name {
			if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
				t.Fatalf("killing %s: %v", name, err)
			}
			eventually(t, 10*time.Second, name+" is dead", func() error {
				if p.Alive() {
					return fmt.Errorf("alive")
				}
				return nil
			})
			return
		}
	}
	t.Fatalf("the stack has no process %s", name)
}

// restartProxy starts the stack's proxy name again and waits until both
// standalone proxies pass their checks in Consul.
func restartProxy(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.stack.Restart(ctx, name); err != nil {
		t.Errorf("restarting %s: %v", name, err)
		return
	}
	eventually(t, time.Minute, "both standalone proxies pass their checks", func() error {
		entries, _, err := env.consul.Health().Service(proxy.ServiceName, "", true, nil)
		standalone := 0
		for _, e := range entries {
			if e.Service.Meta[proxy.MetaInTraefik] != "true" {
				standalone++
			}
		}
		if err != nil || standalone != 2 {
			return fmt.Errorf("%d standalone passing (%v)", standalone, err)
		}
		return nil
	})
}

// TestServerDownUnderLoad shuts the caravan server (the only one, so the
// autoscaler too) down while a load runs: the requests keep answering at
// the current scale, the count stays put although the load grew, and once
// a server is back (on the same address) scaling resumes: up to the load,
// then to zero after it stops. No request fails throughout.
func TestServerDownUnderLoad(t *testing.T) {
	const app, job, service = "serverdown", "e2e--serverdown", "e2e--serverdown-web"
	purgeWithSettings(t, job, service)
	url := deploy(t, "serverdown.hcl", faultSpec(app, 3, 1, "3s", ""), api.DeployBody{}).Functions[0].URL + "/slow?ms=200"

	loop := &closedLoop{url: url}
	client := loop.client
	count := func(desired, running int) func() error {
		return func() error {
			if d, r := groupCount(t, job); d != desired || r != running {
				return fmt.Errorf("%d desired, %d running", d, r)
			}
			return nil
		}
	}
	var base, extra sync.WaitGroup
	stopBase, stopExtra := make(chan struct{}), make(chan struct{})
	base.Add(1)
	go client(stopBase, &base)
	eventually(t, time.Minute, "one container for one client", count(1, 1))

	addr := env.server.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := env.server.Shutdown(ctx); err != nil {
		t.Logf("shutting the server down: %v", err)
	}
	cancel()
	down := time.Now()
	// Two more clients while no server runs: they queue behind the one
	// container and are answered; nothing scales.
	for range 2 {
		extra.Add(1)
		go client(stopExtra, &extra)
	}
	for time.Since(down) < 6*time.Second {
		if d, _ := groupCount(t, job); d != 1 {
			t.Errorf("the count changed to %d with no server", d)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	okDown := loop.ok.Load()
	t.Logf("server down for %s: %d requests answered, %d failed", time.Since(down).Round(time.Millisecond), okDown, loop.failed.Load())

	// A server returns on the same address (its routes' forwardAuth and
	// the suite's client point there).
	// It embeds the stack's NATS again (the one gone with the server it
	// replaces: same directory, so the same address and token).
	srv, err := startServerWith("caravan-server-returned", func(c *server.Config) {
		c.Listen = addr
		c.NATS = server.NATSConfig{Dir: filepath.Join(env.stack.StateDir, "nats"), AckWait: warmAckWait}
	})
	if err != nil {
		t.Fatalf("starting a server again on %s: %v", addr, err)
	}
	env.server = srv
	eventually(t, 2*time.Minute, "three containers for three clients once a server is back", count(3, 3))
	// The decision is logged with its reason.
	eventually(t, 10*time.Second, "the returned server logs its scale-up with a reason", func() error {
		b, err := os.ReadFile(filepath.Join(env.stack.StateDir, "logs", "caravan-server-returned.log"))
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "scaled: function="+service) && strings.Contains(line, "to=3") && strings.Contains(line, `reason="up: `) {
				t.Logf("log: %s", line)
				return nil
			}
		}
		return fmt.Errorf("no scale-up of %s to 3 with a reason in its log", service)
	})
	close(stopExtra)
	extra.Wait()
	close(stopBase)
	base.Wait()
	eventually(t, 2*time.Minute, "the function scales to zero", count(0, 0))
	t.Logf("%d requests answered 200, %d failed", loop.ok.Load(), loop.failed.Load())
	loop.mu.Lock()
	for _, e := range loop.errs[:min(len(loop.errs), 10)] {
		t.Errorf("a request failed: %s", e)
	}
	loop.mu.Unlock()
}

// TestContainerDiesMidRequest runs a function on two containers, one
// request on each, then makes one container exit in the middle of its
// request: that request is a clean 502 (upstream_failed), and the
// requests queued meanwhile are served by the other container (or the
// restarted one), never sent to the dead one.
func TestContainerDiesMidRequest(t *testing.T) {
	const app, job, service = "diemid", "e2e--diemid", "e2e--diemid-web"
	purgeWithSettings(t, job, service)
	url := deploy(t, "diemid.hcl", faultSpec(app, 2, 1, "5m", ""), api.DeployBody{}).Functions[0].URL
	// Two at once, until two containers pass their checks.
	eventually(t, 2*time.Minute, "two containers", func() error {
		a, b := fetchAsync(url+"/slow?ms=500", time.Minute), fetchAsync(url+"/slow?ms=500", time.Minute)
		<-a
		<-b
		entries, _, err := env.consul.Health().Service(service, "", true, nil)
		if err != nil || len(entries) != 2 {
			return fmt.Errorf("%d containers pass (%v)", len(entries), err)
		}
		return nil
	})
	dying := fetchAsync(url+"/die?ms=1000", time.Minute)
	awaitLoad(t, service, 1, 0)
	long := fetchAsync(url+"/slow?ms=3000", time.Minute)
	awaitLoad(t, service, 2, 0)
	var queued []<-chan answer
	for range 3 {
		queued = append(queued, fetchAsync(url+"/slow?ms=100", time.Minute))
	}
	awaitLoad(t, service, 2, 3)

	if a := <-dying; a.status != http.StatusBadGateway || a.header.Get(proxy.HeaderError) != proxy.ErrorUpstreamFailed {
		t.Errorf("the request its container died in: %s; want 502 %s", a, proxy.ErrorUpstreamFailed)
	}
	if a := <-long; a.status != 200 {
		t.Errorf("the request on the other container: %s; want 200", a)
	}
	for i, ch := range queued {
		if a := <-ch; a.status != 200 || a.body != "done" {
			t.Errorf("queued request %d: %s; want 200", i, a)
		}
	}
}

// TestGPUFunctionFromZero deploys a scale-to-zero function asking for an
// H100 (the stack's fake device plugin has two): the deploy starts
// nothing, and the first request answers 200 from a container holding
// one GPU.
func TestGPUFunctionFromZero(t *testing.T) {
	const app, job, service = "gpuzero", "e2e--gpuzero", "e2e--gpuzero-infer"
	purgeWithSettings(t, job, service)
	src := strings.Replace(gpuApp(app, `"H100"`), "    web {}", "    min_containers   = 0\n    max_containers   = 1\n    scaledown_window = \"5m\"\n    web {}", 1)
	res := deploy(t, "gpuzero.hcl", src, api.DeployBody{})
	st, _, err := env.nomad.Jobs().ScaleStatus(job, nsq(job))
	if err != nil {
		t.Fatal(err)
	}
	if g := st.TaskGroups["infer"]; g.Desired != 0 || g.Running != 0 {
		t.Fatalf("after the deploy: %d desired, %d running; want 0 and 0", g.Desired, g.Running)
	}
	began := time.Now()
	a := fetch(res.Functions[0].URL, 2*time.Minute)
	if a.status != 200 || !strings.HasPrefix(a.body, "GPU-fake-h100-") || strings.Contains(a.body, ",") {
		t.Fatalf("first request at zero: %s; want 200 and one H100 id", a)
	}
	t.Logf("GPU function from zero: 200 after %s: %s", time.Since(began).Round(time.Millisecond), strings.TrimSpace(a.body))
}
