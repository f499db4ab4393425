package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/server"
	nomad "github.com/hashicorp/nomad/api"
)

// TestDeployHello deploys examples/hello.hcl and reaches it over HTTPS
// through Traefik, with a certificate Pebble issued.
func TestDeployHello(t *testing.T) {
	src, err := os.ReadFile("../examples/hello.hcl")
	if err != nil {
		t.Fatal(err)
	}
	purge(t, "dev--hello")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := env.client.Deploy(ctx, "examples/hello.hcl", src, 0)
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if !res.Changed || res.Version != 1 || res.JobID != "dev--hello" {
		t.Fatalf("first deploy: changed=%v version=%d job=%s, want true, 1, dev--hello", res.Changed, res.Version, res.JobID)
	}
	if len(res.Functions) != 1 || res.Functions[0].URL == "" {
		t.Fatalf("functions = %+v, want one web function with a URL", res.Functions)
	}
	url := res.Functions[0].URL
	if want := "https://dev--hello-web." + env.stack.Domain; !contains(url, want) {
		t.Fatalf("URL %s does not start with %s", url, want)
	}
	// Deploy returns once the URL answers, so no polling here.
	status, body, err := get(t, url)
	if err != nil || status != http.StatusOK || body != "hello from caravan\n" {
		t.Fatalf("GET %s = %d %q %v, want 200 %q", url, status, body, err, "hello from caravan\n")
	}

	// The job is in its workspace's Nomad namespace (which caravan server
	// created: --create-namespaces), and not in the default one.
	ns, _, err := env.nomad.Namespaces().Info("caravan-dev", nil)
	if err != nil || ns.Meta["caravan.workspace"] != "dev" {
		t.Errorf("namespace caravan-dev = %+v (%v), want one with meta caravan.workspace = dev", ns, err)
	}
	if job, _, err := env.nomad.Jobs().Info("dev--hello", &nomad.QueryOptions{Namespace: "caravan-dev"}); err != nil || *job.Namespace != "caravan-dev" {
		t.Errorf("job dev--hello in namespace caravan-dev: %v", err)
	}
	if _, _, err := env.nomad.Jobs().Info("dev--hello", &nomad.QueryOptions{Namespace: "default"}); err == nil {
		t.Error("job dev--hello is in the default namespace too")
	}

	// The service is registered in Consul, its health check passing soon
	// (a new app's deploy may return on caravan's own probe of the
	// container, its first route, before Consul's first check).
	eventually(t, 30*time.Second, "one passing Consul instance of dev--hello-web", func() error {
		entries, _, err := env.consul.Health().Service("dev--hello-web", "", true, nil)
		if err != nil || len(entries) != 1 {
			return fmt.Errorf("%d passing (%v)", len(entries), err)
		}
		return nil
	})

	// The app is listed with its URL.
	apps, err := env.client.Apps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range apps {
		if a.JobID == "dev--hello" {
			found = a.Version == 1 && len(a.Functions) == 1 && a.Functions[0].URL == url
		}
	}
	if !found {
		t.Fatalf("app list %+v lacks dev--hello at version 1 with URL %s", apps, url)
	}
}

// TestRedeployUnchangedIsNoop deploys a spec twice: the second deploy
// changes neither caravan's version nor Nomad's job version.
func TestRedeployUnchangedIsNoop(t *testing.T) {
	path, src := specFile(t, "noop.hcl", nodeServer("noop", "same\n", false))
	purge(t, "e2e--noop")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	first, err := env.client.Deploy(ctx, path, src, 0)
	if err != nil {
		t.Fatalf("first deploy: %v", err)
	}
	before, _, err := env.nomad.Jobs().Info(first.JobID, nsq(first.JobID))
	if err != nil {
		t.Fatal(err)
	}
	second, err := env.client.Deploy(ctx, path, src, 0)
	if err != nil {
		t.Fatalf("second deploy: %v", err)
	}
	if second.Changed || second.Version != first.Version {
		t.Fatalf("second deploy changed=%v version=%d, want unchanged at %d", second.Changed, second.Version, first.Version)
	}
	for _, f := range second.Functions {
		if f.Change != "unchanged" {
			t.Errorf("function %s: change %q, want unchanged", f.Name, f.Change)
		}
	}
	after, _, err := env.nomad.Jobs().Info(first.JobID, nsq(first.JobID))
	if err != nil {
		t.Fatal(err)
	}
	if *after.Version != *before.Version || *after.JobModifyIndex != *before.JobModifyIndex {
		t.Fatalf("Nomad job changed: version %d -> %d, modify index %d -> %d",
			*before.Version, *after.Version, *before.JobModifyIndex, *after.JobModifyIndex)
	}
}

// TestBrokenSpecChangesNothing sends a spec with errors for a running app:
// the server answers with the diagnostics (file:line intact) and the running
// version keeps answering.
func TestBrokenSpecChangesNothing(t *testing.T) {
	path, src := specFile(t, "broken.hcl", nodeServer("broken", "v1\n", false))
	purge(t, "e2e--broken")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := env.client.Deploy(ctx, path, src, 0)
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	url := res.Functions[0].URL

	bad := []byte(`app "broken" {
  workspace = "e2e"
  function "web" {
    command = "node"
    min_containers = -1
    web {
      port = 70000
    }
  }
}
`)
	_, err = env.client.Deploy(ctx, path, bad, 0)
	var apiErr *api.APIError
	if !errors.As(err, &apiErr) || apiErr.Kind != "invalid_spec" || apiErr.Status != http.StatusBadRequest {
		t.Fatalf("deploy of a broken spec: %v, want an invalid_spec APIError with status 400", err)
	}
	lines := map[int]bool{}
	for _, d := range apiErr.Diagnostics {
		if d.Subject == nil || d.Subject.Filename != path {
			t.Errorf("diagnostic %q has no subject in %s: %+v", d.Summary, path, d.Subject)
			continue
		}
		lines[d.Subject.Start.Line] = true
	}
	if !lines[5] || !lines[7] {
		t.Fatalf("diagnostics %+v, want errors on lines 5 (min_containers) and 7 (port)", apiErr.Diagnostics)
	}
	job, _, err := env.nomad.Jobs().Info(res.JobID, nsq(res.JobID))
	if err != nil || *job.Version != 0 {
		t.Fatalf("Nomad job version after broken deploy = %v (%v), want 0", job.Version, err)
	}
	if status, body, err := get(t, url); err != nil || status != 200 || body != "v1\n" {
		t.Fatalf("GET %s after broken deploy = %d %q %v, want 200 v1", url, status, body, err)
	}
}

// TestCrashingVersionKeepsOldServing deploys a version whose process exits
// at once: the deploy fails naming the function, and the previous version
// keeps answering.
func TestCrashingVersionKeepsOldServing(t *testing.T) {
	path, src := specFile(t, "crash.hcl", nodeServer("crash", "good\n", false))
	purge(t, "e2e--crash")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := env.client.Deploy(ctx, path, src, 0)
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	url := res.Functions[0].URL

	_, err = env.client.Deploy(ctx, path, []byte(nodeServer("crash", "", true)), 4*time.Minute)
	var apiErr *api.APIError
	if !errors.As(err, &apiErr) || apiErr.Kind != "rollout_failed" || apiErr.Function != "web" || apiErr.Version != 2 {
		t.Fatalf("deploy of a crashing version: %v, want rollout_failed for function web at version 2", err)
	}
	t.Logf("failure as reported: %s", apiErr.Message)
	if status, body, err := get(t, url); err != nil || status != 200 || body != "good\n" {
		t.Fatalf("GET %s after failed deploy = %d %q %v, want 200 good", url, status, body, err)
	}
	// The failure is in the history, and the list says which version serves.
	h := history(t, "crash")
	if len(h.Versions) != 2 || h.Versions[1].Status != "failed" || h.Versions[1].Error == "" || h.Versions[0].Status != "live" {
		t.Fatalf("history after a failed deploy: %+v", h.Versions)
	}
	apps, err := env.client.Apps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range apps {
		if a.JobID == "e2e--crash" && (a.State != "failed" || a.Version != 1 || a.LatestVersion != 2) {
			t.Fatalf("app list after a failed deploy: %+v, want state failed, v1 serving, v2 latest", a)
		}
	}
	// Deploying a good spec again recovers, as version 3.
	if res := deploy(t, "crash.hcl", nodeServer("crash", "fixed\n", false), api.DeployBody{}); res.Version != 3 {
		t.Fatalf("deploy after a failure: version %d, want 3", res.Version)
	}
	answers(t, url, "fixed\n")
}

// TestAPIRequiresToken: no token or a wrong one gets 401 and changes nothing.
func TestAPIRequiresToken(t *testing.T) {
	ctx := context.Background()
	_, src := specFile(t, "unauth.hcl", nodeServer("unauth", "x\n", false))
	for name, token := range map[string]string{"none": "", "wrong": server.TokenPrefix + "0000", "malformed": "hunter2"} {
		c := &api.Client{Addr: env.client.Addr, Token: token}
		_, err := c.Deploy(ctx, "unauth.hcl", src, 0)
		var apiErr *api.APIError
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
			t.Errorf("%s token: %v, want 401", name, err)
		}
		if _, err := c.Apps(ctx); !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
			t.Errorf("%s token listing apps: %v, want 401", name, err)
		}
	}
	if _, _, err := env.nomad.Jobs().Info("e2e--unauth", nsq("e2e--unauth")); err == nil {
		t.Fatal("an unauthenticated deploy registered a job")
	}
}
