package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/router"
)

// lateListener is a spec of one web function whose Node.js server answers
// body, and listens only after delay.
func lateListener(app, body string, delay time.Duration) string {
	js := fmt.Sprintf(`const s = require("http").createServer((q, r) => r.end(%s)); setTimeout(() => s.listen(process.env.PORT, process.env.HOST), %d);`,
		strconv.Quote(body), delay.Milliseconds())
	return nodeApp(app, js)
}

// TestNewAppThatListensLate: a new app's deploy ends only once its URL
// really answers, here 2 s after the process starts (Consul's first check
// of it fails, and a route that went live before the check passed would
// be a deploy that reports success early); and a rolling update's
// replacement that listens as late takes no request before it listens: no
// request fails under steady load across it.
func TestNewAppThatListensLate(t *testing.T) {
	const app, id = "late", "e2e--late"
	purge(t, id)
	res := deploy(t, "late.hcl", lateListener(app, "v1\n", 2*time.Second), api.DeployBody{})
	url := res.Functions[0].URL
	// One GET, no retry: the deploy said it serves.
	if status, body, err := get(t, url+"/"); err != nil || status != 200 || body != "v1\n" {
		t.Fatalf("right after the deploy returned, GET %s: %d %q %v", url, status, body, err)
	}

	stop := make(chan struct{})
	l := runLoad(context.Background(), url+"/", 100, stop)
	res = deploy(t, "late.hcl", lateListener(app, "v2\n", 2*time.Second), api.DeployBody{Strategy: "rolling"})
	t.Logf("rolling update to a late listener: version %d in %s", res.Version, res.Duration.Round(time.Millisecond))
	if status, body, err := get(t, url+"/"); err != nil || status != 200 || body != "v2\n" {
		t.Errorf("right after the rolling deploy returned, GET %s: %d %q %v", url, status, body, err)
	}
	close(stop)
	<-l.Done
	sent, failed := l.Sent.Load(), l.Failed.Load()
	t.Logf("load: %d requests, %d failed", sent, failed)
	if sent == 0 || failed != 0 {
		t.Fatalf("%d of %d requests failed across a rolling update to a container that listens 2 s late; first: %v", failed, sent, l.FirstErrors())
	}
}

// TestNewAppFirstRouteHandsOver: a new app's first route (the copy of its
// route caravan publishes in Traefik's KV the moment its container
// answers, see orchestrator/firstroute.go) is gone soon after the deploy,
// from Consul's KV and from Traefik, once Traefik serves the route from
// Consul's catalog, which still answers; and its session with it.
func TestNewAppFirstRouteHandsOver(t *testing.T) {
	const app, id = "handover", "e2e--handover"
	purge(t, id)
	service := id + "-web"
	root := router.DefaultConfig.KVRoot
	firstKeys := func() []string {
		var out []string
		for _, kind := range []string{"routers", "middlewares", "services"} {
			keys, _, err := env.consul.KV().Keys(root+"/http/"+kind+"/", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				if strings.Contains(k, "/"+service) && strings.Contains(k, router.FirstSuffix+"/") {
					out = append(out, k)
				}
			}
		}
		return out
	}
	// Watch while the deploy runs: whether the first route was published
	// depends on which comes first, the container's answer or Consul's
	// check (a random moment within its interval), so it is logged only.
	ctx, cancel := context.WithCancel(context.Background())
	seen := make(chan bool, 1)
	go func() {
		was := false
		for ctx.Err() == nil && !was {
			was = len(firstKeys()) > 0
			time.Sleep(20 * time.Millisecond)
		}
		seen <- was
	}()
	res := deploy(t, "handover.hcl", lateListener(app, "v1\n", time.Second), api.DeployBody{})
	url := res.Functions[0].URL
	if status, body, err := get(t, url+"/"); err != nil || status != 200 || body != "v1\n" {
		t.Fatalf("right after the deploy returned, GET %s: %d %q %v", url, status, body, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		keys := firstKeys()
		routers := traefikFirstRouters(t, service)
		if len(keys) == 0 && len(routers) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("15 s after the deploy, its first route is left: keys %v, Traefik routers %v", keys, routers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if !<-seen {
		t.Log("Consul's check passed before the container answered caravan's probe: no first route this time")
	}
	sessions, _, err := env.consul.Session().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions {
		if s.Name == "caravan first routes" {
			t.Errorf("a first routes' session is left: %+v", s)
		}
	}
	// Consul's route serves.
	if status, body, err := get(t, url+"/"); err != nil || status != 200 || body != "v1\n" {
		t.Fatalf("after the first route went, GET %s: %d %q %v", url, status, body, err)
	}
	if _, err := env.client.Stop(context.Background(), app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatal(err)
	}
}

// traefikFirstRouters are the first routers of service Traefik serves.
func traefikFirstRouters(t *testing.T, service string) []string {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(env.stack.Ports.TraefikAdmin) + "/api/http/routers?per_page=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var routers []struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&routers); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range routers {
		if strings.HasPrefix(r.Name, service) && strings.HasSuffix(r.Name, router.FirstSuffix+"@consul") {
			out = append(out, r.Name)
		}
	}
	return out
}
