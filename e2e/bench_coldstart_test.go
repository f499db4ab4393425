//go:build bench

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/server"
	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// listenJS reports when it listened: /listened answers "<unix ms at
// listen> <ms from process start to listen>".
const listenJS = `let at = 0, own = 0;
require("http").createServer((q, s) => {
  if (q.url === "/listened") { s.end(at + " " + own); return; }
  s.end("ok");
}).listen(process.env.PORT, process.env.HOST, () => { at = Date.now(); own = Math.round(process.uptime() * 1000); });`

// TestBenchColdStart prints what a cold start costs beyond the
// container's own start (`just bench`, issue 13's figure): request at zero
// → 200, minus the container's own time to listen (process start to
// listen, as it reports), and from its listen to the 200; and each run's
// timeline (coldTimeline). It measures both ways a task can get caravan's
// agent, runs alternating: fetched as an artifact at every start (the
// suite's servers, and a server without --agent-command), and installed on
// the client (a second server of the stack with --agent-command, as
// `caravan dev up` runs its tasks), and installed with the function
// proxied inside Traefik (a third server, with --proxy-plugin). It asserts
// nothing about speed.
func TestBenchColdStart(t *testing.T) {
	const runs = 5
	fetched := newColdApp(t, env.client, "coldbench")
	installed := newColdApp(t, agentCommandClient(t), "coldagent")
	inside := startServerApart(t, "caravan-server-agent-command-in-traefik", func(c *server.Config) {
		c.Router.AgentCommand = caravanBin.agent
		c.Router.ProxyPlugin = "caravan"
	})
	inTraefik := newColdApp(t, &api.Client{Addr: "http://" + inside.Addr(), Token: env.client.Token}, "coldintraefik")
	for i := range runs {
		fetched.run(t, i)
		installed.run(t, i)
		inTraefik.run(t, i)
	}
	fetched.report(t, "tasks fetch the agent (an artifact at every start)")
	installed.report(t, "the agent installed on the client (--agent-command, as `caravan dev up` runs)")
	inTraefik.report(t, "the agent installed, the proxy inside Traefik (--proxy-plugin caravan)")
}

// coldApp is a web function at zero whose cold starts TestBenchColdStart
// measures, deployed through client.
type coldApp struct {
	job, service, url              string
	totals, overheads, afterListen []time.Duration
}

func newColdApp(t *testing.T, client *api.Client, app string) *coldApp {
	t.Helper()
	c := &coldApp{job: "e2e--" + app, service: "e2e--" + app + "-web"}
	purgeWithSettings(t, c.job, c.service)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := client.DeployBody(ctx, api.DeployBody{Filename: app + ".hcl", Spec: scaleFromZeroSpec(app, listenJS, 1, "2s")})
	if err != nil {
		t.Fatalf("deploy %s: %v", app, err)
	}
	c.url = res.Functions[0].URL
	return c
}

// run measures cold start i: it waits for the function at zero, then
// sends one request.
func (c *coldApp) run(t *testing.T, i int) {
	t.Helper()
	eventually(t, 2*time.Minute, "the function at zero", func() error {
		if d, r := groupCount(t, c.job); d != 0 || r != 0 {
			return fmt.Errorf("%d desired, %d running", d, r)
		}
		// A stopped container leaves Consul last: until then the
		// proxies may still give it a request.
		if entries, _, err := env.consul.Health().Service(c.service, "", false, nil); err != nil || len(entries) > 0 {
			return fmt.Errorf("%d containers in Consul (%v)", len(entries), err)
		}
		return nil
	})
	wctx, stopWatch := context.WithCancel(context.Background())
	seen := watchConsul(wctx, c.service)
	began := time.Now()
	status, body, err := getWithin(t, c.url+"/", time.Minute)
	answered := time.Now()
	stopWatch()
	if err != nil || status != http.StatusOK || body != "ok" {
		t.Fatalf("%s run %d: request at zero: %d %q %v", c.job, i, status, body, err)
	}
	status, body, err = getWithin(t, c.url+"/listened", time.Minute)
	var atMS, ownMS int64
	if _, serr := fmt.Sscanf(body, "%d %d", &atMS, &ownMS); err != nil || status != http.StatusOK || serr != nil {
		t.Fatalf("%s run %d: /listened: %d %q %v %v", c.job, i, status, body, err, serr)
	}
	total, own := answered.Sub(began), time.Duration(ownMS)*time.Millisecond
	after := answered.Sub(time.UnixMilli(atMS))
	c.totals, c.overheads, c.afterListen = append(c.totals, total), append(c.overheads, total-own), append(c.afterListen, after)
	t.Logf("%s run %d: 200 after %s; the container listened %s after its process started; listen → 200 %s",
		c.job, i, total.Round(time.Millisecond), own, after.Round(time.Millisecond))
	listened := time.UnixMilli(atMS)
	steps := append(seen(), step{"node process started (its own uptime)", listened.Add(-own)},
		step{"node listening", listened}, step{"200 at the client", answered})
	t.Logf("%s run %d timeline (ms after the request was sent):\n%s", c.job, i, coldTimeline(t, c.job, began, steps))
}

func (c *coldApp) report(t *testing.T, how string) {
	t.Logf("BENCH cold start, %s (%d runs): request at zero → 200 %s; minus the container's own time to listen: %s (goal ≤ 250ms); its listen → 200: %s",
		how, len(c.totals), fmtDurations(c.totals), fmtDurations(c.overheads), fmtDurations(c.afterListen))
}

// agentCommandClient starts a second caravan server of the stack whose
// tasks run the agent binary in place (--agent-command) instead of
// fetching it, and returns a client of it.
func agentCommandClient(t *testing.T) *api.Client {
	t.Helper()
	srv := startServerApart(t, "caravan-server-agent-command", func(c *server.Config) {
		c.Router.AgentCommand = caravanBin.agent
	})
	return &api.Client{Addr: "http://" + srv.Addr(), Token: env.client.Token}
}

// step is one moment of a cold start.
type step struct {
	what string
	at   time.Time
}

// watchConsul follows service's instances in Consul with blocking queries
// (as the proxies do) until ctx ends; the function it returns lists when
// an instance was first seen and first passing.
func watchConsul(ctx context.Context, service string) func() []step {
	var mu sync.Mutex
	var out []step
	marked := map[string]bool{}
	mark := func(what string) {
		mu.Lock()
		defer mu.Unlock()
		if !marked[what] {
			marked[what] = true
			out = append(out, step{what, time.Now()})
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var index uint64
		for ctx.Err() == nil {
			q := (&consul.QueryOptions{WaitIndex: index, WaitTime: time.Minute}).WithContext(ctx)
			entries, meta, err := env.consul.Health().Service(service, "", false, q)
			if err != nil {
				continue
			}
			index = meta.LastIndex
			for _, e := range entries {
				mark("Consul: instance registered (blocking query)")
				if e.Checks.AggregatedStatus() == consul.HealthPassing {
					mark("Consul: check passing (blocking query)")
				}
			}
		}
	}()
	return func() []step {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return out
	}
}

// coldTimeline is the cold start of job's web group that began at began,
// in Nomad's own timestamps (the scaling event, its evaluation, the
// allocation, its task's events) and the steps given, sorted, one line
// each in ms after began.
func coldTimeline(t *testing.T, job string, began time.Time, steps []step) string {
	t.Helper()
	st, _, err := env.nomad.Jobs().ScaleStatus(job, nsq(job))
	if err != nil {
		t.Fatalf("scale status of %s: %v", job, err)
	}
	for _, e := range st.TaskGroups["web"].Events {
		at := time.Unix(0, int64(e.Time))
		if at.Before(began) || e.Count == nil || *e.Count == 0 {
			continue
		}
		steps = append(steps, step{"Nomad: scaling event (" + e.Message + ")", at})
		if e.EvalID != nil {
			if ev, _, err := env.nomad.Evaluations().Info(*e.EvalID, nsq(job)); err == nil {
				steps = append(steps, step{"Nomad: its evaluation created", time.Unix(0, ev.CreateTime)},
					step{"Nomad: its evaluation " + ev.Status, time.Unix(0, ev.ModifyTime)})
			}
		}
	}
	var placed []*nomad.Allocation
	// The client tells the servers its task's events in batches: wait
	// for the Started one.
	eventually(t, 10*time.Second, "the new allocation's Started event at the servers", func() error {
		allocs, _, err := env.nomad.Jobs().Allocations(job, true, nsq(job))
		if err != nil {
			return err
		}
		placed = nil
		for _, stub := range allocs {
			if time.Unix(0, stub.CreateTime).Before(began) {
				continue
			}
			a, _, err := env.nomad.Allocations().Info(stub.ID, nsq(job))
			if err != nil {
				return err
			}
			if a.TaskStates["web"] == nil || a.TaskStates["web"].StartedAt.IsZero() {
				return fmt.Errorf("allocation %s not started at the servers yet", a.ID)
			}
			placed = append(placed, a)
		}
		return nil
	})
	for _, a := range placed {
		steps = append(steps, step{"Nomad: allocation placed " + a.ID[:8], time.Unix(0, a.CreateTime)})
		for task, ts := range a.TaskStates {
			for _, e := range ts.Events {
				what := "Nomad task " + task + ": " + e.Type
				if e.DisplayMessage != "" {
					what += " (" + e.DisplayMessage + ")"
				}
				steps = append(steps, step{what, time.Unix(0, e.Time)})
			}
		}
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].at.Before(steps[j].at) })
	var b strings.Builder
	for _, s := range steps {
		if s.at.After(began.Add(time.Minute)) {
			continue // the task's later events (none before its 200 is late)
		}
		fmt.Fprintf(&b, "  %6d  %s\n", s.at.Sub(began).Milliseconds(), s.what)
	}
	return b.String()
}

func fmtDurations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Round(time.Millisecond).String()
	}
	return strings.Join(parts, ", ")
}
