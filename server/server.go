// Package server is caravan server: a thin HTTP JSON API over the
// orchestrator. Every endpoint but /v1/health needs a bearer token.
//
//	GET  /v1/health                 liveness, no token
//	GET  /v1/auth/proxy             ?workspace= : Traefik forwardAuth; checks Caravan-Key/Caravan-Secret
//	POST /v1/tokens                 {"name", "workspace"} -> NewToken (secret shown once)
//	GET  /v1/tokens                 -> [TokenInfo]
//	DELETE /v1/tokens/{id}
//	POST /v1/deploy                 DeployBody -> orchestrator.DeployResult
//	POST /v1/plan                   DeployBody -> orchestrator.PlanResult (changes nothing)
//	GET  /v1/apps                   -> [orchestrator.AppSummary]
//	GET  /v1/apps/{app}/history     ?workspace=&environment= -> orchestrator.History
//	GET  /v1/apps/{app}/url         ?function=&workspace=&environment= -> {"url"}
//	GET  /v1/apps/{app}/logs        ?workspace=&environment=&serve= -> text, streamed until the client leaves
//	POST /v1/apps/{app}/rollover    ChangeBody -> orchestrator.DeployResult
//	POST /v1/apps/{app}/rollback    ChangeBody -> orchestrator.DeployResult
//	POST /v1/apps/{app}/promote     ChangeBody -> orchestrator.DeployResult (a canary takes all traffic)
//	POST /v1/apps/{app}/abort       ChangeBody -> orchestrator.DeployResult (a canary is removed)
//	POST /v1/apps/{app}/stop        ChangeBody -> orchestrator.AppRecord
//	POST /v1/apps/{app}/run         RunBody -> orchestrator.RunResult (a scheduled function, now)
//	POST /v1/apps/{app}/functions/{fn}/call  ?workspace=&environment=&serve=&timeout= ; the body is the
//	                                input (JSON, at most 16 KiB; 413 past it) -> orchestrator.CallResult
//
// Errors are {"error": APIError} with the spec's diagnostics intact, so the
// CLI prints the same file:line errors as `caravan validate`.
package server

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/router"
	consul "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	nomad "github.com/hashicorp/nomad/api"
)

// Config wires a Server.
type Config struct {
	// Listen is the address to serve on, e.g. "127.0.0.1:7474".
	Listen     string
	NomadAddr  string
	ConsulAddr string
	Router     router.Config
	// ProxyAddr is Traefik's HTTPS address; deploys wait until every web
	// function answers there. Empty skips that check.
	ProxyAddr string
	// RootCAFile verifies the proxy's certificates (Pebble's root in dev).
	RootCAFile string
	Logger     hclog.Logger
}

// Server is caravan server, startable in-process (the e2e tests do).
type Server struct {
	orch   *orchestrator.Orchestrator
	tokens *Tokens
	log    hclog.Logger
	http   *http.Server
	ln     net.Listener
	// probeSecret lets this server's deploy probes through its own
	// forwardAuth; it lives only in memory.
	probeSecret string
	// stop ends background work (resumed rollouts) on Shutdown.
	ctx    context.Context
	cancel context.CancelFunc
}

// New wires a Server from cfg and opens its listener; Start serves it.
// Unless cfg.Router.AuthURL is set, Traefik's forwardAuth is pointed at this
// server's own /v1/auth/proxy.
func New(cfg Config) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = hclog.New(&hclog.LoggerOptions{Name: "caravan", Level: hclog.Info})
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	if cfg.Router.AuthURL == "" {
		cfg.Router.AuthURL = router.AuthURL(ln.Addr().String())
	}
	nc, err := nomad.NewClient(&nomad.Config{Address: cfg.NomadAddr})
	if err != nil {
		return nil, fmt.Errorf("nomad client: %w", err)
	}
	cc, err := consul.NewClient(&consul.Config{Address: cfg.ConsulAddr})
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	probeSecret, err := randomHex(24)
	if err != nil {
		return nil, err
	}
	var prober orchestrator.Prober
	if cfg.ProxyAddr != "" {
		p := &orchestrator.HTTPSProber{Addr: cfg.ProxyAddr, AuthHeader: http.Header{
			router.HeaderKey: {probeKey}, router.HeaderSecret: {probeSecret}}}
		if cfg.RootCAFile != "" {
			pem, err := os.ReadFile(cfg.RootCAFile)
			if err != nil {
				return nil, fmt.Errorf("reading root CA: %w", err)
			}
			p.Roots = x509.NewCertPool()
			if !p.Roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("no certificates in %s", cfg.RootCAFile)
			}
		}
		prober = p
	}
	s := &Server{
		orch: orchestrator.New(orchestrator.Config{Nomad: nc, Consul: cc, Router: cfg.Router, Prober: prober,
			Store: &orchestrator.ConsulStore{Client: cc}, Logger: log.Named("orchestrator")}),
		tokens:      &Tokens{KV: cc.KV()},
		log:         log,
		ln:          ln,
		probeSecret: probeSecret,
	}
	s.http = &http.Server{Addr: cfg.Listen, Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Tokens is the server's token store.
func (s *Server) Tokens() *Tokens { return s.tokens }

// Start listens and serves in the background, and resumes any rollout a
// previous server left unfinished.
func (s *Server) Start() error {
	s.log.Info("serving", "addr", s.ln.Addr().String())
	go func() {
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "error", err)
		}
	}()
	go s.orch.WatchCanaries(s.ctx, 2*time.Second)
	go func() {
		if err := s.orch.Resume(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Error("resuming interrupted rollouts", "error", err)
		}
	}()
	return nil
}

// Addr is the address Start listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops serving, letting requests in flight finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancel()
	return s.http.Shutdown(ctx)
}

// Handler routes the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	})
	mux.HandleFunc("GET /v1/auth/proxy", s.proxyAuth)
	mux.Handle("POST /v1/tokens", s.authed(s.createToken))
	mux.Handle("GET /v1/tokens", s.authed(s.listTokens))
	mux.Handle("DELETE /v1/tokens/{id}", s.authed(s.revokeToken))
	mux.Handle("POST /v1/deploy", s.authed(s.deploy))
	mux.Handle("POST /v1/plan", s.authed(s.plan))
	mux.Handle("GET /v1/apps", s.authed(s.apps))
	mux.Handle("GET /v1/apps/{app}/history", s.authed(s.history))
	mux.Handle("GET /v1/apps/{app}/url", s.authed(s.url))
	mux.Handle("GET /v1/apps/{app}/logs", s.authed(s.logs))
	mux.Handle("POST /v1/apps/{app}/rollover", s.authed(s.change(s.orch.Rollover)))
	mux.Handle("POST /v1/apps/{app}/rollback", s.authed(s.change(s.orch.Rollback)))
	mux.Handle("POST /v1/apps/{app}/promote", s.authed(s.change(s.orch.Promote)))
	mux.Handle("POST /v1/apps/{app}/abort", s.authed(s.change(s.orch.Abort)))
	mux.Handle("POST /v1/apps/{app}/stop", s.authed(s.stop))
	mux.Handle("POST /v1/apps/{app}/run", s.authed(s.run))
	mux.Handle("POST /v1/apps/{app}/functions/{fn}/call", s.authed(s.call))
	return mux
}

type authedHandler func(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller)

func (s *Server) authed(h authedHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			writeError(w, http.StatusUnauthorized, &APIError{Kind: "unauthorized", Message: "missing bearer token: set CARAVAN_TOKEN"})
			return
		}
		caller, err := s.tokens.Lookup(strings.TrimSpace(secret))
		if err != nil {
			status := http.StatusUnauthorized
			if !errors.Is(err, ErrBadToken) {
				status = http.StatusServiceUnavailable
			}
			s.log.Warn("rejected request", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err)
			writeError(w, status, &APIError{Kind: "unauthorized", Message: err.Error()})
			return
		}
		h(w, r, caller)
	})
}

// proxyAuth answers Traefik's forwardAuth for requires_proxy_auth
// endpoints: 200 when Caravan-Key and Caravan-Secret name a token of the
// endpoint's workspace, else 401. It changes nothing.
func (s *Server) proxyAuth(w http.ResponseWriter, r *http.Request) {
	workspace := r.URL.Query().Get("workspace")
	if r.Header.Get(router.HeaderKey) == probeKey &&
		subtle.ConstantTimeCompare([]byte(r.Header.Get(router.HeaderSecret)), []byte(s.probeSecret)) == 1 {
		w.WriteHeader(http.StatusOK)
		return
	}
	caller, err := s.tokens.LookupPair(r.Context(), r.Header.Get(router.HeaderKey), r.Header.Get(router.HeaderSecret))
	switch {
	case err != nil && !errors.Is(err, ErrBadToken):
		s.log.Error("proxy auth", "error", err)
		writeError(w, http.StatusServiceUnavailable, &APIError{Kind: "internal", Message: "cannot check credentials now"})
	case err != nil || workspace == "" || (caller.Workspace != "*" && caller.Workspace != workspace):
		w.Header().Set("WWW-Authenticate", `Caravan realm="`+workspace+`"`)
		writeError(w, http.StatusUnauthorized, &APIError{Kind: "unauthorized",
			Message: "this endpoint needs a token of workspace " + workspace + " in the Caravan-Key and Caravan-Secret headers (caravan token create)"})
	default:
		w.WriteHeader(http.StatusOK)
	}
}

// probeKey is the Caravan-Key of a server's own deploy probes.
const probeKey = "caravan-probe"

// TokenBody is the body of POST /v1/tokens.
type TokenBody struct {
	Name string `json:"name"`
	// Workspace of the new token; default the caller's. Only a token for
	// every workspace ("*") may create tokens for another.
	Workspace string `json:"workspace,omitempty"`
}

var errNoToken = errors.New("no such token in your workspace")

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	var body TokenBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil || body.Name == "" {
		writeError(w, http.StatusBadRequest, &APIError{Kind: "bad_request", Message: "a token needs a name: {\"name\": \"ci\"}"})
		return
	}
	ws := body.Workspace
	if ws == "" {
		ws = caller.Workspace
	}
	if caller.Workspace != "*" && ws != caller.Workspace {
		s.fail(w, &orchestrator.ForbiddenError{Token: caller.Name, Workspace: ws})
		return
	}
	nt, err := s.tokens.CreateToken(r.Context(), body.Name, ws, caller.Name)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.log.Info("token created", "id", nt.ID, "name", nt.Name, "workspace", ws, "by", caller.Name)
	writeJSON(w, http.StatusOK, nt)
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	list, err := s.tokens.List(r.Context(), caller.Workspace)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	if err := s.tokens.Revoke(r.Context(), r.PathValue("id"), caller.Workspace); err != nil {
		s.fail(w, err)
		return
	}
	s.log.Info("token revoked", "id", r.PathValue("id"), "by", caller.Name)
	w.WriteHeader(http.StatusNoContent)
}

// DeployBody is the body of POST /v1/deploy.
type DeployBody struct {
	Filename string `json:"filename"`
	Spec     string `json:"spec"`
	// Timeout is a Go duration such as "5m".
	Timeout string `json:"timeout,omitempty"`
	// Strategy overrides the spec's: "rolling" or "recreate".
	Strategy  string `json:"strategy,omitempty"`
	Tag       string `json:"tag,omitempty"`
	GitCommit string `json:"git_commit,omitempty"`
	GitDirty  bool   `json:"git_dirty,omitempty"`
	// Serve deploys the `caravan serve` copy of the app.
	Serve bool `json:"serve,omitempty"`
}

// ChangeBody is the body of rollover, rollback and stop.
type ChangeBody struct {
	Workspace   string `json:"workspace,omitempty"`
	Environment string `json:"environment,omitempty"`
	// Version to roll back to (0: the one live before the current one).
	Version  int    `json:"version,omitempty"`
	Strategy string `json:"strategy,omitempty"`
	Timeout  string `json:"timeout,omitempty"`
	// Serve names the app's `caravan serve` copy.
	Serve bool `json:"serve,omitempty"`
}

// maxSpec bounds a spec upload.
const maxSpec = 4 << 20

func readDeploy(w http.ResponseWriter, r *http.Request) (orchestrator.DeployRequest, bool) {
	var body DeployBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSpec)).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, &APIError{Kind: "bad_request", Message: "reading request: " + err.Error()})
		return orchestrator.DeployRequest{}, false
	}
	timeout, ok := parseTimeout(w, body.Timeout)
	return orchestrator.DeployRequest{Spec: []byte(body.Spec), Filename: body.Filename, Timeout: timeout,
		Strategy: body.Strategy, Tag: body.Tag, GitCommit: body.GitCommit, GitDirty: body.GitDirty, Serve: body.Serve}, ok
}

func (s *Server) plan(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	req, ok := readDeploy(w, r)
	if !ok {
		return
	}
	res, err := s.orch.Plan(r.Context(), caller, req)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	req, ok := readDeploy(w, r)
	if !ok {
		return
	}
	res, err := s.orch.Deploy(r.Context(), caller, req)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func parseTimeout(w http.ResponseWriter, s string) (time.Duration, bool) {
	if s == "" {
		return 0, true
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		writeError(w, http.StatusBadRequest, &APIError{Kind: "bad_request", Message: "timeout: " + err.Error()})
		return 0, false
	}
	return d, true
}

// queryRef reads an app reference from the path and query.
func queryRef(r *http.Request) orchestrator.AppRef {
	q := r.URL.Query()
	return orchestrator.AppRef{App: r.PathValue("app"), Workspace: q.Get("workspace"), Environment: q.Get("environment"),
		Serve: q.Get("serve") == "true"}
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fw := &flushWriter{w: w}
	if err := s.orch.Logs(r.Context(), caller, queryRef(r), fw); err != nil && !fw.wrote {
		s.fail(w, err)
	}
}

// flushWriter sends every write to the client at once.
type flushWriter struct {
	w     http.ResponseWriter
	wrote bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	f.wrote = true
	return f.w.Write(p)
}

func (f *flushWriter) Flush() {
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
}

func (s *Server) history(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	h, err := s.orch.History(r.Context(), caller, queryRef(r))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) url(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	u, err := s.orch.URL(r.Context(), caller, queryRef(r), r.URL.Query().Get("function"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"url": u})
}

func readChange(w http.ResponseWriter, r *http.Request) (orchestrator.ChangeRequest, bool) {
	var body ChangeBody
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
			writeError(w, http.StatusBadRequest, &APIError{Kind: "bad_request", Message: "reading request: " + err.Error()})
			return orchestrator.ChangeRequest{}, false
		}
	}
	timeout, ok := parseTimeout(w, body.Timeout)
	return orchestrator.ChangeRequest{
		AppRef: orchestrator.AppRef{App: r.PathValue("app"), Workspace: body.Workspace, Environment: body.Environment,
			Serve: body.Serve},
		Version: body.Version, Strategy: body.Strategy, Timeout: timeout,
	}, ok
}

func (s *Server) change(op func(context.Context, orchestrator.Caller, orchestrator.ChangeRequest) (*orchestrator.DeployResult, error)) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
		req, ok := readChange(w, r)
		if !ok {
			return
		}
		res, err := op(r.Context(), caller, req)
		if err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

// RunBody is the body of POST /v1/apps/{app}/run.
type RunBody struct {
	ChangeBody
	Function string `json:"function"`
}

func (s *Server) run(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	var body RunBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil || body.Function == "" {
		writeError(w, http.StatusBadRequest, &APIError{Kind: "bad_request", Message: "name the function: {\"function\": \"nightly\"}"})
		return
	}
	timeout, ok := parseTimeout(w, body.Timeout)
	if !ok {
		return
	}
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	res, err := s.orch.Run(ctx, caller, orchestrator.AppRef{App: r.PathValue("app"), Workspace: body.Workspace,
		Environment: body.Environment, Serve: body.Serve}, body.Function)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	req, ok := readChange(w, r)
	if !ok {
		return
	}
	rec, err := s.orch.Stop(r.Context(), caller, req.AppRef)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) apps(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	apps, err := s.orch.Apps(r.Context(), caller)
	if err != nil {
		s.fail(w, err)
		return
	}
	if apps == nil {
		apps = []orchestrator.AppSummary{}
	}
	writeJSON(w, http.StatusOK, apps)
}

// APIError is the error envelope of every failed request.
type APIError struct {
	// Kind is one of: unauthorized, forbidden, bad_request, invalid_spec,
	// ownership, host_taken, not_found, rollout_failed, input_too_large,
	// internal.
	Kind        string                    `json:"kind"`
	Message     string                    `json:"message"`
	Diagnostics []orchestrator.Diagnostic `json:"diagnostics,omitempty"`
	Function    string                    `json:"function,omitempty"`
	AllocID     string                    `json:"alloc_id,omitempty"`
	Version     int                       `json:"version,omitempty"`
	// Status is the HTTP status, filled in by the client.
	Status int `json:"-"`
}

func (e *APIError) Error() string { return e.Message }

func (s *Server) fail(w http.ResponseWriter, err error) {
	var (
		diags *orchestrator.DiagnosticsError
		own   *orchestrator.OwnershipError
		forb  *orchestrator.ForbiddenError
		nf    *orchestrator.NotFoundError
		bad   *orchestrator.BadRequestError
		roll  *orchestrator.RolloutError
		taken *orchestrator.HostTakenError
		large *orchestrator.InputTooLargeError
		cp    *orchestrator.CanaryPendingError
	)
	switch {
	case errors.As(err, &cp):
		writeError(w, http.StatusConflict, &APIError{Kind: "canary_pending", Message: err.Error()})
	case errors.As(err, &large):
		writeError(w, http.StatusRequestEntityTooLarge, &APIError{Kind: "input_too_large", Message: err.Error()})
	case errors.As(err, &diags):
		writeError(w, http.StatusBadRequest, &APIError{Kind: "invalid_spec", Message: err.Error(), Diagnostics: orchestrator.ToWire(diags.Diags)})
	case errors.As(err, &forb):
		writeError(w, http.StatusForbidden, &APIError{Kind: "forbidden", Message: err.Error()})
	case errors.Is(err, errNoToken):
		writeError(w, http.StatusNotFound, &APIError{Kind: "not_found", Message: err.Error()})
	case errors.As(err, &taken):
		writeError(w, http.StatusConflict, &APIError{Kind: "host_taken", Message: err.Error()})
	case errors.As(err, &own):
		writeError(w, http.StatusConflict, &APIError{Kind: "ownership", Message: err.Error()})
	case errors.As(err, &bad):
		writeError(w, http.StatusBadRequest, &APIError{Kind: "bad_request", Message: err.Error()})
	case errors.As(err, &nf):
		writeError(w, http.StatusNotFound, &APIError{Kind: "not_found", Message: err.Error()})
	case errors.As(err, &roll):
		writeError(w, http.StatusUnprocessableEntity, &APIError{Kind: "rollout_failed", Message: err.Error(),
			Function: roll.Function, AllocID: roll.AllocID, Version: roll.Version})
	default:
		s.log.Error("request failed", "error", err)
		writeError(w, http.StatusInternalServerError, &APIError{Kind: "internal", Message: err.Error()})
	}
}

func writeError(w http.ResponseWriter, status int, e *APIError) {
	writeJSON(w, status, map[string]*APIError{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
