package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/internal/syncbuf"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/go-hclog"
)

const testProbeSecret = "s3cret-probe"

// env is a handler over fakes, served by httptest, with a token of
// workspace shop and one of every workspace.
type env struct {
	t      *testing.T
	srv    *httptest.Server
	kv     *memKV
	tokens *Tokens
	orch   *fakeOrch
	log    *syncbuf.Buffer
	shop   *api.NewToken
	all    *api.NewToken
	// shopKey and otherKey are endpoint keys of workspaces shop and other.
	shopKey  *api.NewToken
	otherKey *api.NewToken
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, kv: newMemKV(), orch: &fakeOrch{}, log: &syncbuf.Buffer{}}
	e.tokens = &Tokens{KV: e.kv}
	var err error
	if e.shop, err = e.tokens.CreateToken(context.Background(), api.TokenAPI, "ci", "shop", api.Caller{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	if e.all, err = e.tokens.CreateToken(context.Background(), api.TokenAPI, "admin", "*", api.Caller{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	if e.shopKey, err = e.tokens.CreateToken(context.Background(), api.TokenEndpoint, "frontend", "shop", api.Caller{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	if e.otherKey, err = e.tokens.CreateToken(context.Background(), api.TokenEndpoint, "frontend", "other", api.Caller{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Deps{Orchestrator: e.orch, Tokens: e.tokens, ProbeSecret: testProbeSecret,
		Logger: hclog.New(&hclog.LoggerOptions{Output: e.log, Level: hclog.Debug})})
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// answer is one response, its error envelope decoded when there is one.
type answer struct {
	status int
	header http.Header
	body   []byte
	err    *api.APIError
}

func (e *env) request(method, path, auth string, body io.Reader, header http.Header) answer {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, body: b}
	var env struct {
		Error *api.APIError `json:"error"`
	}
	if resp.StatusCode/100 != 2 && json.Unmarshal(b, &env) == nil {
		a.err = env.Error
	}
	return a
}

// as sends a request with token as the bearer token.
func (e *env) as(token *api.NewToken, method, path, body string) answer {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	return e.request(method, path, "Bearer "+token.Token, r, nil)
}

// wantError checks a failed answer's status and the envelope's kind.
func (a answer) wantError(t *testing.T, what string, status int, code api.ErrorCode) {
	t.Helper()
	if a.status != status || a.err == nil || a.err.Kind != code || a.err.Message == "" {
		t.Errorf("%s: %d %s, want %d with kind %s", what, a.status, a.body, status, code)
	}
}

func TestHealthNeedsNoToken(t *testing.T) {
	e := newEnv(t)
	if a := e.request("GET", "/v1/health", "", nil, nil); a.status != 200 || !strings.Contains(string(a.body), `"ok": true`) {
		t.Errorf("health: %d %s", a.status, a.body)
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	revoked, err := e.tokens.CreateToken(context.Background(), api.TokenAPI, "old", "shop", api.Caller{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.tokens.Revoke(context.Background(), revoked.ID, "shop", api.Caller{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, auth string }{
		{"missing", ""},
		{"not bearer", "Basic " + e.shop.Token},
		{"malformed", "Bearer hunter2"},
		{"no secret", "Bearer " + TokenPrefix + e.shop.ID},
		{"empty id", "Bearer " + TokenPrefix + "_" + e.shop.Secret},
		{"unknown", "Bearer " + TokenPrefix + "0000000000000000_" + e.shop.Secret},
		{"wrong secret", "Bearer " + TokenPrefix + e.shop.ID + "_" + e.all.Secret},
		{"path in id", "Bearer " + TokenPrefix + "../x_" + e.shop.Secret},
		{"revoked", "Bearer " + revoked.Token},
	} {
		a := e.request("GET", "/v1/apps", tc.auth, nil, nil)
		a.wantError(t, tc.name, http.StatusUnauthorized, api.CodeUnauthorized)
	}
	if calls := e.orch.calls; len(calls) != 0 {
		t.Errorf("rejected requests reached the orchestrator: %v", calls)
	}

	a := e.as(e.shop, "GET", "/v1/apps", "")
	if a.status != 200 || strings.TrimSpace(string(a.body)) != "[]" {
		t.Errorf("good token: %d %s, want 200 []", a.status, a.body)
	}
	if e.orch.caller != (api.Caller{Name: "ci", TokenID: e.shop.ID, Workspace: "shop"}) {
		t.Errorf("orchestrator called as %+v", e.orch.caller)
	}
	// Surrounding space is forgiven, as a pasted token has it.
	if a := e.request("GET", "/v1/apps", "Bearer  "+e.shop.Token+" ", nil, nil); a.status != 200 {
		t.Errorf("token with spaces: %d %s", a.status, a.body)
	}

	// Consul down: the token may be good, so not 401 but 503, retry.
	e.kv.fail(errors.New("connection refused"))
	e.as(e.shop, "GET", "/v1/apps", "").wantError(t, "consul down", http.StatusServiceUnavailable, api.CodeUnavailable)
	if !strings.Contains(e.log.String(), "rejected request") {
		t.Errorf("a rejected request is not logged:\n%s", e.log)
	}
}

// Lookup checks the token with the request's context: a request that is
// gone does not wait on the store.
func TestLookupTakesTheRequestContext(t *testing.T) {
	var got context.Context
	kv := &ctxKV{memKV: newMemKV(), seen: &got}
	tokens := &Tokens{KV: kv}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tokens.Lookup(ctx, TokenPrefix+"abc_def"); err == nil {
		t.Fatal("a lookup with a cancelled context succeeded")
	}
	if got != ctx {
		t.Errorf("Lookup passed %v to the store, not the caller's context", got)
	}
}

type ctxKV struct {
	*memKV
	seen *context.Context
}

func (k *ctxKV) Get(ctx context.Context, key string) ([]byte, error) {
	*k.seen = ctx
	return nil, ctx.Err()
}

func TestTokensAcrossWorkspaces(t *testing.T) {
	e := newEnv(t)
	other, err := e.tokens.CreateToken(context.Background(), api.TokenAPI, "theirs", "other", api.Caller{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}

	// A workspace's token may not create tokens for another: forbidden.
	e.as(e.shop, "POST", "/v1/tokens", `{"name": "x", "workspace": "other"}`).
		wantError(t, "create for another workspace", http.StatusForbidden, api.CodeForbidden)
	// Nor see or revoke them: to it they do not exist.
	e.as(e.shop, "DELETE", "/v1/tokens/"+other.ID, "").
		wantError(t, "revoke another workspace's token", http.StatusNotFound, api.CodeNotFound)
	e.as(e.shop, "DELETE", "/v1/tokens/nosuchtoken", "").
		wantError(t, "revoke an unknown token", http.StatusNotFound, api.CodeNotFound)
	var list []api.TokenInfo
	a := e.as(e.shop, "GET", "/v1/tokens", "")
	if err := json.Unmarshal(a.body, &list); err != nil || len(list) != 2 || list[0].ID != e.shop.ID || list[0].Kind != api.TokenAPI ||
		list[1].ID != e.shopKey.ID || list[1].Kind != api.TokenEndpoint || strings.Contains(string(a.body), "secret") {
		t.Errorf("shop's token list: %d %s", a.status, a.body)
	}

	// Its own workspace is the default.
	var nt api.NewToken
	a = e.as(e.shop, "POST", "/v1/tokens", `{"name": "deploy"}`)
	if err := json.Unmarshal(a.body, &nt); a.status != 200 || err != nil || nt.Workspace != "shop" || nt.CreatedBy != "ci" || nt.CreatedByID != e.shop.ID ||
		!strings.HasPrefix(nt.Token, TokenPrefix+nt.ID+"_") || nt.Secret == "" {
		t.Errorf("create: %d %s", a.status, a.body)
	}
	if c, err := e.tokens.Lookup(context.Background(), nt.Token); err != nil || c != (api.Caller{Name: "deploy", TokenID: nt.ID, Workspace: "shop"}) {
		t.Errorf("the new token: %+v, %v", c, err)
	}
	if a := e.as(e.shop, "DELETE", "/v1/tokens/"+TokenPrefix+nt.ID, ""); a.status != http.StatusNoContent {
		t.Errorf("revoke own token: %d %s", a.status, a.body)
	}

	// A token of every workspace may do all of it.
	if a := e.as(e.all, "POST", "/v1/tokens", `{"name": "x", "workspace": "other"}`); a.status != 200 {
		t.Errorf("'*' creates for another workspace: %d %s", a.status, a.body)
	}
	if a := e.as(e.all, "DELETE", "/v1/tokens/"+other.ID, ""); a.status != http.StatusNoContent {
		t.Errorf("'*' revokes another workspace's token: %d %s", a.status, a.body)
	}
	a = e.as(e.all, "GET", "/v1/tokens", "")
	if err := json.Unmarshal(a.body, &list); err != nil || len(list) != 5 {
		t.Errorf("'*' token list: %d %s", a.status, a.body)
	}

	e.as(e.shop, "POST", "/v1/tokens", `{"workspace": "shop"}`).wantError(t, "no name", http.StatusBadRequest, api.CodeBadRequest)
	e.as(e.shop, "POST", "/v1/tokens", `{"name": `).wantError(t, "bad JSON", http.StatusBadRequest, api.CodeBadRequest)

	// The store failing is an outage, whatever the operation.
	e.kv.fail(errors.New("connection refused"))
	for _, tokenOp := range []func() error{
		func() error {
			_, err := e.tokens.CreateToken(context.Background(), api.TokenAPI, "x", "shop", api.Caller{})
			return err
		},
		func() error { _, err := e.tokens.List(context.Background(), "shop", false); return err },
		func() error { return e.tokens.Revoke(context.Background(), e.shop.ID, "shop", api.Caller{}) },
		func() error { _, err := e.tokens.Create("x", "shop"); return err },
	} {
		if err := tokenOp(); api.ErrorCodeOf(err) != api.CodeUnavailable {
			t.Errorf("token store down: %v (code %s), want unavailable", err, api.ErrorCodeOf(err))
		}
	}
}

func TestProxyAuth(t *testing.T) {
	e := newEnv(t)
	pair := func(key, secret string) http.Header {
		return http.Header{router.HeaderKey: {key}, router.HeaderSecret: {secret}}
	}
	const shopHost = "shop--store-web.caravan.localhost"
	for _, tc := range []struct {
		name      string
		workspace string
		header    http.Header
		want      int
	}{
		{"its workspace", "shop", pair(e.shopKey.ID, e.shopKey.Secret), 200},
		{"its workspace, key with prefix", "shop", pair(TokenPrefix+e.shopKey.ID, e.shopKey.Secret), 200},
		{"another workspace's key", "shop", pair(e.otherKey.ID, e.otherKey.Secret), 401},
		{"its key, another workspace", "other", pair(e.shopKey.ID, e.shopKey.Secret), 401},
		{"no workspace named", "", pair(e.shopKey.ID, e.shopKey.Secret), 401},
		{"wrong secret", "shop", pair(e.shopKey.ID, e.otherKey.Secret), 401},
		{"no headers", "shop", nil, 401},
		{"an API token split in two", "shop", pair(e.shop.ID, e.shop.Secret), 401},
		{"an API token of every workspace split in two", "shop", pair(e.all.ID, e.all.Secret), 401},
		{"a whole API token as key", "shop", pair(e.shop.Token, ""), 401},
		{"probe of its host", "shop", probe(shopHost, shopHost), 200},
		{"probe, wrong secret", "shop", forHost(pair(probeKey, "guess"), shopHost), 401},
		{"probe, no secret", "shop", forHost(pair(probeKey, ""), shopHost), 401},
	} {
		a := e.request("GET", "/v1/auth/proxy?workspace="+tc.workspace, "", nil, tc.header)
		if a.status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, a.status, a.body, tc.want)
		}
		if tc.want == 401 {
			a.wantError(t, tc.name, 401, api.CodeUnauthorized)
			if got := a.header.Get("WWW-Authenticate"); got != `Caravan realm="`+tc.workspace+`"` {
				t.Errorf("%s: WWW-Authenticate %q", tc.name, got)
			}
		}
	}

	// A route's probe router (?probe=true) passes the probe's credential
	// for its host and nothing else: not an endpoint key, not another
	// host's probe.
	for _, tc := range []struct {
		name   string
		header http.Header
		want   int
	}{
		{"probe of its host", probe(shopHost, shopHost), 200},
		{"probe of another host", probe("other--x-web.caravan.localhost", shopHost), 401},
		{"an endpoint key", forHost(pair(e.shopKey.ID, e.shopKey.Secret), shopHost), 401},
		{"the probe's key, no secret", forHost(pair(probeKey, ""), shopHost), 401},
	} {
		a := e.request("GET", "/v1/auth/proxy?probe=true", "", nil, tc.header)
		if a.status != tc.want {
			t.Errorf("probe router, %s: %d %s, want %d", tc.name, a.status, a.body, tc.want)
		}
		if tc.want == 401 {
			a.wantError(t, tc.name, 401, api.CodeUnauthorized)
		}
	}

	e.kv.fail(errors.New("connection refused"))
	e.request("GET", "/v1/auth/proxy?workspace=shop", "", nil, pair(e.shopKey.ID, e.shopKey.Secret)).
		wantError(t, "consul down", http.StatusServiceUnavailable, api.CodeUnavailable)
	// The server's own probes do not need Consul.
	if a := e.request("GET", "/v1/auth/proxy?workspace=shop", "", nil, probe(shopHost, shopHost)); a.status != 200 {
		t.Errorf("probe with consul down: %d", a.status)
	}
}

// probe is the header of a deploy probe made for host, as sent to sentTo
// (Traefik's forwardAuth names it in X-Forwarded-Host).
func probe(host, sentTo string) http.Header {
	return forHost(ProbeHeader(testProbeSecret, host), sentTo)
}

func forHost(h http.Header, host string) http.Header {
	if host != "" {
		h.Set("X-Forwarded-Host", host)
	}
	return h
}

// A handler built without a probe secret lets no probe through, not even
// one that sends an empty secret or the HMAC under an empty key.
func TestProxyAuthWithoutProbeSecret(t *testing.T) {
	h := NewHandler(Deps{Orchestrator: &fakeOrch{}, Tokens: &Tokens{KV: newMemKV()}})
	for _, header := range []http.Header{
		forHost(http.Header{router.HeaderKey: {probeKey}}, "a.caravan.localhost"),
		forHost(ProbeHeader("", "a.caravan.localhost"), "a.caravan.localhost"),
	} {
		req := httptest.NewRequest("GET", "/v1/auth/proxy?workspace=shop", nil)
		req.Header = header
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 401 {
			t.Errorf("probe with no secret configured: %d, want 401", rec.Code)
		}
	}
}

// TestProbeCredentialIsBoundToItsHost: the deploy probe's credential opens
// the hostname it was made for, however the Host header spells it, and no
// other: not another app's, not another workspace's, not without the
// hostname Traefik names, not once probeLifetime has passed (nor as long
// ahead of the server's clock); the key alone (what the probe sent before)
// is no secret.
func TestProbeCredentialIsBoundToItsHost(t *testing.T) {
	e := newEnv(t)
	const mine = "shop--store-web.caravan.localhost"
	for _, tc := range []struct {
		name      string
		workspace string
		header    http.Header
		want      int
	}{
		{"its host", "shop", probe(mine, mine), 200},
		{"its host with the port", "shop", probe(mine, mine+":8443"), 200},
		{"its host in capitals, with a dot", "shop", probe(mine, "Shop--Store-Web.Caravan.Localhost."), 200},
		{"another app's host", "shop", probe(mine, "shop--other-web.caravan.localhost"), 401},
		{"another workspace's host", "bank", probe(mine, "bank--vault-web.caravan.localhost"), 401},
		{"a host under its own", "shop", probe(mine, "x."+mine), 401},
		{"no X-Forwarded-Host", "shop", probe(mine, ""), 401},
		{"the key as the secret", "shop", forHost(http.Header{router.HeaderKey: {probeKey}, router.HeaderSecret: {testProbeSecret}}, mine), 401},
		{"another cluster's key", "shop", forHost(ProbeHeader("another", mine), mine), 401},
		{"made 4 minutes ago", "shop", forHost(probeHeaderAt(testProbeSecret, mine, time.Now().Add(-4*time.Minute)), mine), 200},
		{"made 6 minutes ago", "shop", forHost(probeHeaderAt(testProbeSecret, mine, time.Now().Add(-6*time.Minute)), mine), 401},
		{"made 4 minutes ahead", "shop", forHost(probeHeaderAt(testProbeSecret, mine, time.Now().Add(4*time.Minute)), mine), 200},
		{"made 6 minutes ahead", "shop", forHost(probeHeaderAt(testProbeSecret, mine, time.Now().Add(6*time.Minute)), mine), 401},
		{"an old one's time, rewritten", "shop", forHost(probeWith(retimed(probeHeaderAt(testProbeSecret, mine, time.Now().Add(-time.Hour)))), mine), 401},
		{"the HMAC alone", "shop", forHost(probeWith(strings.SplitN(ProbeHeader(testProbeSecret, mine).Get(router.HeaderSecret), ".", 2)[1]), mine), 401},
	} {
		if a := e.request("GET", "/v1/auth/proxy?workspace="+tc.workspace, "", nil, tc.header); a.status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, a.status, a.body, tc.want)
		}
	}
}

// probeWith is a probe's header with secret.
func probeWith(secret string) http.Header {
	return http.Header{router.HeaderKey: {probeKey}, router.HeaderSecret: {secret}}
}

// retimed is the secret of probe header h with its time replaced by now's,
// its HMAC kept.
func retimed(h http.Header) string {
	_, mac, _ := strings.Cut(h.Get(router.HeaderSecret), ".")
	return strconv.FormatInt(time.Now().Unix(), 10) + "." + mac
}

func TestRequests(t *testing.T) {
	e := newEnv(t)
	e.orch.logs = "line 1\nline 2\n"
	e.orch.apps = []api.AppSummary{{App: "demo", State: api.StateDeployed}}
	for _, tc := range []struct {
		method, path, body string
		op                 string
		want               string // in the answer
		check              func() error
	}{
		{"POST", "/v1/deploy", `{"filename": "app.hcl", "spec": "app {}", "timeout": "2m", "strategy": "canary", "tag": "t", "git_commit": "abc", "git_dirty": true, "serve": true}`,
			"Deploy", `"kind": "deploy"`, func() error {
				d := e.orch.deploy
				if d.Filename != "app.hcl" || string(d.Spec) != "app {}" || d.Timeout != 2*time.Minute || d.Strategy != "canary" ||
					d.Tag != "t" || d.GitCommit != "abc" || !d.GitDirty || !d.Serve {
					return fmt.Errorf("deploy request %+v", d)
				}
				return nil
			}},
		{"POST", "/v1/plan", `{"filename": "app.hcl", "spec": "app {}"}`, "Plan", `"changed": true`, nil},
		{"GET", "/v1/apps", "", "Apps", `"app": "demo"`, nil},
		{"GET", "/v1/apps/demo/history?workspace=shop&environment=prod&serve=true", "", "History", `"status": "live"`, func() error {
			if e.orch.ref != (api.AppRef{App: "demo", Workspace: "shop", Environment: "prod", Serve: true}) {
				return fmt.Errorf("ref %+v", e.orch.ref)
			}
			return nil
		}},
		{"GET", "/v1/apps/demo/url?function=web", "", "URL", `"url": "https://web.demo.example"`, nil},
		{"GET", "/v1/apps/demo/logs", "", "Logs", "line 1\nline 2\n", nil},
		{"POST", "/v1/apps/demo/rollover", `{"workspace": "shop", "strategy": "recreate", "timeout": "1m"}`, "Rollover", `"version": 2`, func() error {
			c := e.orch.change
			if c.App != "demo" || c.Workspace != "shop" || c.Strategy != "recreate" || c.Timeout != time.Minute {
				return fmt.Errorf("change request %+v", c)
			}
			return nil
		}},
		{"POST", "/v1/apps/demo/rollback", `{"version": 3}`, "Rollback", `"version": 2`, func() error {
			if e.orch.change.Version != 3 {
				return fmt.Errorf("rollback to %d", e.orch.change.Version)
			}
			return nil
		}},
		// An empty body asks for the defaults.
		{"POST", "/v1/apps/demo/promote", "", "Promote", `"app": "demo"`, nil},
		{"POST", "/v1/apps/demo/abort", `{}`, "Abort", `"app": "demo"`, nil},
		{"POST", "/v1/apps/demo/stop", `{"environment": "prod"}`, "Stop", `"state": "stopped"`, func() error {
			if e.orch.ref != (api.AppRef{App: "demo", Environment: "prod"}) {
				return fmt.Errorf("ref %+v", e.orch.ref)
			}
			return nil
		}},
		{"POST", "/v1/apps/demo/run", `{"function": "nightly"}`, "Run", `"status": "succeeded"`, func() error {
			if e.orch.fn != "nightly" || !e.orch.runDeadline {
				return fmt.Errorf("run %q, deadline %v", e.orch.fn, e.orch.runDeadline)
			}
			return nil
		}},
		{"GET", "/v1/domains", "", "Domains", `"domain": "example.com"`, nil},
		{"POST", "/v1/domains/verify", `{"domain": "shop.example.com"}`, "VerifyDomain", `"method": "dns"`, func() error {
			if e.orch.fn != " shop.example.com" {
				return fmt.Errorf("verify %q", e.orch.fn)
			}
			return nil
		}},
		{"POST", "/v1/domains", `{"domain": "shop.example.com", "workspace": "shop"}`, "AssignDomain", `"method": "assigned"`, func() error {
			if e.orch.fn != "shop shop.example.com" {
				return fmt.Errorf("assign %q", e.orch.fn)
			}
			return nil
		}},
		{"POST", "/v1/apps/demo/functions/echo/call?workspace=shop&timeout=30s", `{"n": 1}`, "Call", `"output": "{\"n\": 1}"`, func() error {
			c := e.orch.call
			if c.Function != "echo" || c.App != "demo" || c.Workspace != "shop" || c.Timeout != 30*time.Second {
				return fmt.Errorf("call request %+v", c)
			}
			return nil
		}},
	} {
		a := e.as(e.shop, tc.method, tc.path, tc.body)
		if a.status != 200 || !strings.Contains(string(a.body), tc.want) || e.orch.last() != tc.op {
			t.Errorf("%s %s: %d %s (called %s), want 200 with %s from %s", tc.method, tc.path, a.status, a.body, e.orch.last(), tc.want, tc.op)
			continue
		}
		if tc.check != nil {
			if err := tc.check(); err != nil {
				t.Errorf("%s %s: %v", tc.method, tc.path, err)
			}
		}
	}
}

func TestLimits(t *testing.T) {
	e := newEnv(t)
	huge := func(n int) string {
		return `{"spec": "` + strings.Repeat("x", n) + `"}`
	}
	// A spec of spec.MaxSize is read; one byte more is refused with the
	// limit, and a body past what such a spec takes is not even read.
	if a := e.as(e.shop, "POST", "/v1/deploy", huge(spec.MaxSize)); a.status != 200 {
		t.Errorf("spec at the bound: %d %.200s", a.status, a.body)
	}
	for _, path := range []string{"/v1/deploy", "/v1/plan"} {
		for what, body := range map[string]string{"spec": huge(spec.MaxSize + 1), "body": huge(maxDeployBody)} {
			a := e.as(e.shop, "POST", path, body)
			a.wantError(t, path+" "+what+" over the limit", http.StatusRequestEntityTooLarge, api.CodeInputTooLarge)
			if a.err != nil && !strings.Contains(a.err.Message, "256 KiB") {
				t.Errorf("%s %s over the limit does not say the limit: %s", path, what, a.err.Message)
			}
		}
	}
	for _, path := range []string{"/v1/tokens", "/v1/apps/demo/rollover", "/v1/apps/demo/rollback", "/v1/apps/demo/promote",
		"/v1/apps/demo/abort", "/v1/apps/demo/stop", "/v1/apps/demo/run"} {
		e.as(e.shop, "POST", path, `{"tag": "`+strings.Repeat("x", maxChangeBody)+`"}`).
			wantError(t, path+" over 64 KiB", http.StatusRequestEntityTooLarge, api.CodeInputTooLarge)
	}
	e.orch.calls = nil

	// A call's input: the server does not read past the queue's 16 MiB
	// (an isolated function's 16 KiB is the orchestrator's to check).
	a := e.as(e.shop, "POST", "/v1/apps/demo/functions/echo/call", strings.Repeat("x", maxCallBody+1))
	a.wantError(t, "call over 16 MiB", http.StatusRequestEntityTooLarge, api.CodeInputTooLarge)
	if !strings.Contains(a.err.Message, "16 MiB") {
		t.Errorf("call over 16 MiB: %s", a.err.Message)
	}
	if len(e.orch.calls) != 0 {
		t.Errorf("bodies over their bound reached the orchestrator: %v", e.orch.calls)
	}

	for _, tc := range []struct{ path, body string }{
		{"/v1/deploy", `{"spec": `},
		{"/v1/deploy", `{"spec": "x", "timeout": "soon"}`},
		{"/v1/apps/demo/rollover", `{"timeout": "soon"}`},
		{"/v1/apps/demo/rollback", `[1]`},
		{"/v1/apps/demo/run", `{}`},
		{"/v1/apps/demo/run", `{"function": "nightly", "timeout": "soon"}`},
		{"/v1/apps/demo/run", ``},
		{"/v1/apps/demo/functions/echo/call?timeout=soon", `{}`},
	} {
		e.as(e.shop, "POST", tc.path, tc.body).wantError(t, tc.path+" "+tc.body, http.StatusBadRequest, api.CodeBadRequest)
	}
}

// TestCredentialKinds: an API token opens the API and no endpoint; an
// endpoint key opens its workspace's endpoints and not the API; each is
// made, listed and revoked per workspace.
func TestCredentialKinds(t *testing.T) {
	e := newEnv(t)
	proxy := func(ws, key, secret string) int {
		return e.request("GET", "/v1/auth/proxy?workspace="+ws, "", nil,
			http.Header{router.HeaderKey: {key}, router.HeaderSecret: {secret}}).status
	}

	// An endpoint key is no bearer token, however it is written.
	for name, auth := range map[string]string{
		"key as token":     "Bearer " + TokenPrefix + e.shopKey.ID + "_" + e.shopKey.Secret,
		"key without cvn_": "Bearer " + e.shopKey.ID + "_" + e.shopKey.Secret,
		"secret alone":     "Bearer " + e.shopKey.Secret,
	} {
		e.request("GET", "/v1/apps", auth, nil, nil).wantError(t, name, http.StatusUnauthorized, api.CodeUnauthorized)
	}
	if _, err := e.tokens.Lookup(context.Background(), TokenPrefix+e.shopKey.ID+"_"+e.shopKey.Secret); !isBadToken(err) {
		t.Errorf("Lookup of an endpoint key: %v, want ErrBadToken", err)
	}
	if _, err := e.tokens.LookupKey(context.Background(), e.shop.ID, e.shop.Secret); !isBadToken(err) {
		t.Errorf("LookupKey of an API token: %v, want ErrBadToken", err)
	}

	// Made through the API: the caller's workspace by default, with no
	// whole-token form, and it works at once, there only.
	var key api.NewToken
	a := e.as(e.shop, "POST", "/v1/tokens", `{"name": "frontend", "kind": "endpoint"}`)
	if err := json.Unmarshal(a.body, &key); a.status != 200 || err != nil || key.Kind != api.TokenEndpoint ||
		key.Workspace != "shop" || key.Token != "" || key.Secret == "" || strings.Contains(string(a.body), `"token"`) {
		t.Fatalf("create an endpoint key: %d %s", a.status, a.body)
	}
	if got := proxy("shop", key.ID, key.Secret); got != 200 {
		t.Errorf("the new key at its workspace: %d", got)
	}
	if got := proxy("other", key.ID, key.Secret); got != 401 {
		t.Errorf("the new key at another workspace: %d", got)
	}
	// Another workspace's key cannot open shop's endpoints, nor be revoked
	// by shop's token.
	if got := proxy("shop", e.otherKey.ID, e.otherKey.Secret); got != 401 {
		t.Errorf("other's key at shop: %d", got)
	}
	e.as(e.shop, "DELETE", "/v1/tokens/"+e.otherKey.ID, "").
		wantError(t, "revoke another workspace's key", http.StatusNotFound, api.CodeNotFound)

	// An endpoint key names one workspace; a kind is one of two.
	e.as(e.all, "POST", "/v1/tokens", `{"name": "everywhere", "kind": "endpoint"}`).
		wantError(t, "an endpoint key for every workspace", http.StatusBadRequest, api.CodeBadRequest)
	e.as(e.all, "POST", "/v1/tokens", `{"name": "everywhere", "kind": "endpoint", "workspace": "*"}`).
		wantError(t, "an endpoint key for *", http.StatusBadRequest, api.CodeBadRequest)
	e.as(e.shop, "POST", "/v1/tokens", `{"name": "x", "kind": "root"}`).
		wantError(t, "an unknown kind", http.StatusBadRequest, api.CodeBadRequest)
	if a := e.as(e.all, "POST", "/v1/tokens", `{"name": "k", "kind": "endpoint", "workspace": "other"}`); a.status != 200 {
		t.Errorf("'*' makes a key for another workspace: %d %s", a.status, a.body)
	}

	// Revoked, it stops at once.
	if a := e.as(e.shop, "DELETE", "/v1/tokens/"+key.ID, ""); a.status != http.StatusNoContent {
		t.Fatalf("revoke the key: %d %s", a.status, a.body)
	}
	if got := proxy("shop", key.ID, key.Secret); got != 401 {
		t.Errorf("a revoked key: %d", got)
	}

	// A token stored before there were kinds is an API token.
	legacy := `{"id": "00000000000000aa", "name": "old", "workspace": "shop", "secret_sha256": "` + hashSecret("s") + `"}`
	e.kv.m[tokensKV+"00000000000000aa"] = []byte(legacy)
	if c, err := e.tokens.Lookup(context.Background(), TokenPrefix+"00000000000000aa_s"); err != nil || c.Name != "old" {
		t.Errorf("a record without a kind as bearer: %+v, %v", c, err)
	}
	if got := proxy("shop", "00000000000000aa", "s"); got != 401 {
		t.Errorf("a record without a kind at an endpoint: %d", got)
	}
}

// TestRevokeLeavesATombstone: a revoked token is never accepted again, and
// its record stays (who revoked it, when; no secret's hash), listed with
// ?all=true, so the token ID history recorded still names someone.
func TestRevokeLeavesATombstone(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	gone, err := e.tokens.CreateToken(ctx, api.TokenAPI, "ci", "shop", api.Caller{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if a := e.as(e.shop, "DELETE", "/v1/tokens/"+e.shopKey.ID, ""); a.status != http.StatusNoContent {
		t.Fatalf("revoke a key: %d %s", a.status, a.body)
	}
	if a := e.as(e.shop, "DELETE", "/v1/tokens/"+gone.ID, ""); a.status != http.StatusNoContent {
		t.Fatalf("revoke a token: %d %s", a.status, a.body)
	}
	e.as(gone, "GET", "/v1/apps", "").wantError(t, "a revoked token", http.StatusUnauthorized, api.CodeUnauthorized)
	e.as(e.shop, "DELETE", "/v1/tokens/"+gone.ID, "").wantError(t, "revoke twice", http.StatusNotFound, api.CodeNotFound)
	if a := e.request("GET", "/v1/auth/proxy?workspace=shop", "", nil,
		http.Header{router.HeaderKey: {e.shopKey.ID}, router.HeaderSecret: {e.shopKey.Secret}}); a.status != 401 {
		t.Errorf("a revoked key: %d", a.status)
	}
	raw := string(e.kv.m[tokensKV+gone.ID])
	if raw == "" || strings.Contains(raw, hashSecret(gone.Secret)) {
		t.Errorf("the tombstone: %q, want the record without its secret's hash", raw)
	}

	var live, all []api.TokenInfo
	if a := e.as(e.shop, "GET", "/v1/tokens", ""); json.Unmarshal(a.body, &live) != nil || len(live) != 1 || live[0].ID != e.shop.ID {
		t.Errorf("live tokens: %d %s", a.status, a.body)
	}
	a := e.as(e.shop, "GET", "/v1/tokens?all=true", "")
	if err := json.Unmarshal(a.body, &all); err != nil || len(all) != 3 {
		t.Fatalf("all tokens: %d %s", a.status, a.body)
	}
	for _, tok := range all[1:] {
		if tok.RevokedAt.IsZero() || tok.RevokedBy != "ci" || tok.RevokedByID != e.shop.ID {
			t.Errorf("tombstone %+v, want revoked by ci (%s)", tok, e.shop.ID)
		}
	}
	// Another workspace's tombstones stay out of sight.
	var theirs []api.TokenInfo
	other, _ := e.tokens.CreateToken(ctx, api.TokenAPI, "ci", "other", api.Caller{})
	if a := e.as(other, "GET", "/v1/tokens?all=true", ""); json.Unmarshal(a.body, &theirs) != nil || len(theirs) != 2 {
		t.Errorf("other's tokens: %d %s", a.status, a.body)
	}
}
