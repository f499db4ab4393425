package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/proxy"
)

// concurrencyJS answers /slow?ms=N after N ms and counts the requests it
// serves at once; /stats reports the most it saw, and how many times that
// went past MAX (a violation of max_inputs), as "peak=P violations=V";
// /forwarded the X-Forwarded-Proto and -For it got, and any Caravan-Function;
// /echo answers the request's body.
const concurrencyJS = `const MAX = +process.env.MAX_INPUTS;
let now = 0, peak = 0, violations = 0;
require("http").createServer((q, s) => {
  if (q.url === "/stats") { s.end("peak=" + peak + " violations=" + violations); return; }
  if (q.url === "/healthz") { s.end("ok"); return; }
  if (q.url === "/echo") { q.pipe(s); return; }
  if (q.url === "/forwarded") { s.end([q.headers["x-forwarded-proto"], q.headers["x-forwarded-for"], q.headers["caravan-function"]].join(" ")); return; }
  now++; peak = Math.max(peak, now); if (now > MAX) violations++;
  const ms = +(new URL(q.url, "http://x").searchParams.get("ms") || 0);
  setTimeout(() => { now--; s.end("done"); }, ms);
}).listen(process.env.PORT, process.env.HOST);`

func autoscaleSpec(app string, maxInputs int, window string) string {
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
    max_containers   = 3
    scaledown_window = %q
    concurrency {
      max_inputs = %d
    }
    web {
      health_path = "/healthz"
    }
  }
}
`, app, strconv.Quote(concurrencyJS), maxInputs, window, maxInputs)
}

// groupCount is the count Nomad has for the web group of job, and how many
// of its allocations run.
func groupCount(t *testing.T, job string) (desired, running int) {
	t.Helper()
	st, _, err := env.nomad.Jobs().ScaleStatus(job, nsq(job))
	if err != nil {
		t.Fatalf("scale status of %s: %v", job, err)
	}
	g := st.TaskGroups["web"]
	return g.Desired, g.Running
}

// TestAutoscaleFromZero deploys a min_containers = 0 function: the deploy
// starts no container, the first request answers 200 through a cold start,
// a small concurrent load never puts more than max_inputs requests on one
// container, the function goes back to zero after its scaledown_window,
// and the next request starts it again.
func TestAutoscaleFromZero(t *testing.T) {
	const app, job, service = "scale", "e2e--scale", "e2e--scale-web"
	purgeWithSettings(t, job, service)

	res := deploy(t, "scale.hcl", autoscaleSpec(app, 2, "4s"), api.DeployBody{})
	url := res.Functions[0].URL
	if d, r := groupCount(t, job); d != 0 || r != 0 {
		t.Fatalf("after the deploy: %d desired, %d running; want 0 and 0 (a deploy starts none at zero)", d, r)
	}

	// The first request waits in the proxy through the cold start.
	began := time.Now()
	status, body, err := getWithin(t, url+"/slow?ms=0", time.Minute)
	if err != nil || status != http.StatusOK || body != "done" {
		t.Fatalf("first request at zero: %d %q %v, want 200 \"done\"", status, body, err)
	}
	t.Logf("cold start: 200 after %s", time.Since(began).Round(time.Millisecond))
	if d, _ := groupCount(t, job); d < 1 {
		t.Fatalf("after the first request: %d desired, want at least 1", d)
	}

	// Six at a time, three rounds, against max_inputs 2: every request
	// answers, and no container ever serves more than 2.
	slowRounds(t, url, 3, 6)
	eventually(t, 2*time.Minute, "every container reports no violation of max_inputs", func() error {
		return checkStats(t, job)
	})

	// Idle for the window (4 s): back to zero, every container gone.
	scalesToZero(t, job)
	// The route outlives the last container: from zero again.
	status, body, err = getWithin(t, url+"/slow?ms=0", time.Minute)
	if err != nil || status != http.StatusOK || body != "done" {
		t.Fatalf("first request after scaling to zero: %d %q %v, want 200 \"done\"", status, body, err)
	}

	// A rollout at zero: the deploy starts nothing, and the new version
	// starts on the next request.
	eventually(t, 2*time.Minute, "the function scales to zero again", func() error {
		if d, r := groupCount(t, job); d != 0 || r != 0 {
			return fmt.Errorf("%d desired, %d running", d, r)
		}
		return nil
	})
	if res := deploy(t, "scale.hcl", autoscaleSpec(app, 2, "30s"), api.DeployBody{}); !res.Changed {
		t.Fatal("the changed spec deployed as a no-op")
	}
	if d, r := groupCount(t, job); d != 0 || r != 0 {
		t.Fatalf("after a rollout at zero: %d desired, %d running; want 0 and 0", d, r)
	}
	status, body, err = getWithin(t, url+"/slow?ms=0", time.Minute)
	if err != nil || status != http.StatusOK || body != "done" {
		t.Fatalf("first request after a rollout at zero: %d %q %v, want 200 \"done\"", status, body, err)
	}
	// A rollout with a container running keeps the autoscaler's count
	// (the 30 s window holds it at one meanwhile).
	if d, _ := groupCount(t, job); d != 1 {
		t.Fatalf("after the request: %d desired, want 1", d)
	}
	if res := deploy(t, "scale.hcl", autoscaleSpec(app, 2, "20s"), api.DeployBody{}); !res.Changed {
		t.Fatal("the changed spec deployed as a no-op")
	}
	if d, r := groupCount(t, job); d != 1 || r < 1 {
		t.Fatalf("after a rollout at one container: %d desired, %d running; want 1 (the count carried over)", d, r)
	}
	status, body, err = getWithin(t, url+"/slow?ms=0", time.Minute)
	if err != nil || status != http.StatusOK || body != "done" {
		t.Fatalf("after the rollout: %d %q %v, want 200 \"done\"", status, body, err)
	}
}

// scalesToZero waits until job's web group runs no container and wants
// none.
func scalesToZero(t *testing.T, job string) {
	t.Helper()
	eventually(t, 2*time.Minute, "the function scales to zero", func() error {
		if d, r := groupCount(t, job); d != 0 || r != 0 {
			return fmt.Errorf("%d desired, %d running", d, r)
		}
		return nil
	})
}

// slowRounds sends rounds rounds of n concurrent /slow?ms=300 requests to
// url, each round after the last has answered: every one must be 200.
func slowRounds(t *testing.T, url string, rounds, n int) {
	t.Helper()
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make(chan string, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, body, err := getWithin(t, url+"/slow?ms=300", time.Minute)
				if err != nil || status != http.StatusOK {
					errs <- fmt.Sprintf("%d %q %v", status, body, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("round %d: a request failed: %s", round, e)
		}
	}
}

// getWithin is get with a longer deadline (a cold start waits in the
// proxy's queue).
func getWithin(t *testing.T, url string, d time.Duration) (int, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := env.https.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b := new(strings.Builder)
	_, err = fmt.Fprint(b, readAll(resp))
	if e := resp.Header.Get(proxy.HeaderError); e != "" {
		return resp.StatusCode, b.String() + " (" + proxy.HeaderError + ": " + e + ")", err
	}
	return resp.StatusCode, b.String(), err
}

func readAll(resp *http.Response) string {
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}

// checkStats asks each running container of job's web group, directly,
// for its stats: any violation of max_inputs fails the test.
func checkStats(t *testing.T, job string) error {
	t.Helper()
	entries, _, err := env.consul.Health().Service(job+"-web", "", true, nil)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return fmt.Errorf("no container passes its checks")
	}
	for _, e := range entries {
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/stats", e.Service.Address, e.Service.Port))
		if err != nil {
			return err
		}
		stats := readAll(resp)
		resp.Body.Close()
		t.Logf("container %s: %s", e.Service.ID, stats)
		if !strings.Contains(stats, "violations=0") {
			t.Errorf("container %s served more than max_inputs at once: %s", e.Service.ID, stats)
		}
	}
	return nil
}

// TestAutoscaleRamp ramps the load of a scale-to-zero function (one
// request per container at once) from 1 client to 3 and back to 1: every
// request answers 200, the count follows the load up to 3, no container
// ever serves two at once, and the function ends at zero.
func TestAutoscaleRamp(t *testing.T) {
	const app, job, service = "ramp", "e2e--ramp", "e2e--ramp-web"
	purgeWithSettings(t, job, service)
	res := deploy(t, "ramp.hcl", autoscaleSpec(app, 1, "3s"), api.DeployBody{})
	url := res.Functions[0].URL + "/slow?ms=200"

	var (
		mu     sync.Mutex
		ok     int
		failed []string
	)
	client := func(stop <-chan struct{}, wg *sync.WaitGroup) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			status, body, err := getWithin(t, url, time.Minute)
			mu.Lock()
			if err != nil || status != http.StatusOK {
				failed = append(failed, fmt.Sprintf("%d %q %v", status, body, err))
			} else {
				ok++
			}
			mu.Unlock()
		}
	}
	var base, extra sync.WaitGroup
	stopBase, stopExtra := make(chan struct{}), make(chan struct{})
	base.Add(1)
	go client(stopBase, &base)
	eventually(t, time.Minute, "one container for one client", func() error {
		if d, r := groupCount(t, job); d != 1 || r != 1 {
			return fmt.Errorf("%d desired, %d running", d, r)
		}
		return nil
	})
	for range 2 {
		extra.Add(1)
		go client(stopExtra, &extra)
	}
	eventually(t, time.Minute, "three containers for three clients", func() error {
		if d, r := groupCount(t, job); d != 3 || r != 3 {
			return fmt.Errorf("%d desired, %d running", d, r)
		}
		return nil
	})
	if err := checkStats(t, job); err != nil {
		t.Error(err)
	}
	close(stopExtra)
	extra.Wait()
	eventually(t, time.Minute, "back to one container for one client", func() error {
		if d, r := groupCount(t, job); d != 1 || r != 1 {
			return fmt.Errorf("%d desired, %d running", d, r)
		}
		return nil
	})
	close(stopBase)
	base.Wait()
	eventually(t, time.Minute, "the function scales to zero", func() error {
		if d, r := groupCount(t, job); d != 0 || r != 0 {
			return fmt.Errorf("%d desired, %d running", d, r)
		}
		return nil
	})
	mu.Lock()
	t.Logf("%d requests answered 200, %d failed", ok, len(failed))
	for _, f := range failed {
		t.Errorf("a request failed: %s", f)
	}
	mu.Unlock()

	// A stop removes the routes and the record: the hostname answers 404
	// (Stop waits for it), and no proxy queues for the function.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := env.client.Stop(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if kv, _, err := env.consul.KV().Get(proxy.SettingsKVPrefix+service, nil); err != nil || kv != nil {
		t.Errorf("the record of %s outlived the stop (%v)", service, err)
	}
	if status, _, _ := get(t, url); status != http.StatusNotFound {
		t.Errorf("after the stop, GET %s = %d, want 404", url, status)
	}
}
