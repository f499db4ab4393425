//go:build bench

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
)

// TestBenchNewAppTimeline prints, for new 3-function apps, when each step
// of a function's way to its first answer happens, from the moment the
// deploy is sent: Nomad's allocation running and its task's Started event
// (Nomad's own timestamp), the process accepting TCP connections, Consul's
// registration and first passing check, the first route's service (see
// orchestrator/firstroute.go) and the route's with a server in Traefik's
// API, the first 200 over verified TLS, and the deploy's
// return. Everything but the task event is polled every 10 ms, so each
// time is late by up to that much.
func TestBenchNewAppTimeline(t *testing.T) {
	const runs = 3
	for i := range runs {
		app := fmt.Sprintf("timeline%d", i)
		id := "e2e--" + app
		purge(t, id)
		src := threeFunctions(app, "v1")
		parsed, diags := spec.Parse([]byte(src), app+".hcl")
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		rc := router.DefaultConfig
		rc.Domain, rc.HTTPSPort, rc.AuthURL = env.stack.Domain, env.stack.Ports.TraefikWebsecure, router.AuthURL(env.server.Addr())
		rendered, err := jobs.Render(parsed, rc)
		if err != nil {
			t.Fatal(err)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		began := time.Now()
		var mu sync.Mutex
		seen := map[string]time.Duration{}
		mark := func(what string, at time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if _, ok := seen[what]; !ok {
				seen[what] = at.Sub(began)
			}
		}
		var wg sync.WaitGroup
		for _, r := range rendered.Routes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				timeline(ctx, id, r, func(what string, at time.Time) { mark(r.Function+" "+what, at) })
			}()
		}
		deploy(t, app+".hcl", src, api.DeployBody{})
		mark("deploy returned", time.Now())
		wg.Wait()
		cancel()

		fmt.Printf("\nnew-app timeline, run %d (ms after the deploy was sent; polled every 10 ms):\n", i+1)
		steps := []string{"alloc running", "task started (Nomad event)", "process listening", "Consul registered", "Consul passing", "first route in Traefik", "Traefik server", "first 200 over TLS"}
		fmt.Printf("%-8s", "")
		for _, s := range steps {
			fmt.Printf(" | %s", s)
		}
		fmt.Println()
		for _, r := range rendered.Routes {
			fmt.Printf("%-8s", r.Function)
			for _, s := range steps {
				d, ok := seen[r.Function+" "+s]
				v := "-"
				if ok {
					v = strconv.FormatInt(d.Milliseconds(), 10)
				}
				fmt.Printf(" | %*s", len(s), v)
			}
			fmt.Println()
		}
		fmt.Printf("deploy returned at %d ms\n", seen["deploy returned"].Milliseconds())
		for k, v := range seen {
			if strings.Contains(k, "status ") {
				fmt.Printf("  %s at %d ms\n", k, v.Milliseconds())
			}
		}
		if _, err := env.client.Stop(context.Background(), app, api.ChangeBody{Workspace: "e2e"}); err != nil {
			t.Fatal(err)
		}
	}
}

// timeline polls every step of route r of job id until its first 200 over
// verified TLS and Consul's passing check, calling mark once per step.
func timeline(ctx context.Context, id string, r router.Route, mark func(string, time.Time)) {
	admin := "http://127.0.0.1:" + strconv.Itoa(env.stack.Ports.TraefikAdmin)
	var addr, last string
	var changes int
	var answered, passing bool
	for ctx.Err() == nil && (!answered || !passing) {
		now := time.Now()
		if allocs, _, err := env.nomad.Jobs().Allocations(id, false, nsq(id)); err == nil {
			for _, a := range allocs {
				if a.TaskGroup != r.Function {
					continue
				}
				if a.ClientStatus == "running" {
					mark("alloc running", now)
				}
				for _, ts := range a.TaskStates {
					for _, e := range ts.Events {
						if e.Type == "Started" {
							mark("task started (Nomad event)", time.Unix(0, e.Time))
						}
					}
				}
			}
		}
		if entries, _, err := env.consul.Health().Service(r.Name, "", false, nil); err == nil {
			for _, e := range entries {
				mark("Consul registered", now)
				addr = net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port))
				st := e.Checks.AggregatedStatus()
				if st != last {
					mark(fmt.Sprintf("status %s#%d", st, changes), now)
					changes++
					last = st
				}
				if st == "passing" {
					mark("Consul passing", now)
					passing = true
				}
			}
		}
		if addr != "" {
			if c, err := net.DialTimeout("tcp", addr, 50*time.Millisecond); err == nil {
				c.Close()
				mark("process listening", now)
			}
		}
		for step, service := range map[string]string{"Traefik server": router.StableService(r), "first route in Traefik": router.FirstService(r) + "@consul"} {
			if resp, err := http.Get(admin + "/api/http/services/" + service); err == nil {
				var svc struct {
					LoadBalancer *struct {
						Servers []json.RawMessage `json:"servers"`
					} `json:"loadBalancer"`
				}
				if resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&svc) == nil && svc.LoadBalancer != nil && len(svc.LoadBalancer.Servers) > 0 {
					mark(step, now)
				}
				resp.Body.Close()
			}
		}
		if !answered {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/", nil)
			if resp, err := env.https.Do(req); err == nil {
				drain(resp)
				if resp.StatusCode == 200 {
					mark("first 200 over TLS", time.Now())
					answered = true
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}
