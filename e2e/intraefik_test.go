package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/server"
	consul "github.com/hashicorp/consul/api"
)

// TestProxyInTraefik deploys a scale-to-zero function through a caravan
// server that renders with --proxy-plugin caravan: its routers end in the
// caravan plugin of the stack's Traefik (caravan's build), whose proxy, in
// Traefik's process, holds the first request through the cold start,
// keeps each container to max_inputs, reports its load to the autoscaler
// (which scales the function back to zero after its window) and starts it
// again on the next request. The proxy in Traefik is registered in Consul
// beside the standalone ones, and out of their failover chain.
func TestProxyInTraefik(t *testing.T) {
	const app, job, service = "intraefik", "e2e--intraefik", "e2e--intraefik-web"
	purgeWithSettings(t, job, service)
	client := pluginClient(t)

	// The proxy in Traefik registered itself, with its admin address.
	admin := fmt.Sprintf("http://127.0.0.1:%d", env.stack.Ports.TraefikProxyAdmin)
	eventually(t, time.Minute, "the proxy in Traefik passes its check in Consul", func() error {
		entries, _, err := env.consul.Health().Service(proxy.ServiceName, "", true, nil)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Service.Meta[proxy.MetaInTraefik] == "true" && e.Service.Meta[proxy.MetaAdmin] == admin {
				return nil
			}
		}
		return fmt.Errorf("%d passing proxies, none in Traefik at %s", len(entries), admin)
	})
	pairs, _, err := env.consul.KV().List("traefik/http/services/caravan-prox", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		if string(p.Value) == fmt.Sprintf("http://127.0.0.1:%d", env.stack.Ports.TraefikProxyAdmin) {
			t.Errorf("the failover chain lists the proxy in Traefik: %s = %s", p.Key, p.Value)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := client.DeployBody(ctx, api.DeployBody{Filename: "intraefik.hcl", Spec: autoscaleSpec(app, 2, "4s")})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	url := res.Functions[0].URL
	if d, r := groupCount(t, job); d != 0 || r != 0 {
		t.Fatalf("after the deploy: %d desired, %d running; want 0 and 0", d, r)
	}
	routers, _, err := env.consul.KV().List("traefik/http/routers/"+service, nil)
	if err != nil {
		t.Fatal(err)
	}
	noop := false
	for _, p := range routers {
		noop = noop || string(p.Value) == "noop@internal"
	}
	if !noop {
		t.Errorf("the function's routers do not end in the plugin (no noop@internal service): %v", kvKeys(routers))
	}

	began := time.Now()
	status, body, err := getWithin(t, url+"/slow?ms=0", time.Minute)
	if err != nil || status != http.StatusOK || body != "done" {
		t.Fatalf("first request at zero, through the proxy in Traefik: %d %q %v, want 200 \"done\"", status, body, err)
	}
	t.Logf("cold start: 200 after %s", time.Since(began).Round(time.Millisecond))
	// The container sees the client's scheme and address as behind
	// Traefik alone, and not the header that named its function.
	if status, body, err := getWithin(t, url+"/forwarded", time.Minute); err != nil || status != http.StatusOK || body != "https 127.0.0.1 " {
		t.Errorf("/forwarded: %d %q %v, want 200 %q (X-Forwarded-Proto, -For; no Caravan-Function)", status, body, err, "https 127.0.0.1 ")
	}

	// Over HTTP/2 (Traefik speaks it to clients; the proxy, to the
	// container, HTTP/1.1): a GET, and a POST whose body has no length.
	h2 := orchestrator.ProxyClient(env.stack.HTTPSAddr(), env.roots)
	h2.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	h2.Timeout = time.Minute
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		var body io.Reader
		path, want := "/slow?ms=0", "done"
		if method == http.MethodPost {
			body = io.MultiReader(strings.NewReader("part one, "), strings.NewReader("part two")) // no Content-Length
			path, want = "/echo", "part one, part two"
		}
		req, _ := http.NewRequest(method, url+path, body)
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatalf("%s over HTTP/2: %v", method, err)
		}
		got := readAll(resp)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || got != want {
			t.Errorf("%s over HTTP/2: %s %s %q, want HTTP/2.0 200 %q", method, resp.Proto, resp.Status, got, want)
		}
	}

	// Six at a time, three rounds, against max_inputs 2.
	slowRounds(t, url, 3, 6)
	eventually(t, 2*time.Minute, "every container reports no violation of max_inputs", func() error {
		return checkStats(t, job)
	})
	// The proxy in Traefik counted them: its load report names the function.
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics := readAll(resp)
	resp.Body.Close()
	if !strings.Contains(metrics, `function="`+service+`"`) {
		t.Errorf("the proxy in Traefik's metrics do not name %s", service)
	}

	// A WebSocket through the plugin: Traefik's response writer hands
	// the proxy its connection (an Upgrade holds a container's slot).
	const wsJob = "e2e--intraefikws"
	purgeWithSettings(t, wsJob, wsJob+"-echo")
	wsSrc := fmt.Sprintf(`app "intraefikws" {
  workspace = "e2e"
  function "echo" {
    command        = %q
    min_containers = 0
    max_containers = 1
    web {}
  }
}
`, buildWSEcho(t))
	wres, err := client.DeployBody(ctx, api.DeployBody{Filename: "intraefikws.hcl", Spec: wsSrc})
	if err != nil {
		t.Fatalf("deploy the WebSocket echo: %v", err)
	}
	wsEcho(t, wres.Functions[0].URL)

	scalesToZero(t, job)
	status, body, err = getWithin(t, url+"/slow?ms=0", time.Minute)
	if err != nil || status != http.StatusOK || body != "done" {
		t.Fatalf("first request after scaling to zero: %d %q %v, want 200 \"done\"", status, body, err)
	}
}

func kvKeys(pairs consul.KVPairs) []string {
	var out []string
	for _, p := range pairs {
		out = append(out, p.Key+"="+string(p.Value))
	}
	return out
}

// pluginClient starts a caravan server of the stack that renders with
// --proxy-plugin caravan and returns a client of it.
func pluginClient(t *testing.T) *api.Client {
	t.Helper()
	srv := startServerApart(t, "caravan-server-proxy-plugin", func(c *server.Config) {
		c.Router.ProxyPlugin = "caravan"
	})
	return &api.Client{Addr: "http://" + srv.Addr(), Token: env.client.Token}
}

// TestCanaryInTraefik: an autoscaled function deployed canary through the
// proxy inside Traefik: the preview answers from the canary alone, the
// split's share reaches it (its header set before the plugin), and the
// promotion puts every request on the new version.
func TestCanaryInTraefik(t *testing.T) {
	const app, job, service = "wren", "e2e--wren", "e2e--wren-web"
	purgeWithSettings(t, job, service)
	client := pluginClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	canary := `strategy = "canary"
    traffic  = 30`
	v1, err := client.DeployBody(ctx, api.DeployBody{Filename: "wren.hcl", Spec: autoscaledRolloutSpec(app, "v1", canary)})
	if err != nil {
		t.Fatalf("deploy v1: %v", err)
	}
	url := v1.Functions[0].URL
	answers(t, url, "v1")
	v2, err := client.DeployBody(ctx, api.DeployBody{Filename: "wren.hcl", Spec: autoscaledRolloutSpec(app, "v2", canary)})
	if err != nil || v2.Canary == nil {
		t.Fatalf("deploy v2: %v, canary %+v", err, v2)
	}
	preview := v2.Canary.Previews["web"]
	if counts := tally(t, preview, 30); counts["v2"] != 30 {
		t.Errorf("preview answered %v, want v2 alone", counts)
	}
	counts := tally(t, url, 300)
	share := float64(counts["v2"]) / 3
	t.Logf("canary share over 300 requests at traffic = 30: %.1f%% (%v)", share, counts)
	if counts["v1"]+counts["v2"] != 300 || share < 23 || share > 37 {
		t.Errorf("canary took %.1f%% of 300 requests (%v), want 30%% give or take 7", share, counts)
	}
	if _, err := client.Promote(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	onlyBody(t, url, "v2")
}
