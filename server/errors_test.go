package server

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/policy"
	"github.com/hashicorp/hcl/v2"
)

// orchestratorErrors is one value of every error type the orchestrator
// declares, with the code it must answer with. TestEveryOrchestratorError
// fails when a type is missing here, so a new one cannot fall through to
// 500 unseen.
var orchestratorErrors = []struct {
	err  api.Coder
	code api.ErrorCode
}{
	{&orchestrator.DiagnosticsError{Diags: hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid gpu", Detail: "Use TYPE:COUNT.",
		Subject: &hcl.Range{Filename: "app.hcl", Start: hcl.Pos{Line: 6, Column: 7, Byte: 80}, End: hcl.Pos{Line: 6, Column: 15, Byte: 88}}}}},
		api.CodeInvalidSpec},
	{&orchestrator.OwnershipError{JobID: "shop-demo", Why: "it has no caravan.app meta"}, api.CodeOwnership},
	{&orchestrator.ForbiddenError{Token: "ci", Workspace: "other"}, api.CodeForbidden},
	{&orchestrator.NotFoundError{App: "demo"}, api.CodeNotFound},
	{&orchestrator.BadRequestError{Why: "strategy \"fast\""}, api.CodeBadRequest},
	{&orchestrator.RolloutError{Function: "web", Cause: "exit 1", AllocID: "0123456789", Version: 3}, api.CodeRolloutFailed},
	{&orchestrator.DeploymentMissingError{JobID: "dev--shop", JobVersion: 4, Version: 5, Waited: 10 * time.Second}, api.CodeRolloutFailed},
	{&orchestrator.HostTakenError{Host: "a.example", Owner: api.HostOwner{App: "b", Workspace: "w"}}, api.CodeHostTaken},
	{&orchestrator.DomainUnverifiedError{Workspace: "w", Challenges: []api.DomainChallenge{{Domain: "a.example",
		Record: "_caravan-challenge.a.example", Value: "v"}}}, api.CodeDomainUnverified},
	{&orchestrator.ConflictError{App: "demo", Why: "it has no live version to roll over; deploy it first"}, api.CodeConflict},
	{&orchestrator.CanaryPendingError{App: "demo", Version: 2}, api.CodeCanaryPending},
	{&orchestrator.InputTooLargeError{Size: 20000, Limit: 16384}, api.CodeInputTooLarge},
	{&orchestrator.SpecTooLargeError{Size: 300000, Limit: 262144}, api.CodeInputTooLarge},
	{&orchestrator.BundleMissingError{Version: 3, Missing: map[string]string{"web": strings.Repeat("ab", 32)}}, api.CodeBundleMissing},
	{&orchestrator.BundleTooLargeError{Limit: 256 << 20, Largest: []bundle.File{{Path: "model.bin", Size: 300 << 20}}}, api.CodeInputTooLarge},
	{&orchestrator.BundleInvalidError{Why: "the bytes hash to 00.., not to its ID"}, api.CodeBadRequest},
	{&orchestrator.BundleAccessError{Why: "the signature does not match"}, api.CodeUnauthorized},
	{&orchestrator.AgentAccessError{Why: "the signature does not match the job"}, api.CodeUnauthorized},
	{&orchestrator.TransitionError{Version: 2, From: api.StatusAborted, To: api.StatusLive}, api.CodeConflict},
	{&orchestrator.UnavailableError{Why: "lost the app's lock"}, api.CodeUnavailable},
	{&orchestrator.NamespaceMissingError{Namespace: "caravan-acme", Workspace: "acme"}, api.CodeConflict},
	{&orchestrator.PolicyError{Policy: `workspace "*" (built-in)`, Workspace: "evil", App: "demo", Violations: []policy.Violation{
		{Function: "web", Limit: "drivers", Why: `driver "raw_exec" is not allowed (drivers = ["exec", "docker"])`}}}, api.CodePolicyDenied},
}

// TestEveryOrchestratorError reads the orchestrator's source for every
// type with an Error method and checks each is in orchestratorErrors.
func TestEveryOrchestratorError(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, "../orchestrator", func(fi os.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			for _, d := range f.Decls {
				fn, ok := d.(*ast.FuncDecl)
				if !ok || fn.Recv == nil || fn.Name.Name != "Error" || len(fn.Recv.List) != 1 {
					continue
				}
				typ := fn.Recv.List[0].Type
				if star, ok := typ.(*ast.StarExpr); ok {
					typ = star.X
				}
				if id, ok := typ.(*ast.Ident); ok && id.IsExported() {
					declared[id.Name] = true
				}
			}
		}
	}
	listed := map[string]bool{}
	for _, tc := range orchestratorErrors {
		listed[reflect.TypeOf(tc.err).Elem().Name()] = true
	}
	for name := range declared {
		if !listed[name] {
			t.Errorf("orchestrator.%s is an error type with no entry in orchestratorErrors: give it an ErrorCode and list it", name)
		}
	}
	if len(declared) < len(orchestratorErrors) {
		t.Errorf("found %d error types in ../orchestrator, %d listed: is the parse wrong?", len(declared), len(orchestratorErrors))
	}
}

func TestErrorMapping(t *testing.T) {
	e := newEnv(t)
	check := func(what string, err error, code api.ErrorCode) *api.APIError {
		t.Helper()
		e.orch.err = err
		a := e.as(e.shop, "GET", "/v1/apps/demo/history", "")
		a.wantError(t, what, code.Status(), code)
		if a.err != nil && a.err.Message != err.Error() {
			t.Errorf("%s: message %q, want %q", what, a.err.Message, err.Error())
		}
		return a.err
	}

	// Every code of the table answers its status...
	for _, code := range api.Codes() {
		check(string(code), api.Errorf(code, "something %s", code), code)
	}
	// ...and every orchestrator error its code, wrapped or not.
	for _, tc := range orchestratorErrors {
		name := reflect.TypeOf(tc.err).Elem().Name()
		if got := tc.err.ErrorCode(); got != tc.code || got.Status() == http.StatusInternalServerError {
			t.Errorf("%s: code %s (%d), want %s", name, got, got.Status(), tc.code)
		}
		check(name, tc.err, tc.code)
		check(name+" wrapped", fmt.Errorf("deploying: %w", tc.err), tc.code)
	}
	check("ErrConflict", orchestrator.ErrConflict, api.CodeConflict)
	// Only the one internal code of the table was logged as a failure.
	if n := strings.Count(e.log.String(), "request failed"); n != 1 {
		t.Errorf("%d errors logged as internal, want 1 (the internal code):\n%s", n, e.log)
	}

	// An error nobody gave a code is internal, and logged.
	check("uncoded", errOops, api.CodeInternal)
	check("unknown code", api.Errorf("teapot", "short and stout"), api.CodeInternal)
	if !strings.Contains(e.log.String(), "request failed") || !strings.Contains(e.log.String(), errOops.Error()) {
		t.Errorf("an internal error is not logged:\n%s", e.log)
	}

	// What the client needs to print the failure travels with it.
	ae := check("diagnostics", orchestratorErrors[0].err, api.CodeInvalidSpec)
	want := []api.Diagnostic{{Severity: "error", Summary: "Invalid gpu", Detail: "Use TYPE:COUNT.",
		Subject: &api.Range{Filename: "app.hcl", Start: api.Pos{Line: 6, Column: 7, Byte: 80}, End: api.Pos{Line: 6, Column: 15, Byte: 88}}}}
	if !reflect.DeepEqual(ae.Diagnostics, want) {
		t.Errorf("diagnostics on the wire: %+v, want %+v", ae.Diagnostics, want)
	}
	ae = check("rollout", fmt.Errorf("x: %w", orchestratorErrors[5].err), api.CodeRolloutFailed)
	if ae.Function != "web" || ae.AllocID != "0123456789" || ae.Version != 3 {
		t.Errorf("rollout failure on the wire: %+v", ae)
	}
	ae = check("api error with details", &api.APIError{Kind: api.CodeRolloutFailed, Message: "m", Function: "f", Version: 9}, api.CodeRolloutFailed)
	if ae.Function != "f" || ae.Version != 9 {
		t.Errorf("an *api.APIError's details on the wire: %+v", ae)
	}

	// Logs answers an error only until it has written something.
	e.orch.err = &orchestrator.NotFoundError{App: "demo"}
	e.as(e.shop, "GET", "/v1/apps/demo/logs", "").wantError(t, "logs", 404, api.CodeNotFound)
	// Every other operation goes through the same path.
	for _, path := range []string{"/v1/deploy", "/v1/plan", "/v1/apps/demo/rollover", "/v1/apps/demo/rollback", "/v1/apps/demo/promote",
		"/v1/apps/demo/abort", "/v1/apps/demo/stop"} {
		e.as(e.shop, "POST", path, `{}`).wantError(t, path, 404, api.CodeNotFound)
	}
	e.as(e.shop, "POST", "/v1/apps/demo/run", `{"function": "f"}`).wantError(t, "run", 404, api.CodeNotFound)
	e.as(e.shop, "POST", "/v1/apps/demo/functions/f/call", `{}`).wantError(t, "call", 404, api.CodeNotFound)
	for _, path := range []string{"/v1/apps", "/v1/apps/demo/url?function=web"} {
		e.as(e.shop, "GET", path, "").wantError(t, path, 404, api.CodeNotFound)
	}
}

// The server's package doc and the README list every code with its status,
// as the table has them.
func TestErrorCodesDocumented(t *testing.T) {
	for _, file := range []string{"server.go", "../README.md"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, code := range api.Codes() {
			line := regexp.MustCompile(`(?m)^.*\b` + regexp.QuoteMeta(string(code)) + `\b.*$`)
			ok := false
			for _, l := range line.FindAllString(string(b), -1) {
				if strings.Contains(l, strconv.Itoa(code.Status())) {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s: no line gives %s its status %d", filepath.Base(file), code, code.Status())
			}
		}
	}
}

// The client against the real handler: every failure comes back typed,
// with its code and status, and every call reaches its operation.
func TestClientRoundTrip(t *testing.T) {
	e := newEnv(t)
	c := &api.Client{Addr: e.srv.URL + "/", Token: e.shop.Token, HTTP: e.srv.Client()}
	ctx := context.Background()

	if err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := c.Deploy(ctx, "app.hcl", []byte("app {}"), 0)
	if err != nil || res.Version != 1 || res.Kind != api.KindDeploy {
		t.Errorf("deploy: %+v, %v", res, err)
	}

	for _, tc := range orchestratorErrors {
		e.orch.err = tc.err
		_, err := c.Rollover(ctx, "demo", api.ChangeBody{})
		var apiErr *api.APIError
		if !errors.As(err, &apiErr) || apiErr.Kind != tc.code || apiErr.Status != tc.code.Status() ||
			api.ErrorCodeOf(err) != tc.code || apiErr.Message != tc.err.Error() {
			t.Errorf("%T through the client: %#v, want code %s", tc.err, err, tc.code)
		}
	}
	e.orch.err = orchestratorErrors[0].err
	_, err = c.Plan(ctx, api.DeployBody{Spec: "x"})
	if d := orchestrator.FromWire(asAPIError(err).Diagnostics); len(d) != 1 || d[0].Subject.Start.Line != 6 {
		t.Errorf("diagnostics through the client: %v", d)
	}

	// Every call, failing and not.
	calls := map[string]func() error{
		"Deploy": func() error { _, err := c.DeployBody(ctx, api.DeployBody{Spec: "x"}); return err },
		"Plan":   func() error { _, err := c.Plan(ctx, api.DeployBody{Spec: "x"}); return err },
		"Apps":   func() error { _, err := c.Apps(ctx); return err },
		"History": func() error {
			_, err := c.History(ctx, "demo", api.ChangeBody{Workspace: "shop", Serve: true})
			return err
		},
		"URL":      func() error { _, err := c.URL(ctx, "demo", "web", api.ChangeBody{Environment: "prod"}); return err },
		"Logs":     func() error { return c.Logs(ctx, "demo", api.ChangeBody{}, &strings.Builder{}) },
		"Rollover": func() error { _, err := c.Rollover(ctx, "demo", api.ChangeBody{}); return err },
		"Rollback": func() error { _, err := c.Rollback(ctx, "demo", api.ChangeBody{Version: 1}); return err },
		"Promote":  func() error { _, err := c.Promote(ctx, "demo", api.ChangeBody{}); return err },
		"Abort":    func() error { _, err := c.Abort(ctx, "demo", api.ChangeBody{}); return err },
		"Stop":     func() error { _, err := c.Stop(ctx, "demo", api.ChangeBody{}); return err },
		"Run":      func() error { _, err := c.Run(ctx, "demo", api.RunBody{Function: "nightly"}); return err },
		"Call":     func() error { _, err := c.Call(ctx, "demo", "echo", api.ChangeBody{}, nil, time.Minute); return err },
	}
	for _, fail := range []bool{false, true} {
		e.orch.err = nil
		if fail {
			e.orch.err = &orchestrator.CanaryPendingError{App: "demo", Version: 2}
		}
		for op, call := range calls {
			err := call()
			if got := e.orch.last(); got != op {
				t.Errorf("%s called %s", op, got)
			}
			if fail && (api.ErrorCodeOf(err) != api.CodeCanaryPending || asAPIError(err).Status != 409) {
				t.Errorf("%s failing: %v, want canary_pending 409", op, err)
			}
			if !fail && err != nil {
				t.Errorf("%s: %v", op, err)
			}
		}
	}

	// Tokens.
	nt, err := c.CreateToken(ctx, "deploy", "")
	if err != nil || nt.Workspace != "shop" {
		t.Fatalf("create token: %+v, %v", nt, err)
	}
	key, err := c.CreateEndpointKey(ctx, "frontend", "")
	if err != nil || key.Workspace != "shop" || key.Kind != api.TokenEndpoint || key.Token != "" {
		t.Fatalf("create endpoint key: %+v, %v", key, err)
	}
	// ci, shop's endpoint key of newEnv, deploy and frontend.
	if list, err := c.Tokens(ctx); err != nil || len(list) != 4 {
		t.Errorf("tokens: %+v, %v", list, err)
	}
	if err := c.RevokeToken(ctx, nt.ID); err != nil {
		t.Error(err)
	}
	if err := c.RevokeToken(ctx, nt.ID); api.ErrorCodeOf(err) != api.CodeNotFound {
		t.Errorf("revoke twice: %v", err)
	}
	if _, err := c.CreateToken(ctx, "x", "other"); api.ErrorCodeOf(err) != api.CodeForbidden {
		t.Errorf("create for another workspace: %v", err)
	}
	bad := &api.Client{Addr: e.srv.URL, Token: "hunter2"}
	if _, err := bad.Apps(ctx); api.ErrorCodeOf(err) != api.CodeUnauthorized || asAPIError(err).Status != 401 {
		t.Errorf("bad token: %v", err)
	}
}

func asAPIError(err error) *api.APIError {
	var e *api.APIError
	if !errors.As(err, &e) {
		return &api.APIError{}
	}
	return e
}
