//go:build bench

package cluster

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// The cluster's figures (`just cluster-bench`): deploy time of a new app,
// the faults the cluster tests inject, measured and printed, and P6, 100
// apps deployed at once. Each prints what it measured and how; none
// asserts a time.

// untilAnswered is how long after start every url answers 200 with body
// through Traefik over HTTPS verified by the stack's CA (polling every
// 100ms, for at most timeout).
func untilAnswered(start time.Time, timeout time.Duration, urls []string, body string) (time.Duration, error) {
	deadline := start.Add(timeout)
	pending := slices.Clone(urls)
	for {
		var left []string
		var last error
		for _, u := range pending {
			status, got, err := get(u)
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

// TestBenchClusterDeploy: five new apps of three functions, one after
// another, each deployed through a caravan server (alternating) and timed
// from the deploy request until all three URLs answer over verified TLS.
func TestBenchClusterDeploy(t *testing.T) {
	const runs = 5
	var calls, totals []time.Duration
	for i := range runs {
		app := fmt.Sprintf("benchdeploy%d", i)
		purge(t, "e2e--"+app)
		began := time.Now()
		res := deploy(t, env.servers[i%2], app+".hcl", threeFunctions(app, "hi\n"), api.DeployBody{})
		call := time.Since(began)
		var urls []string
		for _, f := range res.Functions {
			urls = append(urls, f.URL)
		}
		if len(urls) != 3 {
			t.Fatalf("%d function URLs, want 3", len(urls))
		}
		total, err := untilAnswered(began, 2*time.Minute, urls, "hi\n")
		if err != nil {
			t.Fatal(err)
		}
		calls, totals = append(calls, call), append(totals, total)
		t.Logf("run %d: deploy call %s, all 3 URLs answer after %s", i+1, ms(call), ms(total))
	}
	cp50, cmax := quantiles(calls)
	tp50, tmax := quantiles(totals)
	t.Logf("FIGURE cluster deploy of a new 3-function app (1 container each, node, raw_exec), %d runs, alternating the two caravan servers: "+
		"deploy call p50 %s max %s; until every URL answers 200 over HTTPS verified by the stack's CA (polled every 100ms) p50 %s max %s",
		runs, ms(cp50), ms(cmax), ms(tp50), ms(tmax))
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
