package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/api"
)

func deployExample(t *testing.T, name string) string {
	t.Helper()
	path, err := filepath.Abs("../examples/" + name + ".hcl")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res := deploy(t, path, string(src), api.DeployBody{})
	purge(t, res.JobID)
	return res.Functions[0].URL
}

// TestEndpointExamples deploys the endpoint examples and calls each.
func TestEndpointExamples(t *testing.T) {
	t.Run("json", func(t *testing.T) {
		url := deployExample(t, "json")
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url+"/sum", strings.NewReader(`{"numbers": [1, 2, 3.5]}`))
		resp, err := env.https.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != `{"sum":6.5}` || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("POST /sum: %d %q %s", resp.StatusCode, b, resp.Header.Get("Content-Type"))
		}
	})
	t.Run("static", func(t *testing.T) {
		url := deployExample(t, "static")
		want, _ := os.ReadFile("../examples/static/index.html")
		answers(t, url+"/", string(want))
		if status, _, _ := get(t, url+"/nope.html"); status != 404 {
			t.Fatalf("missing file: %d, want 404", status)
		}
	})
	for _, c := range []struct{ name, server, body string }{
		{"asgi", "uvicorn", "hello from ASGI\n"},
		{"wsgi", "gunicorn", "hello from WSGI\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := exec.LookPath(c.server); err != nil {
				t.Skipf("%s is not installed (Debian: apt-get install %s); .ci/run installs it", c.server,
					c.server)
			}
			answers(t, deployExample(t, c.name), c.body)
		})
	}
}
