package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/caravanhq/caravan/agent"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/queue"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/go-hclog"
)

// Orchestrator is what the API calls: *orchestrator.Orchestrator in
// production, a fake in the handler's tests.
type Orchestrator interface {
	Deploy(ctx context.Context, caller api.Caller, req orchestrator.DeployRequest) (*api.DeployResult, error)
	Plan(ctx context.Context, caller api.Caller, req orchestrator.DeployRequest) (*api.PlanResult, error)
	Apps(ctx context.Context, caller api.Caller) ([]api.AppSummary, error)
	History(ctx context.Context, caller api.Caller, ref api.AppRef) (*api.History, error)
	URL(ctx context.Context, caller api.Caller, ref api.AppRef, function string) (string, error)
	Logs(ctx context.Context, caller api.Caller, ref api.AppRef, w io.Writer) error
	Rollover(ctx context.Context, caller api.Caller, req orchestrator.ChangeRequest) (*api.DeployResult, error)
	Rollback(ctx context.Context, caller api.Caller, req orchestrator.ChangeRequest) (*api.DeployResult, error)
	Promote(ctx context.Context, caller api.Caller, req orchestrator.ChangeRequest) (*api.DeployResult, error)
	Abort(ctx context.Context, caller api.Caller, req orchestrator.ChangeRequest) (*api.DeployResult, error)
	Stop(ctx context.Context, caller api.Caller, ref api.AppRef) (*api.AppRecord, error)
	Run(ctx context.Context, caller api.Caller, ref api.AppRef, function string) (*api.RunResult, error)
	Call(ctx context.Context, caller api.Caller, req orchestrator.CallRequest) (*api.CallResult, error)
	Spawn(ctx context.Context, caller api.Caller, req orchestrator.CallRequest) (*api.CallStatus, error)
	CallGet(ctx context.Context, caller api.Caller, id string, wait time.Duration) (*api.CallStatus, error)
	CallCancel(ctx context.Context, caller api.Caller, id string) (*api.CallStatus, error)
	Map(ctx context.Context, caller api.Caller, req orchestrator.MapRequest, each func(api.MapItem) error) error
	Domains(ctx context.Context, caller api.Caller) ([]api.DomainBinding, error)
	VerifyDomain(ctx context.Context, caller api.Caller, workspace, domain string) (*api.DomainBinding, error)
	AssignDomain(ctx context.Context, caller api.Caller, workspace, domain string) (*api.DomainBinding, error)
	BundleOrchestrator
}

var _ Orchestrator = (*orchestrator.Orchestrator)(nil)

// Deps are what the API handler needs.
type Deps struct {
	Orchestrator Orchestrator
	Tokens       TokenStore
	// Logger defaults to a null logger.
	Logger hclog.Logger
	// ProbeSecret is the cluster's key of deploy probes' credentials
	// (Caravan-Key caravan-probe, and as secret an HMAC of the probed
	// hostname and the time: ProbeHeader); empty lets no probe through.
	ProbeSecret string
	// Limits bound concurrent requests and give the timeouts long
	// requests extend (zero fields: DefaultLimits). The http.Server that
	// serves the handler takes the timeouts with Limits.Apply.
	Limits Limits
	// BundleLimits are the orchestrator's bounds of a bundle; an upload
	// body is read no further than such a bundle can be.
	BundleLimits bundle.Limits
	// Agents authorizes the agent endpoints (package agent), which serve
	// AgentBinary and drain through Drainer; nil serves none of them.
	Agents      AgentOrchestrator
	AgentBinary string
	Drainer     Drainer
	// Loads reads the caravan proxies' load for the app list's autoscaled
	// functions; nil lists them without.
	Loads LoadReader
	// NATSWorkers mints warm functions' workers' NATS credentials (GET
	// agent.NATSPath); nil serves none.
	NATSWorkers WorkerCredentials
}

// Request body bounds. A body over its bound answers 413 input_too_large,
// and is not read past it.
const (
	// maxDeployBody bounds a deploy or plan body: a spec of at most
	// spec.MaxSize bytes, room for JSON's escapes, and its options. The
	// spec itself is then held to spec.MaxSize.
	maxDeployBody = 2*spec.MaxSize + maxChangeBody
	// maxChangeBody bounds the small JSON bodies: tokens, rollover,
	// rollback, promote, abort, stop and run.
	maxChangeBody = 64 << 10
)

// handler serves the API over injected dependencies.
type handler struct {
	orch        Orchestrator
	tokens      TokenStore
	log         hclog.Logger
	probeSecret string
	limits      Limits
	// bundleLimits bound uploads (see Deps.BundleLimits).
	bundleLimits bundle.Limits
	agents       AgentOrchestrator
	agentBinary  string
	drainer      Drainer
	loads        LoadReader
	natsWorkers  WorkerCredentials
	mux          *http.ServeMux
	// serve is mux, bounded to limits.MaxConcurrent requests at once.
	serve http.Handler
}

// NewHandler returns the API's HTTP handler.
func NewHandler(d Deps) http.Handler {
	h := &handler{orch: d.Orchestrator, tokens: d.Tokens, log: d.Logger, probeSecret: d.ProbeSecret,
		limits: d.Limits.withDefaults(), bundleLimits: d.BundleLimits, mux: http.NewServeMux(),
		agents: d.Agents, agentBinary: d.AgentBinary, drainer: d.Drainer, loads: d.Loads, natsWorkers: d.NATSWorkers}
	if h.log == nil {
		h.log = hclog.NewNullLogger()
	}
	mux := h.mux
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	})
	mux.HandleFunc("GET /v1/auth/proxy", h.proxyAuth)
	mux.Handle("POST /v1/tokens", h.authed(h.createToken))
	mux.Handle("GET /v1/tokens", h.authed(h.listTokens))
	mux.Handle("DELETE /v1/tokens/{id}", h.authed(h.revokeToken))
	mux.Handle("GET /v1/domains", h.authed(h.domains))
	mux.Handle("POST /v1/domains", h.authed(h.domain(h.orch.AssignDomain)))
	mux.Handle("POST /v1/domains/verify", h.authed(h.domain(h.orch.VerifyDomain)))
	mux.Handle("POST /v1/bundles/missing", h.authed(h.missingBundles))
	mux.Handle("PUT /v1/bundles/{id}", h.authed(h.putBundle))
	mux.HandleFunc("GET /v1/bundles/{file}", h.getBundle)
	if h.agents != nil {
		mux.HandleFunc("GET "+agent.Path, h.getAgent)
		if h.drainer != nil {
			mux.HandleFunc("POST "+agent.DrainPath, h.drainAgent)
		}
		if h.natsWorkers != nil {
			mux.HandleFunc("GET "+agent.NATSPath, h.natsAgent)
		}
	}
	mux.Handle("POST /v1/deploy", h.authed(h.deploy))
	mux.Handle("POST /v1/plan", h.authed(h.plan))
	mux.Handle("GET /v1/apps", h.authed(h.apps))
	mux.Handle("GET /v1/apps/{app}/history", h.authed(h.history))
	mux.Handle("GET /v1/apps/{app}/url", h.authed(h.url))
	mux.Handle("GET /v1/apps/{app}/logs", h.authed(h.logs))
	mux.Handle("POST /v1/apps/{app}/rollover", h.authed(h.change(h.orch.Rollover)))
	mux.Handle("POST /v1/apps/{app}/rollback", h.authed(h.change(h.orch.Rollback)))
	mux.Handle("POST /v1/apps/{app}/promote", h.authed(h.change(h.orch.Promote)))
	mux.Handle("POST /v1/apps/{app}/abort", h.authed(h.change(h.orch.Abort)))
	mux.Handle("POST /v1/apps/{app}/stop", h.authed(h.stop))
	mux.Handle("POST /v1/apps/{app}/run", h.authed(h.run))
	mux.Handle("POST /v1/apps/{app}/functions/{fn}/call", h.authed(h.call))
	mux.Handle("POST /v1/apps/{app}/functions/{fn}/map", h.authed(h.mapCalls))
	mux.Handle("GET /v1/calls/{id}", h.authed(h.callGet))
	mux.Handle("POST /v1/calls/{id}/cancel", h.authed(h.callCancel))
	h.serve = h.bounded(h.limits.MaxConcurrent, mux)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.serve.ServeHTTP(w, r) }

type authedHandler func(w http.ResponseWriter, r *http.Request, caller api.Caller)

func (h *handler) authed(next authedHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			h.fail(w, api.Errorf(api.CodeUnauthorized, "missing bearer token: set CARAVAN_TOKEN"))
			return
		}
		caller, err := h.tokens.Lookup(r.Context(), strings.TrimSpace(secret))
		if err != nil {
			h.log.Warn("rejected request", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err)
			h.fail(w, err)
			return
		}
		next(w, r, caller)
	})
}

// proxyAuth answers Traefik's forwardAuth for requires_proxy_auth
// endpoints: 200 when Caravan-Key and Caravan-Secret name an endpoint key
// of the endpoint's workspace, else 401 (an API token never opens an
// endpoint); 503 when the token store cannot say. For a route's probe
// router (?probe=true) only the deploy probe's credential for the host
// passes. It changes nothing.
func (h *handler) proxyAuth(w http.ResponseWriter, r *http.Request) {
	workspace := r.URL.Query().Get("workspace")
	if validProbe(h.probeSecret, r, time.Now()) {
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.URL.Query().Get("probe") == "true" {
		h.fail(w, api.Errorf(api.CodeUnauthorized, "Caravan-Key %s is caravan's deploy probe's; send an endpoint key of your own", probeKey))
		return
	}
	caller, err := h.tokens.LookupKey(r.Context(), r.Header.Get(router.HeaderKey), r.Header.Get(router.HeaderSecret))
	switch {
	case err != nil && !isBadToken(err):
		h.log.Error("proxy auth", "error", err)
		h.fail(w, api.Errorf(api.CodeUnavailable, "cannot check credentials now"))
	case err != nil || workspace == "" || caller.Workspace != workspace:
		w.Header().Set("WWW-Authenticate", `Caravan realm="`+workspace+`"`)
		h.fail(w, api.Errorf(api.CodeUnauthorized,
			"this endpoint needs an endpoint key of workspace %s in the Caravan-Key and Caravan-Secret headers (caravan key create)", workspace))
	default:
		w.WriteHeader(http.StatusOK)
	}
}

// decode reads a JSON body of at most limit bytes into v. An empty body
// leaves v as it is when empty is true. Errors are typed: input_too_large
// past the limit, bad_request for anything unreadable, for a field v does
// not have (a misspelt option must not be ignored) and for anything but
// white space after the JSON value.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any, empty bool) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, err = dec.Token(); err == io.EOF {
			return nil
		} else if err == nil || !errors.As(err, new(*http.MaxBytesError)) {
			return api.Errorf(api.CodeBadRequest, "reading request: unexpected data after the JSON body: send one JSON object")
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case empty && errors.Is(err, io.EOF):
		return nil
	case errors.As(err, &tooLarge):
		return api.Errorf(api.CodeInputTooLarge, "the request body is over the %d KiB this endpoint reads", limit>>10)
	}
	return api.Errorf(api.CodeBadRequest, "reading request: %s", err)
}

func (h *handler) createToken(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	var body api.TokenBody
	if err := decode(w, r, maxChangeBody, &body, false); err != nil {
		h.fail(w, err)
		return
	}
	if body.Name == "" {
		h.fail(w, api.Errorf(api.CodeBadRequest, "a token needs a name: {\"name\": \"ci\"}"))
		return
	}
	ws := body.Workspace
	if ws == "" {
		ws = caller.Workspace
	}
	if caller.Workspace != "*" && ws != caller.Workspace {
		h.fail(w, &orchestrator.ForbiddenError{Token: caller.Name, Workspace: ws})
		return
	}
	kind := body.Kind
	if kind == "" {
		kind = api.TokenAPI
	}
	nt, err := h.tokens.CreateToken(r.Context(), kind, body.Name, ws, caller)
	if err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info("token created", "id", nt.ID, "kind", kind, "name", nt.Name, "workspace", ws, "by", caller.Name, "by_id", caller.TokenID)
	writeJSON(w, http.StatusOK, nt)
}

func (h *handler) listTokens(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	list, err := h.tokens.List(r.Context(), caller.Workspace, r.URL.Query().Get("all") == "true")
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *handler) revokeToken(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	if err := h.tokens.Revoke(r.Context(), r.PathValue("id"), caller.Workspace, caller); err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info("token revoked", "id", r.PathValue("id"), "by", caller.Name, "by_id", caller.TokenID)
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) domains(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	list, err := h.orch.Domains(r.Context(), caller)
	h.answer(w, list, err)
}

// domain serves a request to verify or assign a custom domain.
func (h *handler) domain(op func(context.Context, api.Caller, string, string) (*api.DomainBinding, error)) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, caller api.Caller) {
		var body api.DomainBody
		if err := decode(w, r, maxChangeBody, &body, false); err != nil {
			h.fail(w, err)
			return
		}
		b, err := op(r.Context(), caller, body.Workspace, body.Domain)
		h.answer(w, b, err)
	}
}

func (h *handler) readDeploy(w http.ResponseWriter, r *http.Request) (orchestrator.DeployRequest, bool) {
	var body api.DeployBody
	if err := decode(w, r, maxDeployBody, &body, false); err != nil {
		if api.ErrorCodeOf(err) == api.CodeInputTooLarge {
			err = api.Errorf(api.CodeInputTooLarge, "the request body is over the %d KiB this endpoint reads: a spec is at most %d KiB",
				maxDeployBody>>10, spec.MaxSize>>10)
		}
		h.fail(w, err)
		return orchestrator.DeployRequest{}, false
	}
	if len(body.Spec) > spec.MaxSize {
		h.fail(w, &orchestrator.SpecTooLargeError{Size: len(body.Spec), Limit: spec.MaxSize})
		return orchestrator.DeployRequest{}, false
	}
	timeout, err := parseTimeout(body.Timeout)
	if err != nil {
		h.fail(w, err)
		return orchestrator.DeployRequest{}, false
	}
	return orchestrator.DeployRequest{Spec: []byte(body.Spec), Filename: body.Filename, Timeout: timeout,
		Strategy: body.Strategy, Tag: body.Tag, GitCommit: body.GitCommit, GitDirty: body.GitDirty, Serve: body.Serve,
		Bundles: body.Bundles}, true
}

func (h *handler) plan(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	req, ok := h.readDeploy(w, r)
	if !ok {
		return
	}
	h.holdFor(w, req.Timeout, defaultRolloutTimeout)
	res, err := h.orch.Plan(r.Context(), caller, req)
	h.answer(w, res, err)
}

func (h *handler) deploy(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	req, ok := h.readDeploy(w, r)
	if !ok {
		return
	}
	h.holdFor(w, req.Timeout, defaultRolloutTimeout)
	res, err := h.orch.Deploy(r.Context(), caller, req)
	h.answer(w, res, err)
}

func parseTimeout(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, api.Errorf(api.CodeBadRequest, "timeout: %s", err)
	}
	return d, nil
}

// queryRef reads an app reference from the path and query.
func queryRef(r *http.Request) api.AppRef {
	q := r.URL.Query()
	return api.AppRef{App: r.PathValue("app"), Workspace: q.Get("workspace"), Environment: q.Get("environment"),
		Serve: q.Get("serve") == "true"}
}

// logs streams until the client leaves: the request has no body, so its
// read deadline is lifted (when it passed, net/http would end the
// stream), and each write extends the write deadline.
func (h *handler) logs(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Time{}); err != nil {
		h.log.Debug("cannot lift a stream's read deadline", "error", err)
	}
	sw := &streamWriter{rc: rc, w: w, timeout: h.limits.WriteTimeout}
	if err := h.orch.Logs(r.Context(), caller, queryRef(r), sw); err != nil && !sw.wrote {
		h.fail(w, err)
	}
}

func (h *handler) history(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	res, err := h.orch.History(r.Context(), caller, queryRef(r))
	h.answer(w, res, err)
}

func (h *handler) url(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	u, err := h.orch.URL(r.Context(), caller, queryRef(r), r.URL.Query().Get("function"))
	h.answer(w, map[string]string{"url": u}, err)
}

func (h *handler) readChange(w http.ResponseWriter, r *http.Request) (orchestrator.ChangeRequest, bool) {
	var body api.ChangeBody
	// An empty body asks for the defaults.
	if err := decode(w, r, maxChangeBody, &body, true); err != nil {
		h.fail(w, err)
		return orchestrator.ChangeRequest{}, false
	}
	timeout, err := parseTimeout(body.Timeout)
	if err != nil {
		h.fail(w, err)
		return orchestrator.ChangeRequest{}, false
	}
	return orchestrator.ChangeRequest{
		AppRef: api.AppRef{App: r.PathValue("app"), Workspace: body.Workspace, Environment: body.Environment,
			Serve: body.Serve},
		Version: body.Version, Strategy: body.Strategy, Timeout: timeout,
	}, true
}

func (h *handler) change(op func(context.Context, api.Caller, orchestrator.ChangeRequest) (*api.DeployResult, error)) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, caller api.Caller) {
		req, ok := h.readChange(w, r)
		if !ok {
			return
		}
		h.holdFor(w, req.Timeout, defaultRolloutTimeout)
		res, err := op(r.Context(), caller, req)
		h.answer(w, res, err)
	}
}

// defaultRunTimeout bounds a run whose body names no timeout.
const defaultRunTimeout = 10 * time.Minute

// defaultRolloutTimeout is the orchestrator's wait for a version to be
// healthy when a request names no timeout.
const defaultRolloutTimeout = 5 * time.Minute

func (h *handler) run(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	var body api.RunBody
	if err := decode(w, r, maxChangeBody, &body, false); err != nil {
		h.fail(w, err)
		return
	}
	if body.Function == "" {
		h.fail(w, api.Errorf(api.CodeBadRequest, "name the function: {\"function\": \"nightly\"}"))
		return
	}
	timeout, err := parseTimeout(body.Timeout)
	if err != nil {
		h.fail(w, err)
		return
	}
	if timeout <= 0 {
		timeout = defaultRunTimeout
	}
	h.holdFor(w, timeout, timeout)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	res, err := h.orch.Run(ctx, caller, api.AppRef{App: r.PathValue("app"), Workspace: body.Workspace,
		Environment: body.Environment, Serve: body.Serve}, body.Function)
	h.answer(w, res, err)
}

func (h *handler) stop(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	req, ok := h.readChange(w, r)
	if !ok {
		return
	}
	h.holdFor(w, req.Timeout, defaultRolloutTimeout)
	rec, err := h.orch.Stop(r.Context(), caller, req.AppRef)
	h.answer(w, rec, err)
}

func (h *handler) apps(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	apps, err := h.orch.Apps(r.Context(), caller)
	if err == nil && h.loads != nil && autoscaled(apps) {
		reports, known, lerr := readReports(r.Context(), h.loads)
		if lerr != nil {
			// The list goes out without the load (Load stays nil).
			h.log.Warn("reading the proxies' load for the app list", "error", lerr)
		}
		withLoad(apps, reports, known)
	}
	if apps == nil {
		// [] rather than null: a client ranges over it.
		apps = []api.AppSummary{}
	}
	h.answer(w, apps, err)
}

// autoscaled reports whether any function of apps is.
func autoscaled(apps []api.AppSummary) bool {
	for _, a := range apps {
		for _, f := range a.Functions {
			if f.Autoscaled {
				return true
			}
		}
	}
	return false
}

// maxCallBody bounds what the server reads of a call's input: the
// queue's limit (an isolated function's, 16 KiB, is the orchestrator's to
// check).
const maxCallBody = queue.MaxInput

// maxMapBody bounds a map's body, its inputs as JSON lines.
const maxMapBody = 64 << 20

// call runs a callable function: POST /v1/apps/{app}/functions/{fn}/call,
// the body being the input; with ?spawn=true it answers the queued call's
// ID at once.
func (h *handler) call(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	timeout, err := parseTimeout(r.URL.Query().Get("timeout"))
	if err != nil {
		h.fail(w, err)
		return
	}
	input, ok := h.readInput(w, r, maxCallBody)
	if !ok {
		return
	}
	req := orchestrator.CallRequest{AppRef: queryRef(r), Function: r.PathValue("fn"), Input: input, Timeout: timeout}
	if r.URL.Query().Get("spawn") == "true" {
		st, err := h.orch.Spawn(r.Context(), caller, req)
		h.answer(w, st, err)
		return
	}
	h.holdFor(w, timeout, orchestrator.DefaultCallTimeout)
	res, err := h.orch.Call(r.Context(), caller, req)
	h.answer(w, res, err)
}

// readInput reads a body of at most limit bytes, else answers 413.
func (h *handler) readInput(w http.ResponseWriter, r *http.Request, limit int) ([]byte, bool) {
	input, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		h.fail(w, api.Errorf(api.CodeBadRequest, "reading the input: %s", err))
		return nil, false
	}
	if len(input) > limit {
		size := len(input)
		if r.ContentLength > int64(size) {
			size = int(r.ContentLength)
		}
		if limit == maxMapBody {
			h.fail(w, api.Errorf(api.CodeInputTooLarge, "the map's inputs are %d bytes or more, over the %d MiB a map reads: split them", size, limit>>20))
		} else {
			h.fail(w, &orchestrator.InputTooLargeError{Size: size, Limit: limit, Warm: true})
		}
		return nil, false
	}
	return input, true
}

// mapCalls runs a callable function once per input: POST
// /v1/apps/{app}/functions/{fn}/map, the body JSON lines (one input a
// line), the answer api.MapItem lines in input order, streamed.
func (h *handler) mapCalls(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	timeout, err := parseTimeout(r.URL.Query().Get("timeout"))
	if err != nil {
		h.fail(w, err)
		return
	}
	body, ok := h.readInput(w, r, maxMapBody)
	if !ok {
		return
	}
	var inputs [][]byte
	for line := range bytes.Lines(body) {
		if line = bytes.TrimSpace(line); len(line) > 0 {
			inputs = append(inputs, line)
		}
	}
	h.holdFor(w, timeout, orchestrator.DefaultCallTimeout)
	rc := http.NewResponseController(w)
	sw := &streamWriter{rc: rc, w: w, timeout: h.limits.WriteTimeout}
	enc := json.NewEncoder(sw)
	err = h.orch.Map(r.Context(), caller, orchestrator.MapRequest{AppRef: queryRef(r), Function: r.PathValue("fn"), Inputs: inputs, Timeout: timeout},
		func(item api.MapItem) error {
			if !sw.wrote {
				w.Header().Set("Content-Type", "application/x-ndjson")
			}
			if err := enc.Encode(item); err != nil {
				return err
			}
			sw.Flush()
			return nil
		})
	switch {
	case err != nil && !sw.wrote:
		h.fail(w, err)
	case err != nil:
		// Mid-stream: the last line says why the rest is missing.
		_ = enc.Encode(map[string]*api.APIError{"map_error": toAPIError(err)})
	}
}

// callGet reads a warm call: GET /v1/calls/{id}?wait=DURATION.
func (h *handler) callGet(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	wait, err := parseTimeout(r.URL.Query().Get("wait"))
	if err != nil {
		h.fail(w, err)
		return
	}
	if wait > 0 {
		h.holdFor(w, wait, wait)
	}
	st, err := h.orch.CallGet(r.Context(), caller, r.PathValue("id"), wait)
	h.answer(w, st, err)
}

// callCancel cancels a warm call: POST /v1/calls/{id}/cancel.
func (h *handler) callCancel(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	st, err := h.orch.CallCancel(r.Context(), caller, r.PathValue("id"))
	if err == nil {
		h.log.Info("call cancelled", "call", st.ID, "by", caller.Name, "by_id", caller.TokenID)
	}
	h.answer(w, st, err)
}

// answer writes v, or err when there is one.
func (h *handler) answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// fail answers err with the status of its code (api's table), the code as
// the error's kind, and what the client needs to print it: an invalid
// spec's diagnostics, a failed rollout's function, allocation and version.
// An error without a code is internal: 500, and logged, since it is a bug
// or an outage nobody named.
func (h *handler) fail(w http.ResponseWriter, err error) {
	e := toAPIError(err)
	if e.Kind == api.CodeInternal {
		h.log.Error("request failed", "error", err)
	}
	writeJSON(w, e.Kind.Status(), map[string]*api.APIError{"error": e})
}

// Bounds on an error body, whatever the error: spec.Parse already caps
// its diagnostics, these hold for any error that reaches the wire.
const (
	maxErrorMessage = 4 << 10
	maxErrorDiags   = spec.MaxDiagnostics + 1
	maxDiagDetail   = 1 << 10
)

// toAPIError is err as the wire carries it, at most a few dozen KiB.
func toAPIError(err error) *api.APIError {
	e := toWireError(err)
	e.Message = cutText(e.Message, maxErrorMessage)
	if len(e.Diagnostics) > maxErrorDiags {
		e.Diagnostics = e.Diagnostics[:maxErrorDiags]
	}
	for i, d := range e.Diagnostics {
		d.Summary, d.Detail = cutText(d.Summary, maxDiagDetail), cutText(d.Detail, maxDiagDetail)
		e.Diagnostics[i] = d
	}
	return e
}

// cutText shortens s to at most n bytes, marking the cut.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-len("…")], "") + "…"
}

func toWireError(err error) *api.APIError {
	e := &api.APIError{Kind: api.ErrorCodeOf(err), Message: err.Error()}
	if !e.Kind.Known() {
		e.Kind = api.CodeInternal
	}
	var (
		apiErr *api.APIError
		diags  *orchestrator.DiagnosticsError
		roll   *orchestrator.RolloutError
	)
	if errors.As(err, &apiErr) {
		e.Diagnostics, e.Function, e.AllocID, e.Version = apiErr.Diagnostics, apiErr.Function, apiErr.AllocID, apiErr.Version
	}
	if errors.As(err, &diags) {
		e.Diagnostics = orchestrator.ToWire(diags.Diags)
	}
	if errors.As(err, &roll) {
		e.Function, e.AllocID, e.Version = roll.Function, roll.AllocID, roll.Version
	}
	return e
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
