package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

func TestCodeTable(t *testing.T) {
	want := map[api.ErrorCode]int{
		api.CodeBadRequest: 400, api.CodeInvalidSpec: 400, api.CodeUnauthorized: 401, api.CodeForbidden: 403, api.CodePolicyDenied: 403,
		api.CodeNotFound: 404, api.CodeConflict: 409, api.CodeOwnership: 409, api.CodeHostTaken: 409,
		api.CodeDomainUnverified: 409, api.CodeCanaryPending: 409, api.CodeBundleMissing: 409, api.CodeInputTooLarge: 413, api.CodeRolloutFailed: 422,
		api.CodeInternal: 500, api.CodeUnavailable: 503,
	}
	codes := api.Codes()
	if len(codes) != len(want) {
		t.Errorf("%d codes, want %d: %v", len(codes), len(want), codes)
	}
	seen := map[api.ErrorCode]bool{}
	for _, c := range codes {
		if seen[c] {
			t.Errorf("%s is in the table twice", c)
		}
		seen[c] = true
		if !c.Known() || c.Status() != want[c] {
			t.Errorf("%s: status %d, known %v; want %d", c, c.Status(), c.Known(), want[c])
		}
		// Read backwards, a code's status means a code of that status.
		if back := api.CodeOf(c.Status()); back.Status() != c.Status() {
			t.Errorf("CodeOf(%d) = %s, of status %d", c.Status(), back, back.Status())
		}
	}
	for status, code := range map[int]api.ErrorCode{
		400: api.CodeBadRequest, 401: api.CodeUnauthorized, 403: api.CodeForbidden, 404: api.CodeNotFound, 409: api.CodeConflict,
		413: api.CodeInputTooLarge, 503: api.CodeUnavailable,
		// Statuses the server never sends: a client error stays one.
		405: api.CodeBadRequest, 429: api.CodeBadRequest, 502: api.CodeInternal, 200: api.CodeInternal,
	} {
		if got := api.CodeOf(status); got != code {
			t.Errorf("CodeOf(%d) = %s, want %s", status, got, code)
		}
	}
	if c := api.ErrorCode("teapot"); c.Known() || c.Status() != 500 {
		t.Errorf("an unknown code: known %v, status %d", c.Known(), c.Status())
	}
}

type coded struct{}

func (coded) Error() string            { return "coded" }
func (coded) ErrorCode() api.ErrorCode { return api.CodeHostTaken }

func TestErrorCodeOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want api.ErrorCode
	}{
		{nil, ""},
		{errors.New("plain"), api.CodeInternal},
		{api.Errorf(api.CodeNotFound, "no app %q", "x"), api.CodeNotFound},
		{fmt.Errorf("wrapped: %w", api.Errorf(api.CodeConflict, "lost")), api.CodeConflict},
		{&api.APIError{Message: "no kind"}, api.CodeInternal},
		{fmt.Errorf("x: %w", coded{}), api.CodeHostTaken},
		{errors.Join(errors.New("a"), coded{}), api.CodeHostTaken},
	} {
		if got := api.ErrorCodeOf(tc.err); got != tc.want {
			t.Errorf("ErrorCodeOf(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	if e := api.Errorf(api.CodeNotFound, "no app %q", "x"); e.Error() != `no app "x"` {
		t.Errorf("message %q", e.Error())
	}
}

// The client types every failure: the server's envelope with its code and
// status, a code it does not know by its status, a body that is not
// caravan's by its status.
func TestClientErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/apps/conflict/rollover":
			w.WriteHeader(409)
			io.WriteString(w, `{"error": {"kind": "conflict", "message": "app \"conflict\": it has no live version to roll over"}}`)
		case "/v1/deploy":
			w.WriteHeader(400)
			io.WriteString(w, `{"error": {"kind": "invalid_spec", "message": "invalid spec (1 errors)", "diagnostics": [
				{"severity": "error", "summary": "Invalid gpu", "subject": {"Filename": "app.hcl",
				 "Start": {"Line": 6, "Column": 7, "Byte": 80}, "End": {"Line": 6, "Column": 15, "Byte": 88}}}]}}`)
		case "/v1/apps/new/promote":
			w.WriteHeader(409)
			io.WriteString(w, `{"error": {"kind": "from_the_future", "message": "a newer server's code"}}`)
		case "/v1/apps/proxy/logs":
			w.WriteHeader(502)
			io.WriteString(w, "<html>Bad Gateway</html>\n")
		default:
			w.WriteHeader(404)
			io.WriteString(w, "404 page not found\n")
		}
	}))
	defer srv.Close()
	c := &api.Client{Addr: srv.URL, Token: "cvn_x_y"}
	ctx := context.Background()

	_, err := c.Rollover(ctx, "conflict", api.ChangeBody{})
	var e *api.APIError
	if !errors.As(err, &e) || e.Kind != api.CodeConflict || e.Status != 409 || !strings.Contains(e.Message, "no live version") {
		t.Errorf("conflict: %#v", err)
	}

	_, err = c.Deploy(ctx, "app.hcl", []byte("app {}"), time.Minute)
	want := api.Diagnostic{Severity: "error", Summary: "Invalid gpu",
		Subject: &api.Range{Filename: "app.hcl", Start: api.Pos{Line: 6, Column: 7, Byte: 80}, End: api.Pos{Line: 6, Column: 15, Byte: 88}}}
	if !errors.As(err, &e) || e.Kind != api.CodeInvalidSpec || len(e.Diagnostics) != 1 || *e.Diagnostics[0].Subject != *want.Subject {
		t.Errorf("invalid spec: %#v", err)
	}

	_, err = c.Promote(ctx, "new", api.ChangeBody{})
	if !errors.As(err, &e) || e.Kind != api.CodeConflict || e.Message != "a newer server's code" {
		t.Errorf("unknown code: %#v, want conflict by its status", err)
	}

	err = c.Logs(ctx, "proxy", api.ChangeBody{}, io.Discard)
	if !errors.As(err, &e) || e.Kind != api.CodeInternal || e.Status != 502 || !strings.Contains(e.Message, "Bad Gateway") {
		t.Errorf("a proxy's page: %#v", err)
	}

	if _, err := c.Apps(ctx); api.ErrorCodeOf(err) != api.CodeNotFound || !strings.Contains(err.Error(), "GET /v1/apps: 404") {
		t.Errorf("a bare 404: %v", err)
	}

	down := &api.Client{Addr: "http://127.0.0.1:1"}
	if err := down.Health(ctx); err == nil || !strings.Contains(err.Error(), "cannot reach caravan server") || errors.As(err, &e) {
		t.Errorf("server down: %v", err)
	}
}

// countingTransport counts the requests it carries.
type countingTransport struct{ n atomic.Int32 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// Every call, Logs included, goes through the client's own HTTP client
// with its token, and sends what the server's endpoints read.
func TestClientRequests(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer cvn_x_y" {
			w.WriteHeader(401)
			return
		}
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.RequestURI()+" "+strings.TrimSpace(string(b)))
		switch {
		case strings.HasSuffix(r.URL.Path, "/logs"):
			io.WriteString(w, "a log line\n")
		case strings.HasSuffix(r.URL.Path, "/url"):
			io.WriteString(w, `{"url": "https://x"}`)
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == "/v1/tokens" && r.Method == http.MethodGet:
			io.WriteString(w, `[]`)
		default:
			io.WriteString(w, `{}`)
		}
	}))
	defer srv.Close()
	tr := &countingTransport{}
	c := &api.Client{Addr: srv.URL + "/", Token: "cvn_x_y", HTTP: &http.Client{Transport: tr}}
	ctx := context.Background()
	ref := api.ChangeBody{Workspace: "shop", Environment: "prod", Serve: true}

	var logs strings.Builder
	calls := []func() error{
		func() error { return c.Logs(ctx, "demo", ref, &logs) },
		func() error { u, err := c.URL(ctx, "demo", "web", ref); _ = u; return err },
		func() error { _, err := c.History(ctx, "demo", api.ChangeBody{}); return err },
		func() error {
			_, err := c.Call(ctx, "demo", "echo", ref, []byte(`{"n": 1}`), 30*time.Second)
			return err
		},
		func() error { _, err := c.Call(ctx, "demo", "echo", api.ChangeBody{}, nil, 0); return err },
		func() error { _, err := c.Rollback(ctx, "demo", api.ChangeBody{Version: 3}); return err },
		func() error { _, err := c.Abort(ctx, "demo", api.ChangeBody{}); return err },
		func() error { _, err := c.Stop(ctx, "a b", api.ChangeBody{}); return err },
		func() error { _, err := c.Run(ctx, "demo", api.RunBody{Function: "nightly"}); return err },
		func() error { _, err := c.Plan(ctx, api.DeployBody{Spec: "s"}); return err },
		func() error { _, err := c.Deploy(ctx, "app.hcl", []byte("s"), 0); return err },
		func() error { _, err := c.CreateToken(ctx, "ci", "shop"); return err },
		func() error { _, err := c.Tokens(ctx); return err },
		func() error { return c.RevokeToken(ctx, "abc") },
	}
	for i, call := range calls {
		if err := call(); err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	wantReqs := []string{
		"GET /v1/apps/demo/logs?environment=prod&serve=true&workspace=shop ",
		"GET /v1/apps/demo/url?environment=prod&function=web&serve=true&workspace=shop ",
		"GET /v1/apps/demo/history? ",
		`POST /v1/apps/demo/functions/echo/call?environment=prod&serve=true&timeout=30s&workspace=shop {"n": 1}`,
		"POST /v1/apps/demo/functions/echo/call? ",
		`POST /v1/apps/demo/rollback {"version":3}`,
		`POST /v1/apps/demo/abort {}`,
		`POST /v1/apps/a%20b/stop {}`,
		`POST /v1/apps/demo/run {"function":"nightly"}`,
		`POST /v1/plan {"filename":"","spec":"s"}`,
		`POST /v1/deploy {"filename":"app.hcl","spec":"s"}`,
		`POST /v1/tokens {"name":"ci","workspace":"shop","kind":"api"}`,
		"GET /v1/tokens ",
		"DELETE /v1/tokens/abc ",
	}
	if strings.Join(got, "\n") != strings.Join(wantReqs, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantReqs, "\n"))
	}
	if logs.String() != "a log line\n" {
		t.Errorf("logs: %q", logs.String())
	}
	if n := tr.n.Load(); int(n) != len(calls) {
		t.Errorf("the client's HTTP client carried %d of %d requests", n, len(calls))
	}
}

// The wire types keep their JSON names; typed values marshal as strings.
func TestWireJSON(t *testing.T) {
	b, _ := json.Marshal(api.VersionRecord{Version: 2, Kind: api.KindRollback, Status: api.StatusCanary})
	for _, want := range []string{`"kind":"rollback"`, `"status":"canary"`, `"started_at":"0001-01-01T00:00:00Z"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	if strings.Contains(string(b), "finished_at") {
		t.Errorf("%s: a zero finished_at is omitted", b)
	}
	var rec api.AppRecord
	if err := json.Unmarshal([]byte(`{"state": "stopped", "live_version": 0}`), &rec); err != nil || rec.State != api.StateStopped {
		t.Errorf("app record: %+v, %v", rec, err)
	}
}
