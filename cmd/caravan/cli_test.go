package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/server"
	"github.com/caravanhq/caravan/spec"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = newApp(&out, &errb).Run(append([]string{"caravan", "--state-dir", t.TempDir()}, args...))
	return out.String(), errb.String(), err
}

func writeSpec(t *testing.T, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "app.hcl")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const badSpec = `app "demo" {
  workspace = "me"
  function "web" {
    command = "node"
    resources {
      gpu = "H100:9"
    }
    web {
      port = 0
    }
  }
}
`

func TestValidateExamples(t *testing.T) {
	for _, ex := range []string{"hello", "gpu", "multi"} {
		out, errOut, err := runCLI(t, "validate", "../../examples/"+ex+".hcl")
		if err != nil || !strings.Contains(out, "valid") {
			t.Errorf("validate %s: %v\nstdout: %s\nstderr: %s", ex, err, out, errOut)
		}
	}
}

func TestValidatePrintsEveryErrorWithSource(t *testing.T) {
	path := writeSpec(t, badSpec)
	_, errOut, err := runCLI(t, "validate", path)
	if err == nil {
		t.Fatal("validate of a bad spec succeeded")
	}
	for _, want := range []string{
		path + " line 6", `gpu = "H100:9"`, "Invalid gpu",
		path + " line 9", "port = 0", "Invalid port",
		"2 error(s)",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("output lacks %q:\n%s", want, errOut)
		}
	}
}

func TestRenderIsByteIdentical(t *testing.T) {
	a, _, err := runCLI(t, "render", "../../examples/multi.hcl")
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := runCLI(t, "render", "../../examples/multi.hcl")
	if a != b || !strings.HasPrefix(a, "{\n  \"Job\": {") {
		t.Fatalf("render output differs between runs or is not {\"Job\": ...}:\n%s", a)
	}
	var doc struct{ Job struct{ ID string } }
	if err := json.Unmarshal([]byte(a), &doc); err != nil || doc.Job.ID != "shop-staging--store" {
		t.Fatalf("render: job ID %q (%v), want shop-staging--store", doc.Job.ID, err)
	}
	routes, _, err := runCLI(t, "render", "--routes", "../../examples/multi.hcl")
	if err != nil || !strings.Contains(routes, "Host(`shop-staging--api.caravan.localhost`)") {
		t.Fatalf("render --routes: %v\n%s", err, routes)
	}
}

// TestDeployShowsServerDiagnostics: diagnostics that come back from the
// server print with the local source line, as validate prints them.
func TestDeployShowsServerDiagnostics(t *testing.T) {
	valid := strings.Replace(strings.Replace(badSpec, `gpu = "H100:9"`, `gpu = "H100"`, 1), "port = 0", "port = 8080", 1)
	path := writeSpec(t, valid)
	// The server sees an error the local check does not (here, made up).
	_, diags := spec.Parse([]byte(badSpec), path)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer cvn_test" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"error": server.APIError{
			Kind: "invalid_spec", Message: "invalid", Diagnostics: orchestrator.ToWire(diags[:1]),
		}})
	}))
	defer srv.Close()
	_, errOut, err := runCLI(t, "--addr", srv.URL, "--token", "cvn_test", "deploy", path)
	if err == nil {
		t.Fatal("deploy succeeded against a server that refused the spec")
	}
	if !strings.Contains(errOut, path+" line 6") || !strings.Contains(errOut, "Invalid gpu") {
		t.Fatalf("deploy output lacks the server's diagnostic with its location:\n%s", errOut)
	}
}

func TestDeployLocalErrorsNeedNoServer(t *testing.T) {
	path := writeSpec(t, badSpec)
	_, errOut, err := runCLI(t, "--addr", "http://127.0.0.1:1", "deploy", path)
	if err == nil || !strings.Contains(errOut, "Invalid port") || strings.Contains(errOut, "cannot reach") {
		t.Fatalf("deploy of a bad spec: %v\n%s", err, errOut)
	}
}

func TestPrintDeployTree(t *testing.T) {
	var b bytes.Buffer
	printDeploy(&b, &orchestrator.DeployResult{App: "hello", Workspace: "dev", Version: 3, Changed: true, SpecHash: "abc",
		Functions: []orchestrator.FunctionResult{
			{Name: "web", Change: orchestrator.Updated, Containers: 2, URL: "https://dev--hello-web.example"},
			{Name: "worker", Change: orchestrator.Unchanged, Containers: 1},
		}})
	want := "✓ Deployed app hello (workspace dev).\n" +
		"├── updated web (2 containers) => https://dev--hello-web.example\n" +
		"└── unchanged worker (1 container)\n" +
		"✓ Version 3 is live (spec abc) in 0s.\n"
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
