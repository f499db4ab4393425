package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/orchestrator"
	"github.com/urfave/cli/v2"
)

func TestCallPrintsOutputAndExitsWithItsCode(t *testing.T) {
	srv, seen := fakeServer(t, map[string]any{"POST /v1/apps/calc/functions/sum/call": orchestrator.CallResult{
		Function: "sum", JobID: "dev--calc--call--sum/dispatch-1", ExitCode: 3, Output: "{\"sum\":3}\n", Stderr: "warned\n"}})
	out, errOut, err := runCLI(t, "--addr", srv.URL, "--token", "cvn_x", "call", "--data", `{"numbers": [1, 2]}`, "calc", "sum")
	var ec cli.ExitCoder
	if !errors.As(err, &ec) || ec.ExitCode() != 3 || ec.Error() != "" {
		t.Fatalf("call: %v, want exit code 3 and no message", err)
	}
	if out != "{\"sum\":3}\n" || errOut != "warned\n" {
		t.Fatalf("stdout %q, stderr %q", out, errOut)
	}
	if len(*seen) != 1 || (*seen)[0] != `POST /v1/apps/calc/functions/sum/call {"numbers": [1, 2]}` {
		t.Fatalf("requests: %q", *seen)
	}
}

func TestCallReadsInputFromFile(t *testing.T) {
	srv, seen := fakeServer(t, map[string]any{"POST /v1/apps/calc/functions/sum/call": orchestrator.CallResult{Output: "ok\n"}})
	path := filepath.Join(t.TempDir(), "in.json")
	os.WriteFile(path, []byte(`[1, 2, 3]`), 0o644)
	out, _, err := runCLI(t, "--addr", srv.URL, "call", "--data", "@"+path, "calc", "sum")
	if err != nil || out != "ok\n" || len(*seen) != 1 || !strings.HasSuffix((*seen)[0], " [1, 2, 3]") {
		t.Fatalf("call --data @file: %v %q %q", err, out, *seen)
	}
	if _, _, err := runCLI(t, "--addr", srv.URL, "call", "--data", "@/nonexistent", "calc", "sum"); err == nil || len(*seen) != 1 {
		t.Fatalf("call with a missing input file: %v (requests %q)", err, *seen)
	}
}

func TestCallFlagsAfterArguments(t *testing.T) {
	srv, seen := fakeServer(t, map[string]any{"POST /v1/apps/calc/functions/sum/call": orchestrator.CallResult{Output: "ok\n"}})
	out, _, err := runCLI(t, "--addr", srv.URL, "call", "calc", "sum", "--data", `{}`)
	if err != nil || out != "ok\n" || len(*seen) != 1 || !strings.HasSuffix((*seen)[0], " {}") {
		t.Fatalf("call APP FUNCTION --data: %v %q %q", err, out, *seen)
	}
}

func TestPrintDeployTreeCallable(t *testing.T) {
	var b bytes.Buffer
	printDeploy(&b, &orchestrator.DeployResult{App: "calc", Workspace: "dev", Version: 2, Changed: true, SpecHash: "abc",
		Functions: []orchestrator.FunctionResult{
			{Name: "sum", Change: orchestrator.Created, Callable: true},
			{Name: "old", Change: orchestrator.Removed},
		}})
	if !strings.Contains(b.String(), "├── created sum (callable: caravan call calc sum)\n") {
		t.Fatalf("got:\n%s", b.String())
	}
}

// TestCallFlagsAreTyped: call's flags after its arguments are parsed as
// what they are, a duration as a duration.
func TestCallFlagsAreTyped(t *testing.T) {
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		json.NewEncoder(w).Encode(orchestrator.CallResult{Output: "ok\n"})
	}))
	defer srv.Close()
	if _, _, err := runCLI(t, "--addr", srv.URL, "call", "calc", "sum", "--timeout", "90s", "--data", `{}`); err != nil {
		t.Fatal(err)
	}
	if len(queries) != 1 || queries[0] != "timeout=1m30s" {
		t.Fatalf("queries: %q", queries)
	}
	_, _, err := runCLI(t, "--addr", srv.URL, "call", "calc", "sum", "extra")
	if err == nil || err.Error() != `call takes 2 arguments; "extra" is one too many` || len(queries) != 1 {
		t.Fatalf("call with three arguments: %v (queries %q)", err, queries)
	}
}
