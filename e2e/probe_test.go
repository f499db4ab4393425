package e2e

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// healthApp serves body on /, and on /healthz answers 200, or 500 when the
// request came through the proxy (the public hostname) and sick is true.
func healthApp(app, body string, rootStatus int, sick bool) string {
	js := fmt.Sprintf(`require("http").createServer((q, s) => {
  if (q.url === "/healthz") {
    const public = (q.headers.host || "").includes(".caravan.");
    s.statusCode = (%t && public) ? 500 : 200;
    return s.end("health\n");
  }
  s.statusCode = %d;
  s.end(%q);
}).listen(process.env.PORT, process.env.HOST);`, sick, rootStatus, body)
	return fmt.Sprintf("app %q {\n  workspace = \"e2e\"\n  function \"web\" {\n    command = \"node\"\n    args = [\"-e\", %s]\n    web {\n      health_path = \"/healthz\"\n    }\n  }\n}\n",
		app, strconv.Quote(js))
}

// TestProbeUsesHealthPath: an API whose / answers 404 deploys (the probe
// asks its health path, as Consul does).
func TestProbeUsesHealthPath(t *testing.T) {
	purge(t, "e2e--apionly")
	res := deploy(t, "apionly.hcl", healthApp("apionly", "no such page\n", 404, false), api.DeployBody{})
	if status, _, _ := get(t, res.Functions[0].URL+"/healthz"); status != 200 {
		t.Fatalf("health path through the proxy: %d", status)
	}
}

// TestUnreachableVersionIsReverted: a version Nomad finds healthy but that
// never answers through the proxy is failed and Nomad is put back on the
// previous version, which keeps serving.
func TestUnreachableVersionIsReverted(t *testing.T) {
	purge(t, "e2e--halfway")
	first := deploy(t, "halfway.hcl", healthApp("halfway", "v1\n", 200, false), api.DeployBody{})
	groupHash := func() string {
		job, _, err := env.nomad.Jobs().Info("e2e--halfway", nsq("e2e--halfway"))
		if err != nil {
			t.Fatal(err)
		}
		return job.TaskGroups[0].Meta["caravan.group_hash"]
	}
	v1 := groupHash()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, err := env.client.Deploy(ctx, "halfway.hcl", []byte(healthApp("halfway", "v2\n", 200, true)), 20*time.Second)
	var apiErr *api.APIError
	if !errors.As(err, &apiErr) || apiErr.Version != 2 || !strings.Contains(apiErr.Message, "does not answer through the proxy") ||
		!strings.Contains(apiErr.Message, "reverted to version 1") {
		t.Fatalf("deploy of a version the proxy cannot reach: %v", err)
	}
	answers(t, first.Functions[0].URL, "v1\n")
	if got := groupHash(); got != v1 {
		t.Fatalf("Nomad runs group %s, want version 1's %s", got, v1)
	}
	if h := history(t, "halfway"); h.App.LiveVersion != 1 || h.Versions[1].Status != "failed" {
		t.Fatalf("history: live %d, %+v", h.App.LiveVersion, h.Versions)
	}
	// The spec that failed is not mistaken for the running one.
	if res := deploy(t, "halfway.hcl", healthApp("halfway", "v1\n", 200, false), api.DeployBody{}); res.Changed {
		t.Fatalf("redeploying the live spec: changed, version %d; want a no-op", res.Version)
	}
}
