package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/spec"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	app := newApp(&out, &errb)
	app.Reader = strings.NewReader("") // no terminal, whatever runs the tests
	err = app.Run(append([]string{"caravan", "--state-dir", t.TempDir()}, args...))
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
	dec := json.NewDecoder(strings.NewReader(a))
	var ids []string
	for dec.More() {
		var doc struct{ Job struct{ ID string } }
		if err := dec.Decode(&doc); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, doc.Job.ID)
	}
	if strings.Join(ids, " ") != "shop.staging--store shop.staging--store--cron--nightly" {
		t.Fatalf("render: jobs %v, want the app's and its nightly periodic job", ids)
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
		if hasEveryBundle(w, r) {
			return
		}
		if r.Header.Get("Authorization") != "Bearer cvn_test" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"error": api.APIError{
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
			{Name: "api", Change: orchestrator.Created, Containers: 0, MaxContainers: 4, URL: "https://dev--hello-api.example"},
			{Name: "worker", Change: orchestrator.Unchanged, Containers: 1},
		}})
	want := "✓ Deployed app hello (workspace dev).\n" +
		"├── updated web (2 containers) => https://dev--hello-web.example\n" +
		"├── created api (0–4 containers, scales with traffic) => https://dev--hello-api.example\n" +
		"└── unchanged worker (1 container)\n" +
		"✓ Version 3 is live (spec abc) in 0s.\n"
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

// hasEveryBundle answers a fake server's question which bundles it lacks:
// none. It reports whether r was that question.
func hasEveryBundle(w http.ResponseWriter, r *http.Request) bool {
	if r.Method+" "+r.URL.Path != "POST /v1/bundles/missing" {
		return false
	}
	json.NewEncoder(w).Encode(api.BundlesBody{IDs: []string{}})
	return true
}

// fakeServer answers the API with canned responses and records requests
// (but not the question which bundles it lacks: none).
func fakeServer(t *testing.T, routes map[string]any) (*httptest.Server, *[]string) {
	t.Helper()
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hasEveryBundle(w, r) {
			return
		}
		body, _ := io.ReadAll(r.Body)
		seen = append(seen, r.Method+" "+r.URL.Path+" "+strings.TrimSpace(string(body)))
		resp, ok := routes[r.Method+" "+r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]any{"error": api.APIError{Kind: "not_found", Message: "no app \"x\""}})
			return
		}
		json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

func TestStopNeedsConfirmation(t *testing.T) {
	srv, seen := fakeServer(t, map[string]any{"POST /v1/apps/hello/stop": orchestrator.AppRecord{App: "hello", Workspace: "dev"}})
	_, errOut, err := runCLI(t, "--addr", srv.URL, "--token", "cvn_x", "app", "stop", "hello")
	if err == nil || !strings.Contains(errOut+fmt.Sprint(err), "--yes") || len(*seen) != 0 {
		t.Fatalf("stop without a terminal or --yes: %v %s (requests %v)", err, errOut, *seen)
	}
	out, _, err := runCLI(t, "--addr", srv.URL, "--token", "cvn_x", "app", "stop", "--yes", "hello")
	if err != nil || !strings.Contains(out, "Stopped app hello") || len(*seen) != 1 {
		t.Fatalf("stop --yes: %v %s (requests %v)", err, out, *seen)
	}
}

func TestRollbackSendsTheVersion(t *testing.T) {
	srv, seen := fakeServer(t, map[string]any{"POST /v1/apps/hello/rollback": orchestrator.DeployResult{
		App: "hello", Workspace: "dev", Version: 9, Changed: true, Kind: orchestrator.KindRollback}})
	out, _, err := runCLI(t, "--addr", srv.URL, "--token", "cvn_x", "app", "rollback", "hello", "v3")
	if err != nil || !strings.Contains(out, "Rolled back app hello") || !strings.Contains(out, "Version 9 is live") {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	if len(*seen) != 1 || !strings.Contains((*seen)[0], `"version":3`) {
		t.Fatalf("rollback request: %v", *seen)
	}
	if _, _, err := runCLI(t, "--addr", srv.URL, "app", "rollback", "hello", "three"); err == nil {
		t.Fatal("rollback to a non-number succeeded")
	}
}

func TestHistoryTable(t *testing.T) {
	srv, _ := fakeServer(t, map[string]any{"GET /v1/apps/hello/history": orchestrator.History{
		App: &orchestrator.AppRecord{App: "hello", Workspace: "dev", State: "deployed", LiveVersion: 3},
		Versions: []*orchestrator.VersionRecord{
			{Version: 1, Kind: "deploy", Status: "superseded", Who: "ana", Strategy: "rolling", SpecHash: "aaa", GitCommit: "0123456789abcdef0", GitDirty: true, Tag: "first"},
			{Version: 2, Kind: "deploy", Status: "failed", Who: "ana", Strategy: "rolling", SpecHash: "bbb", Error: "boom"},
			{Version: 3, Kind: "rollback", Status: "live", Who: "bo", WhoID: "b0b0b0b0b0b0b0b0", Strategy: "recreate", SpecHash: "aaa", RollbackOf: 1},
		}}})
	out, _, err := runCLI(t, "--addr", srv.URL, "app", "history", "hello")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"version 3 live", "rollback to v1", "deploy (failure)", "boom", "0123456789ab-dirty", "first", "bo (b0b0b0b0b0b0b0b0)"} {
		if !strings.Contains(out, want) {
			t.Errorf("history lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "v3") > strings.Index(out, "v1 ") {
		t.Errorf("history is not newest first:\n%s", out)
	}
}

func TestGitState(t *testing.T) {
	dir := t.TempDir()
	if commit, _ := gitState(dir); commit != "" {
		t.Fatalf("gitState outside a checkout = %q, want empty", commit)
	}
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	path := writeSpecIn(t, dir, "app.hcl")
	git("add", "app.hcl")
	git("commit", "-q", "-m", "spec")
	commit, dirty := gitState(dir)
	if len(commit) != 40 || dirty {
		t.Fatalf("clean checkout: commit %q dirty %v", commit, dirty)
	}
	os.WriteFile(path, []byte("# changed\n"), 0o644)
	if again, dirty := gitState(dir); again != commit || !dirty {
		t.Fatalf("after a change: commit %q dirty %v, want %q dirty", again, dirty, commit)
	}
}

func writeSpecIn(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(badSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrintCanaryDeploy(t *testing.T) {
	var b bytes.Buffer
	printDeploy(&b, &orchestrator.DeployResult{App: "birds", Workspace: "dev", Version: 2, Changed: true, SpecHash: "abc",
		Functions: []orchestrator.FunctionResult{{Name: "web", Change: orchestrator.Updated, Containers: 3, URL: "https://dev--birds-web.example"}},
		Canary: &orchestrator.CanaryState{Version: 2, Traffic: 10, Functions: []string{"web"},
			Previews: map[string]string{"web": "https://dev--birds-web--canary.example"}}})
	for _, want := range []string{"Deployed a canary of app birds", "Version 2 is a canary (spec abc)", "10% of traffic",
		"preview web => https://dev--birds-web--canary.example", "caravan app promote birds", "caravan app abort birds"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("canary deploy output lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "is live") {
		t.Errorf("a canary is not live:\n%s", b.String())
	}
	if strings.Contains(b.String(), "at zero") {
		t.Errorf("a canary of Nomad's said it was at zero:\n%s", b.String())
	}

	// A mixed canary: Nomad's canary of api, web at zero in a canary job.
	b.Reset()
	printDeploy(&b, &orchestrator.DeployResult{App: "birds", Workspace: "dev", Version: 2, Changed: true, SpecHash: "abc",
		Canary: &orchestrator.CanaryState{Version: 2, Traffic: 10, Functions: []string{"api", "web"}, DeploymentID: "d",
			CanaryJob: "dev--birds--canary", JobFunctions: []string{"web"},
			Previews: map[string]string{"web": "https://dev--birds-web--canary.example", "api": "https://dev--birds-api--canary.example"}}})
	for _, want := range []string{"preview api => https://dev--birds-api--canary.example\n",
		"preview web => https://dev--birds-web--canary.example (at zero, in job dev--birds--canary: its first request starts it)\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("mixed canary deploy output lacks %q:\n%s", want, b.String())
		}
	}
}

func TestPromoteAndAbort(t *testing.T) {
	res := orchestrator.DeployResult{App: "birds", Workspace: "dev", Version: 2, Changed: true}
	srv, seen := fakeServer(t, map[string]any{"POST /v1/apps/birds/promote": res, "POST /v1/apps/birds/abort": res})
	out, _, err := runCLI(t, "--addr", srv.URL, "app", "promote", "birds")
	if err != nil || !strings.Contains(out, "Promoted version 2 of app birds") {
		t.Fatalf("promote: %v\n%s", err, out)
	}
	out, _, err = runCLI(t, "--addr", srv.URL, "app", "abort", "birds")
	if err != nil || !strings.Contains(out, "Aborted the canary (version 2) of app birds") {
		t.Fatalf("abort: %v\n%s", err, out)
	}
	if len(*seen) != 2 {
		t.Fatalf("requests: %v", *seen)
	}
}

func TestHistoryShowsEvents(t *testing.T) {
	srv, _ := fakeServer(t, map[string]any{"GET /v1/apps/birds/history": orchestrator.History{
		App: &orchestrator.AppRecord{App: "birds", Workspace: "dev", State: "deployed", LiveVersion: 3},
		Versions: []*orchestrator.VersionRecord{
			{Version: 2, Kind: "deploy", Status: "aborted", Who: "ana", Strategy: "canary", Events: []orchestrator.Event{
				{What: "canary: 1 container(s) per function, 10% of traffic", Who: "ana"},
				{What: "aborted automatically: canaries failed their health checks", Who: "caravan"}}},
			{Version: 3, Kind: "deploy", Status: "live", Who: "bo", Strategy: "canary", Events: []orchestrator.Event{
				{What: "promoted", Who: "bo", WhoID: "b0b0b0b0b0b0b0b0"}}},
		}}})
	out, _, err := runCLI(t, "--addr", srv.URL, "app", "history", "birds")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"aborted", "10% of traffic", "aborted automatically", "bo (b0b0b0b0b0b0b0b0)  promoted"} {
		if !strings.Contains(out, want) {
			t.Errorf("history lacks %q:\n%s", want, out)
		}
	}
}

// A spec nested past spec.MaxNesting is reported, with its line, by a
// validate that neither crashes (HCL's parser recursing until Go's stack
// overflows, which no recover catches) nor prints the spec's one huge line.
// The validate runs in a child process, so a regression fails this test
// instead of killing the test binary.
func TestValidateDeeplyNestedSpec(t *testing.T) {
	if path := os.Getenv("CARAVAN_TEST_VALIDATE"); path != "" {
		_, errOut, _ := runCLI(t, "validate", path)
		os.Stderr.WriteString(errOut)
		return
	}
	path := writeSpec(t, "app \"a\" {\n  workspace = \"w\"\n  x = "+strings.Repeat("(", 100000)+"1"+strings.Repeat(")", 100000)+"\n}\n")
	cmd := exec.Command(os.Args[0], "-test.run=^TestValidateDeeplyNestedSpec$")
	cmd.Env = append(os.Environ(), "CARAVAN_TEST_VALIDATE="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("validate of a nested spec: %v\n%.500s", err, stderr.String())
	}
	out := stderr.String()
	if !strings.Contains(out, "Nesting too deep") || !strings.Contains(out, path+" line 3") {
		t.Errorf("output lacks the diagnostic and its line:\n%.2000s", out)
	}
	if len(out) > 4096 {
		t.Errorf("%d bytes of output for one diagnostic", len(out))
	}
}
