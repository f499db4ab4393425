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

// gpuApp is a web function asking for gpu (an HCL expression) that answers
// with the GPUs Nomad reserved for it.
func gpuApp(app, gpu string) string {
	js := `require("http").createServer((q, s) => s.end((process.env.NVIDIA_VISIBLE_DEVICES || "none") + "\n")).listen(process.env.PORT, process.env.HOST);`
	return fmt.Sprintf("app %q {\n  workspace = \"e2e\"\n  function \"infer\" {\n    command = \"node\"\n    args = [\"-e\", %s]\n    resources {\n      gpu = %s\n    }\n    web {}\n  }\n}\n",
		app, strconv.Quote(js), gpu)
}

// TestGPUsOnNomadsScheduler places GPU functions against the stack's two
// (fake) H100s: the device block is honoured and the reservation reaches the
// task; asking for more or for another model is refused before anything
// changes, naming what is missing; fallbacks and "any" land on what exists.
func TestGPUsOnNomadsScheduler(t *testing.T) {
	placed := func(t *testing.T, app, gpu string, devices int) {
		purge(t, "e2e--"+app)
		res := deploy(t, app+".hcl", gpuApp(app, gpu), api.DeployBody{})
		status, body, err := get(t, res.Functions[0].URL)
		ids := strings.Split(strings.TrimSpace(body), ",")
		if err != nil || status != 200 || len(ids) != devices || !strings.HasPrefix(ids[0], "GPU-fake-h100-") {
			t.Fatalf("gpu = %s: %d %q %v; want %d H100 ids", gpu, status, body, err, devices)
		}
	}
	t.Run("H100:2", func(t *testing.T) { placed(t, "gputwo", `"H100:2"`, 2) })
	t.Run("fallback list", func(t *testing.T) { placed(t, "gpufall", `["A100", "H100"]`, 1) })
	t.Run("any", func(t *testing.T) { placed(t, "gpuany", `"any"`, 1) })

	refused := func(t *testing.T, gpu, missing string) {
		purge(t, "e2e--gpuno")
		first := deploy(t, "gpuno.hcl", gpuApp("gpuno", `"H100"`), api.DeployBody{Strategy: "recreate"})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := env.client.DeployBody(ctx, api.DeployBody{Filename: "gpuno.hcl", Spec: gpuApp("gpuno", gpu), Strategy: "recreate"})
		var apiErr *api.APIError
		if !errors.As(err, &apiErr) || apiErr.Function != "infer" || !strings.Contains(apiErr.Message, "no node has "+missing) {
			t.Fatalf("gpu = %s: %v; want a refusal naming infer and %q", gpu, err, missing)
		}
		t.Logf("gpu = %s refused: %s", gpu, apiErr.Message)
		if job, _, err := env.nomad.Jobs().Info("e2e--gpuno", nsq("e2e--gpuno")); err != nil || *job.Version != 0 {
			t.Fatalf("the refused version reached Nomad: job version %v (%v)", job.Version, err)
		}
		// The running version keeps answering with its reservation.
		if body := mustGet(t, first.Functions[0].URL); !strings.HasPrefix(body, "GPU-fake-h100-") {
			t.Fatalf("the running version answers %q", body)
		}
	}
	t.Run("H100:3 on a node with two", func(t *testing.T) { refused(t, `"H100:3"`, "3 nvidia/gpu of model H100") })
	t.Run("A100 on a node with none", func(t *testing.T) { refused(t, `"A100"`, "1 nvidia/gpu of model A100") })
}

func mustGet(t *testing.T, url string) string {
	t.Helper()
	status, body, err := get(t, url)
	if err != nil || status != 200 {
		t.Fatalf("GET %s: %d %v", url, status, err)
	}
	return body
}
