package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
)

// startWired starts the wiring `caravan server` runs, the real
// orchestrator included, over a fake Consul and a Nomad that answers 404,
// and returns a client with a token of every workspace.
func startWired(t *testing.T) *api.Client {
	t.Helper()
	consulSrv := fakeConsul(t)
	nomadSrv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(nomadSrv.Close)
	s, err := New(Config{Listen: "127.0.0.1:0", NomadAddr: nomadSrv.URL, ConsulAddr: consulSrv.URL,
		Router: router.DefaultConfig, Logger: hclog.NewNullLogger(), NATS: NATSConfig{Dir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	token, err := s.Tokens().Create("admin", "*")
	if err != nil {
		t.Fatal(err)
	}
	return &api.Client{Addr: "http://" + s.Addr(), Token: token}
}

// inChild runs the test named name again in a child process with
// CARAVAN_TEST_CHILD set, and fails if the child fails: a spec that
// overflows the parser's stack kills the process, which no recover
// catches, so it must not be the test binary's own.
func inChild(t *testing.T, name string) bool {
	t.Helper()
	if os.Getenv("CARAVAN_TEST_CHILD") != "" {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.v")
	cmd.Env = append(os.Environ(), "CARAVAN_TEST_CHILD=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v\n%.3000s", err, out.String())
	}
	return false
}

// A deploy or plan of a deeply nested spec (100,000 parentheses: the
// parser used to recurse until the Go stack overflowed, ending the server)
// answers 400 invalid_spec with a diagnostic at the line, fast, and the
// server goes on serving.
func TestNestedSpecAnswers400(t *testing.T) {
	if !inChild(t, "TestNestedSpecAnswers400") {
		return
	}
	c := startWired(t)
	src := []byte("app \"a\" {\n  workspace = \"w\"\n  x = " + strings.Repeat("(", 100000) + "1" + strings.Repeat(")", 100000) + "\n}\n")
	for _, op := range []string{"deploy", "plan"} {
		t0 := time.Now()
		var err error
		if op == "deploy" {
			_, err = c.Deploy(context.Background(), "app.hcl", src, time.Minute)
		} else {
			_, err = c.Plan(context.Background(), api.DeployBody{Filename: "app.hcl", Spec: string(src)})
		}
		var apiErr *api.APIError
		if !errors.As(err, &apiErr) || apiErr.Kind != api.CodeInvalidSpec || len(apiErr.Diagnostics) != 1 {
			t.Fatalf("%s: %v, want invalid_spec with one diagnostic", op, err)
		}
		d := apiErr.Diagnostics[0]
		if d.Summary != "Nesting too deep" || d.Subject == nil || d.Subject.Filename != "app.hcl" || d.Subject.Start.Line != 3 {
			t.Errorf("%s: diagnostic %+v", op, d)
		}
		if took := time.Since(t0); took > time.Second {
			t.Errorf("%s took %v", op, took)
		}
	}
	if _, err := c.Tokens(context.Background()); err != nil {
		t.Errorf("the server after a nested spec: %v", err)
	}
}

// A spec with a problem on every line (here 5,000 of them, each quoting a
// long value) gets a bounded error: spec.MaxDiagnostics of them and one
// that says how many more there were, each cut short.
func TestErrorBodyIsBounded(t *testing.T) {
	c := startWired(t)
	var env strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&env, "    \"%d-%s\" = \"x\"\n", i, strings.Repeat("X", 30))
	}
	src := "app \"a\" {\n  workspace = \"w\"\n  function \"web\" {\n    command = \"x\"\n    env = {\n" + env.String() + "    }\n  }\n}\n"
	if len(src) > spec.MaxSize {
		t.Fatalf("the test's spec is %d bytes", len(src))
	}
	body, _ := json.Marshal(api.DeployBody{Filename: "app.hcl", Spec: src})
	req, _ := http.NewRequest("POST", c.Addr+"/v1/deploy", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Error api.APIError }
	if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != 400 || e.Error.Kind != api.CodeInvalidSpec {
		t.Fatalf("%d %.300s", resp.StatusCode, b)
	}
	if n := len(e.Error.Diagnostics); n != spec.MaxDiagnostics+1 {
		t.Errorf("%d diagnostics, want %d", n, spec.MaxDiagnostics+1)
	}
	if len(b) > 64<<10 {
		t.Errorf("an error body of %d bytes", len(b))
	}
}

// Whatever error reaches the wire, its body is bounded: a message, and
// at most a few dozen diagnostics, each cut short.
func TestAnyErrorBodyIsBounded(t *testing.T) {
	e := newEnv(t)
	var diags hcl.Diagnostics
	for range 10000 {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: strings.Repeat("S", 10000), Detail: strings.Repeat("é", 10000)})
	}
	e.orch.err = &orchestrator.DiagnosticsError{Diags: diags}
	a := e.as(e.shop, "GET", "/v1/apps/demo/history", "")
	a.wantError(t, "10,000 diagnostics", 400, api.CodeInvalidSpec)
	if len(a.body) > 128<<10 {
		t.Errorf("an error body of %d bytes", len(a.body))
	}
	if a.err != nil && (len(a.err.Diagnostics) != spec.MaxDiagnostics+1 || !utf8.ValidString(a.err.Diagnostics[0].Detail)) {
		t.Errorf("%d diagnostics", len(a.err.Diagnostics))
	}
}

// A JSON body with a field its endpoint does not know, or with anything
// after the JSON value, is refused with 400 bad_request naming the field,
// before anything is carried out.
func TestStrictBodies(t *testing.T) {
	e := newEnv(t)
	// Each endpoint's body, without its closing brace.
	bodies := map[string]string{
		"/v1/tokens": `{"name": "ci"`, "/v1/deploy": `{"spec": "x"`, "/v1/plan": `{"spec": "x"`,
		"/v1/apps/demo/rollover": `{"workspace": "shop"`, "/v1/apps/demo/rollback": `{"version": 1`,
		"/v1/apps/demo/promote": `{"serve": true`, "/v1/apps/demo/abort": `{"environment": "prod"`,
		"/v1/apps/demo/stop": `{"workspace": "shop"`, "/v1/apps/demo/run": `{"function": "nightly"`,
	}
	for path, open := range bodies {
		for _, tc := range []struct{ body, want string }{
			{open + `, "strategy_": "canary"}`, `"strategy_"`},
			{open + `, "Workspace ": "w"}`, `"Workspace "`},
			{open + `, "spec": "x", "name": "n", "function": "f"}`, `unknown field`},
			{open + `} {"version": 3}`, "after the JSON body"},
			{open + `} x`, "after the JSON body"},
			{open + `}]`, "after the JSON body"},
		} {
			e.orch.calls = nil
			a := e.as(e.all, "POST", path, tc.body)
			a.wantError(t, path+" "+tc.body, http.StatusBadRequest, api.CodeBadRequest)
			if a.err != nil && !strings.Contains(a.err.Message, tc.want) {
				t.Errorf("%s %s: %q does not name %s", path, tc.body, a.err.Message, tc.want)
			}
			if len(e.orch.calls) != 0 {
				t.Errorf("%s %s reached the orchestrator: %v", path, tc.body, e.orch.calls)
			}
		}
		// White space after the body is fine.
		if a := e.as(e.all, "POST", path, open+"} \n\t"); a.status != http.StatusOK {
			t.Errorf("%s with trailing space: %s", path, a.body)
		}
	}
}

// Everything api.Client sends, with every field of its bodies set, is
// accepted by the server's strict decoding: the client never sends a
// field the server does not know.
func TestClientSendsOnlyKnownFields(t *testing.T) {
	e := newEnv(t)
	c := &api.Client{Addr: e.srv.URL, Token: e.all.Token, HTTP: e.srv.Client()}
	ctx := context.Background()
	var deploy api.DeployBody
	var change api.ChangeBody
	var run api.RunBody
	fillAll(t, &deploy)
	fillAll(t, &change)
	fillAll(t, &run)
	deploy.Timeout, change.Timeout, run.Timeout = "1m", "1m", "1m"
	calls := map[string]func() error{
		"Deploy":   func() error { _, err := c.DeployBody(ctx, deploy); return err },
		"Plan":     func() error { _, err := c.Plan(ctx, deploy); return err },
		"Rollover": func() error { _, err := c.Rollover(ctx, "demo", change); return err },
		"Rollback": func() error { _, err := c.Rollback(ctx, "demo", change); return err },
		"Promote":  func() error { _, err := c.Promote(ctx, "demo", change); return err },
		"Abort":    func() error { _, err := c.Abort(ctx, "demo", change); return err },
		"Stop":     func() error { _, err := c.Stop(ctx, "demo", change); return err },
		"Run":      func() error { _, err := c.Run(ctx, "demo", run); return err },
		"Token":    func() error { _, err := c.CreateToken(ctx, "name", "shop"); return err },
	}
	for op, call := range calls {
		if err := call(); err != nil {
			t.Errorf("%s with every field set: %v", op, err)
		}
	}
}

// fillAll sets every field of the struct v points to, embedded ones
// included, to a value that is not its zero value.
func fillAll(t *testing.T, v any) {
	t.Helper()
	var fill func(rv reflect.Value)
	fill = func(rv reflect.Value) {
		for i := range rv.NumField() {
			f := rv.Field(i)
			switch f.Kind() {
			case reflect.String:
				f.SetString("x")
			case reflect.Bool:
				f.SetBool(true)
			case reflect.Int, reflect.Int64:
				f.SetInt(1)
			case reflect.Struct:
				fill(f)
			case reflect.Map:
				// A map of strings (a deploy's bundles); the server
				// refuses a bad one in the orchestrator, not the decoder.
				f.Set(reflect.ValueOf(map[string]string{"x": "x"}))
			default:
				t.Fatalf("fillAll: field %s of kind %s", rv.Type().Field(i).Name, f.Kind())
			}
		}
	}
	fill(reflect.ValueOf(v).Elem())
}
