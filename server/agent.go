package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/queue"
	nomad "github.com/hashicorp/nomad/api"
)

// The agent endpoints answer tasks, not users: no token, the URL's
// signature and the asking allocation instead (orchestrator.OpenAgent).

// AgentOrchestrator authorizes the agent endpoints.
type AgentOrchestrator interface {
	OpenAgent(ctx context.Context, job, alloc, sig string) (*nomad.Allocation, error)
}

var _ AgentOrchestrator = (*orchestrator.Orchestrator)(nil)

// Drainer drains an allocation's containers at every proxy (ProxyDrainer).
type Drainer interface {
	DrainAlloc(ctx context.Context, alloc string, wait time.Duration) (DrainAnswer, error)
}

// DrainAnswer is the answer of POST /v1/agent/drain.
type DrainAnswer = agent.DrainAnswer

// MaxAgentDrain bounds the wait of one drain request.
const MaxAgentDrain = 10 * time.Minute

// getAgent serves the caravan binary (h.agentBinary) to a Nomad
// client's artifact fetch, as a one-file tar stream.
func (h *handler) getAgent(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if _, err := h.agents.OpenAgent(r.Context(), q.Get("job"), q.Get("alloc"), q.Get("sig")); err != nil {
		h.log.Warn("agent fetch refused", "job", q.Get("job"), "alloc", q.Get("alloc"), "remote", r.RemoteAddr, "error", err)
		h.fail(w, err)
		return
	}
	size, err := agent.ServedSize(h.agentBinary)
	if err != nil {
		h.fail(w, api.Errorf(api.CodeUnavailable, "this server cannot serve its agent binary: %v", err))
		return
	}
	h.holdFor(w, BundleTransfer, BundleTransfer)
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.FormatInt(agent.TarSize(size), 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if err := agent.WriteTar(w, h.agentBinary); err != nil {
		h.log.Warn("agent fetch cut short", "alloc", q.Get("alloc"), "error", err)
		return
	}
	h.log.Debug("agent served", "job", q.Get("job"), "alloc", q.Get("alloc"))
}

// drainAgent drains the asking allocation at every proxy: they give it
// no new request, and the answer comes once it serves none (or after
// ?wait, default 30 s).
func (h *handler) drainAgent(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	wait := 30 * time.Second
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > MaxAgentDrain {
			h.fail(w, api.Errorf(api.CodeBadRequest, "wait is a duration from 0s to %s, not %q", MaxAgentDrain, s))
			return
		}
		wait = d
	}
	a, err := h.agents.OpenAgent(r.Context(), q.Get("job"), q.Get("alloc"), q.Get("sig"))
	if err != nil {
		h.log.Warn("agent drain refused", "job", q.Get("job"), "alloc", q.Get("alloc"), "remote", r.RemoteAddr, "error", err)
		h.fail(w, err)
		return
	}
	h.holdFor(w, wait, wait)
	start := time.Now()
	ans, err := h.drainer.DrainAlloc(r.Context(), a.ID, wait)
	if err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info("allocation drained", "job", a.JobID, "alloc", a.ID, "in_flight", ans.InFlight, "proxies", ans.Proxies, "failed", ans.Failed, "took", time.Since(start))
	writeJSON(w, http.StatusOK, ans)
}

// WorkerCredentials mints the NATS credential of a warm function's
// worker (NATSWorkers).
type WorkerCredentials interface {
	Credential(g queue.Grant) (agent.NATSAnswer, error)
}

var _ WorkerCredentials = NATSWorkers{}

// natsAgent answers a warm function's worker at its start with its NATS
// URL and a credential for its function and allocation (queue.Grant),
// and again each time the worker renews it before it expires: the job
// carries no credential, only this URL, signed for the job and answered
// to a live allocation of it (pending or running: a stopped one's
// credential is not renewed, and dies with its lifetime).
func (h *handler) natsAgent(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	a, err := h.agents.OpenAgent(r.Context(), q.Get("job"), q.Get("alloc"), q.Get("sig"))
	if err != nil {
		h.log.Warn("agent NATS credential refused", "job", q.Get("job"), "alloc", q.Get("alloc"), "remote", r.RemoteAddr, "error", err)
		h.fail(w, err)
		return
	}
	g, err := workerGrant(a)
	if err != nil {
		h.log.Warn("agent NATS credential refused", "job", a.JobID, "alloc", a.ID, "error", err)
		h.fail(w, err)
		return
	}
	ans, err := h.natsWorkers.Credential(g)
	if err != nil {
		h.fail(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	h.log.Debug("agent NATS credential", "function", g.Func.String(), "alloc", a.ID, "expires_in", ans.ExpiresIn)
	writeJSON(w, http.StatusOK, ans)
}

// workerGrant is what allocation a of a warm function's workers' job may
// do on NATS: its function's calls. The job's meta (which caravan
// renders, not the app's spec) names the workspace and function.
func workerGrant(a *nomad.Allocation) (queue.Grant, error) {
	if a.Job == nil || a.Job.ID == nil || a.Job.Meta[jobs.MetaWorkers] != "true" {
		return queue.Grant{}, &orchestrator.AgentAccessError{Why: fmt.Sprintf("allocation %s is not a warm function's worker", a.ID)}
	}
	fn, ws := a.Job.Meta[jobs.MetaFunction], a.Job.Meta[jobs.MetaWorkspace]
	appJob, ok := strings.CutSuffix(*a.Job.ID, jobs.CallSeparator+fn)
	g := queue.Grant{Func: queue.Func{Workspace: ws, AppJobID: appJob, Name: fn}, Alloc: a.ID}
	if !ok || fn == "" || g.Func.Check() != nil {
		return queue.Grant{}, &orchestrator.AgentAccessError{Why: fmt.Sprintf("job %s names no function of its workers", *a.Job.ID)}
	}
	return g, nil
}
