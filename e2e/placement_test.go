package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// TestUnplaceableVersionKeepsOldServing asks for a GPU model the node does
// not have (it has two H100s): the deploy fails at once, naming the function and why Nomad could
// not place it, and the running version keeps answering.
func TestUnplaceableVersionKeepsOldServing(t *testing.T) {
	purge(t, "e2e--nogpu")
	first := deploy(t, "nogpu.hcl", nodeServer("nogpu", "cpu\n", false), api.DeployBody{})
	gpu := strings.Replace(nodeServer("nogpu", "gpu\n", false), "memory = 64", "memory = 64\n      gpu = \"A100\"", 1)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	_, err := env.client.Deploy(ctx, "nogpu.hcl", []byte(gpu), 0)
	var apiErr *api.APIError
	if !errors.As(err, &apiErr) || apiErr.Kind != "rollout_failed" || apiErr.Function != "web" ||
		!strings.Contains(apiErr.Message, "cannot be placed: no node has 1 nvidia/gpu of model A100") {
		t.Fatalf("deploy needing a missing GPU: %v, want rollout_failed naming web and nvidia/gpu", err)
	}
	t.Logf("failed in %s: %s", time.Since(began).Round(time.Millisecond), apiErr.Message)
	answers(t, first.Functions[0].URL, "cpu\n")
	// Refused before anything changed: Nomad's plan said no, so the job was
	// never registered.
	if job, _, err := env.nomad.Jobs().Info("e2e--nogpu", nsq("e2e--nogpu")); err != nil || *job.Version != 0 {
		t.Fatalf("Nomad job after the refused version: %v (%v), want version 0", job.Version, err)
	}
	if h := history(t, "nogpu"); len(h.Versions) != 2 || h.Versions[1].Status != "failed" || h.App.LiveVersion != 1 {
		t.Fatalf("history: %+v live %d", h.Versions, h.App.LiveVersion)
	}
}
