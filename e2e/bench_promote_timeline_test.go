//go:build bench

package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

// TestBenchPromoteTimeline prints, for canary promotions (2 live
// containers, 1 canary, as TestBenchCanaryAndBlueGreen), when each step
// of `caravan app promote` happens, from the moment the promotion is
// sent: Nomad's deployment promoted, the replacement placed, running, its
// task's Started event (Nomad's own timestamp), passing in Consul and
// healthy in Nomad (with Nomad's own timestamp of the verdict), the
// deployment successful, the canary re-tagged in Consul, the previous
// containers gone from Consul and from Traefik's service, the route's own
// router back in Traefik, the split's router gone, and the promotion's
// return. Everything but Nomad's timestamps is polled every 10 ms, so
// each time is late by up to that much (and the polling loads the
// machine a little).
func TestBenchPromoteTimeline(t *testing.T) {
	const runs = 3
	canary := `strategy = "canary"
    traffic  = 10`
	traefik := orchestrator.TraefikAPI{Addr: env.stack.TraefikAPI()}
	var totals []time.Duration
	for i := range runs {
		app := fmt.Sprintf("ptimeline%d", i)
		id := "e2e--" + app
		purge(t, id)
		deploy(t, app+".hcl", rolloutSpec(app, "v1", 2, canary, ""), api.DeployBody{})
		settled(t, id)
		src := rolloutSpec(app, "v2", 2, canary, "")
		res := deploy(t, app+".hcl", src, api.DeployBody{})
		if res.Canary == nil {
			t.Fatal("not a canary")
		}
		parsed, diags := spec.Parse([]byte(src), app+".hcl")
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		rc := router.DefaultConfig
		rc.Domain, rc.HTTPSPort = env.stack.Domain, env.stack.Ports.TraefikWebsecure
		rendered, err := jobs.Render(parsed, rc)
		if err != nil {
			t.Fatal(err)
		}
		r := rendered.Routes[0]
		dep, _, err := env.nomad.Jobs().LatestDeployment(id, nsq(id))
		if err != nil || dep == nil {
			t.Fatalf("deployment of %s: %v %v", id, dep, err)
		}
		allocs, _, err := env.nomad.Jobs().Allocations(id, false, nsq(id))
		if err != nil {
			t.Fatal(err)
		}
		ofDep, _, err := env.nomad.Deployments().Allocations(dep.ID, nsq(id))
		if err != nil {
			t.Fatal(err)
		}
		var oldAllocs, canaries []string
		for _, a := range ofDep {
			canaries = append(canaries, a.ID)
		}
		for _, a := range allocs {
			if a.DesiredStatus == "run" && !slices.Contains(canaries, a.ID) {
				oldAllocs = append(oldAllocs, a.ID)
			}
		}
		var oldServers []string
		if entries, _, err := env.consul.Health().Service(r.Name, "", false, nil); err == nil {
			for _, e := range entries {
				if slices.ContainsFunc(oldAllocs, func(a string) bool { return strings.Contains(e.Service.ID, a) }) {
					oldServers = append(oldServers, fmt.Sprintf("http://%s:%d", e.Service.Address, e.Service.Port))
				}
			}
		}

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		var mu sync.Mutex
		began := time.Now()
		seen := map[string]time.Duration{}
		mark := func(what string, at time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if _, ok := seen[what]; !ok {
				seen[what] = at.Sub(began)
			}
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				now := time.Now()
				if d, _, err := env.nomad.Deployments().Info(dep.ID, nsq(id)); err == nil {
					if g := d.TaskGroups[r.Function]; g != nil && g.Promoted {
						mark("deployment promoted", now)
					}
					if d.Status == nomad.DeploymentStatusSuccessful {
						mark("deployment successful", now)
					}
				}
				if as, _, err := env.nomad.Deployments().Allocations(dep.ID, nsq(id)); err == nil {
					for _, a := range as {
						if slices.Contains(canaries, a.ID) {
							continue
						}
						mark("replacement placed", now)
						if a.ClientStatus == "running" {
							mark("replacement running", now)
						}
						for _, ts := range a.TaskStates {
							for _, e := range ts.Events {
								if e.Type == "Started" {
									mark("replacement task started (Nomad event)", time.Unix(0, e.Time))
								}
							}
						}
						if ds := a.DeploymentStatus; ds != nil && ds.Healthy != nil && *ds.Healthy {
							mark("replacement healthy in Nomad", now)
							mark("replacement healthy (Nomad's timestamp)", ds.Timestamp)
						}
					}
				}
				if entries, _, err := env.consul.Health().Service(r.Name, "", false, nil); err == nil {
					old := 0
					for _, e := range entries {
						switch {
						case slices.ContainsFunc(oldAllocs, func(a string) bool { return strings.Contains(e.Service.ID, a) }):
							old++
						case slices.ContainsFunc(canaries, func(a string) bool { return strings.Contains(e.Service.ID, a) }):
							if !slices.Contains(e.Service.Tags, jobs.CanaryTag) {
								mark("canary re-tagged in Consul", now)
							}
						default:
							mark("replacement in Consul", now)
							if e.Checks.AggregatedStatus() == "passing" {
								mark("replacement passing in Consul", now)
							}
						}
					}
					if old == 0 {
						mark("old containers gone from Consul", now)
					}
				}
				if servers, err := traefik.Servers(ctx, router.StableService(r)); err == nil {
					if !slices.ContainsFunc(servers, func(s string) bool { return slices.Contains(oldServers, s) }) {
						mark("old containers gone from Traefik's service", now)
					}
				}
				if s, err := traefik.RouterService(ctx, r.Router+"@consulcatalog"); err == nil && s != "" {
					mark("route's router back in Traefik", now)
				}
				if s, err := traefik.RouterService(ctx, r.Name+"-split@consul"); err == nil && s == "" {
					mark("split router gone from Traefik", now)
				}
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
		p, err := env.client.Promote(context.Background(), app, api.ChangeBody{Workspace: "e2e"})
		if err != nil {
			t.Fatal(err)
		}
		mark("promote returned", time.Now())
		totals = append(totals, p.Duration)
		// Nomad's own verdict may come after the promotion returned.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			_, ok := seen["deployment successful"]
			mu.Unlock()
			if ok {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		wg.Wait()

		fmt.Printf("\npromote timeline, run %d (ms after the promotion was sent; polled every 10 ms; server-side duration %s):\n", i+1, p.Duration.Round(time.Millisecond))
		type step struct {
			what string
			at   time.Duration
		}
		var steps []step
		for k, v := range seen {
			steps = append(steps, step{k, v})
		}
		sort.Slice(steps, func(a, b int) bool { return steps[a].at < steps[b].at })
		for _, s := range steps {
			fmt.Printf("  %6d  %s\n", s.at.Milliseconds(), s.what)
		}
	}
	m, x := stats(totals)
	fmt.Printf("caravan app promote (server-side)  median %8s  max %8s  (%d runs)\n", m.Round(time.Millisecond), x.Round(time.Millisecond), runs)
}
