// Package orchestrator owns the apply stage: it takes an app spec through
// validation and rendering, registers the result with Nomad, watches Nomad's
// deployment until the new version is healthy (or reverted), and checks that
// every web function answers through Traefik. It is usable as a library:
// caravan server is a thin HTTP layer over it.
package orchestrator

import (
	"context"
	"fmt"
	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/queue"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/bundlestore"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/policy"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	nomad "github.com/hashicorp/nomad/api"
)

// Config wires an Orchestrator.
type Config struct {
	// Nomad runs the apps; NomadClient{Client: c} adapts the official
	// client. Required.
	Nomad Nomad
	// Consul finds the containers of canaries and publishes traffic
	// splits (canary and blue-green rollouts) for Traefik's KV provider;
	// ConsulClient{Client: c} adapts the official client. Required.
	Consul Consul
	// Router says how routes are served; Domain is required.
	Router router.Config
	// Store keeps app records and every version's spec. Required.
	Store Store
	// Prober checks web functions through the proxy; nil skips the check.
	Prober Prober
	// Proxy shows what Traefik serves, so a traffic split counts as
	// applied when Traefik is seen serving it; nil waits SplitSettle
	// instead (for a Traefik whose API caravan cannot reach).
	Proxy Proxy
	// Resolver looks up the TXT records that prove control of custom
	// domains; nil uses the system's resolver (DNSResolver{}).
	Resolver Resolver
	// Policy says what each workspace may run; every version is checked
	// against it before anything is registered. nil is policy.Default():
	// no raw_exec anywhere.
	Policy *policy.Policy
	// Bundles keeps the code bundles versions run (see package
	// bundlestore); nil refuses deploys that carry code.
	Bundles bundlestore.Store
	// BundleLimits bound an uploaded bundle (zero fields: bundle's
	// defaults, 256 MiB and 4096 files).
	BundleLimits bundle.Limits
	// BundleSpool is the directory an upload is verified in before it is
	// stored; empty: the system's temporary directory.
	BundleSpool string
	Logger      hclog.Logger
	// Calls is the queue of warm calls (QueueCalls{Queue: q}); nil: calls
	// of warm functions fail, isolated ones dispatch as before.
	Calls Calls
	// CallsFunc configures each warm function's stream and consumer.
	CallsFunc queue.FuncConfig
	// CallQueued, when set, is called after each warm call is queued
	// (autoscaler.Scaler.Wake: a callable at zero starts its workers at
	// once rather than at the autoscaler's next round). It must not block.
	CallQueued func()
	// Sessions, with Proxy, let a new app's deploy publish first routes
	// (see firstroute.go): ConsulClient{Client: c}. nil: a new app takes
	// traffic once Consul's first check passes.
	Sessions Sessions
	// MaxStarting is how many containers this orchestrator's rollouts
	// start in Nomad at once; a rollout past it waits its turn before
	// anything of it reaches Nomad (see admit.go). 0:
	// DefaultMaxStarting; negative: no limit.
	MaxStarting int
}

// Orchestrator deploys apps. It is safe for concurrent use.
type Orchestrator struct {
	nomad  Nomad
	consul Consul
	router router.Config
	store  Store
	prober Prober
	proxy  Proxy
	dns    Resolver
	policy *policy.Policy
	log    hclog.Logger
	// sessions hold first routes (nil: none).
	sessions Sessions

	bundles      bundlestore.Store
	bundleLimits bundle.Limits
	bundleSpool  string
	// bundleKeyCache holds the cluster's bundle key once read.
	bundleKeyCache atomicKey
	// uploads counts the bundles stored.
	uploads atomic.Int64

	calls Calls
	// callQueued: Config.CallQueued.
	callQueued func()
	callsFunc  queue.FuncConfig
	warm       warmCache
	// rollouts admits rollouts to Nomad (Config.MaxStarting).
	rollouts *rolloutQueue
}

// New returns an Orchestrator, or an error naming what cfg lacks.
func New(cfg Config) (*Orchestrator, error) {
	var missing []string
	if cfg.Nomad == nil {
		missing = append(missing, "Nomad (orchestrator.NomadClient{Client: nomadClient})")
	}
	if cfg.Consul == nil {
		missing = append(missing, "Consul (orchestrator.ConsulClient{Client: consulClient})")
	}
	if cfg.Store == nil {
		missing = append(missing, "Store (&orchestrator.ConsulStore{Client: consulClient})")
	}
	if cfg.Router.Domain == "" {
		missing = append(missing, "Router.Domain (router.DefaultConfig has the local stack's)")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("orchestrator.Config lacks %s", strings.Join(missing, ", "))
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	dns := cfg.Resolver
	if dns == nil {
		dns = DNSResolver{}
	}
	pol := cfg.Policy
	if pol == nil {
		pol = policy.Default()
	}
	maxStarting := cfg.MaxStarting
	if maxStarting == 0 {
		maxStarting = DefaultMaxStarting
	}
	return &Orchestrator{calls: cfg.Calls, callsFunc: cfg.CallsFunc, callQueued: cfg.CallQueued, nomad: cfg.Nomad, consul: cfg.Consul, router: cfg.Router, store: cfg.Store, prober: cfg.Prober, proxy: cfg.Proxy, sessions: cfg.Sessions, rollouts: &rolloutQueue{limit: maxStarting},
		dns: dns, policy: pol, log: log, bundles: cfg.Bundles, bundleLimits: cfg.BundleLimits, bundleSpool: cfg.BundleSpool}, nil
}

// Caller is api.Caller: the orchestrator returns wire types as they are.
type Caller = api.Caller

// DeployRequest is an app spec to deploy.
type DeployRequest struct {
	// Spec is the HCL source; Filename names it in diagnostics.
	Spec     []byte `json:"spec"`
	Filename string `json:"filename"`
	// Timeout bounds the wait for the new version to be healthy
	// (default 5 minutes).
	Timeout time.Duration `json:"timeout,omitempty"`
	// Strategy overrides the spec's deploy strategy for this rollout
	// ("rolling", "recreate", "canary" or "blue-green"); empty keeps the spec's.
	Strategy string `json:"strategy,omitempty"`
	// Tag, GitCommit and GitDirty are recorded in the history.
	Tag       string `json:"tag,omitempty"`
	GitCommit string `json:"git_commit,omitempty"`
	GitDirty  bool   `json:"git_dirty,omitempty"`
	// Serve deploys the ephemeral copy `caravan serve` runs, apart from
	// the deployed app of the same name.
	Serve bool `json:"serve,omitempty"`
	// Bundles maps each function with files to the ID of its stored code
	// bundle (see api.DeployBody.Bundles); nil deploys without code.
	Bundles map[string]string `json:"bundles,omitempty"`
}

// Change is api.Change: the orchestrator returns wire types as they are.
type Change = api.Change

// What a deploy did to a function.
const (
	Created   = api.Created
	Updated   = api.Updated
	Unchanged = api.Unchanged
	Removed   = api.Removed
)

// FunctionResult is api.FunctionResult: the orchestrator returns wire types as they are.
type FunctionResult = api.FunctionResult

// DeployResult is api.DeployResult: the orchestrator returns wire types as they are.
type DeployResult = api.DeployResult

func (o *Orchestrator) currentJob(ctx context.Context, id string) (*nomad.Job, error) {
	return o.nomad.Job(ctx, id)
}

// owned refuses jobs caravan did not create for this app.
func owned(job *nomad.Job, app *spec.App) error {
	if job == nil {
		return nil
	}
	switch {
	case job.Meta[jobs.MetaApp] == "":
		return &OwnershipError{JobID: *job.ID, Why: "it has no caravan.app meta"}
	case job.Meta[jobs.MetaApp] != app.Name || job.Meta[jobs.MetaWorkspace] != app.Workspace:
		return &OwnershipError{JobID: *job.ID, Why: fmt.Sprintf("it belongs to app %q in workspace %q",
			job.Meta[jobs.MetaApp], job.Meta[jobs.MetaWorkspace])}
	}
	return nil
}

func stopped(job *nomad.Job) bool { return job.Stop != nil && *job.Stop }

func functionResults(app *spec.App, r *jobs.Rendered, old map[string]string) []FunctionResult {
	routes := map[string]router.Route{}
	for _, rt := range r.Routes {
		routes[rt.Function] = rt
	}
	// What identifies each function now and in what Nomad runs: a group's
	// hash, or a scheduled or callable function's own job's hash.
	old, now := maps.Clone(old), r.FunctionHashes()
	var out []FunctionResult
	for _, fn := range app.Functions {
		fr := FunctionResult{Name: fn.Name, Containers: fn.Count(), Change: Created, Schedule: fn.CronSpec(), Callable: fn.Callable}
		if !fn.LongRunning() {
			fr.Containers = 0
		}
		if h, ok := old[fn.Name]; ok {
			fr.Change = Updated
			if h == now[fn.Name] {
				fr.Change = Unchanged
			}
			delete(old, fn.Name)
		}
		if rt, ok := routes[fn.Name]; ok {
			fr.URL, fr.CustomDomains = rt.URL, rt.CustomDomains
			if rt.Proxied && fn.Scaling != nil && fn.Scaling.Autoscaled() {
				fr.Containers, fr.MaxContainers = fn.Scaling.MinContainers, fn.Scaling.MaxContainers
			}
		}
		out = append(out, fr)
	}
	var gone []string
	for name := range old {
		gone = append(gone, name)
	}
	slices.Sort(gone)
	for _, name := range gone {
		out = append(out, FunctionResult{Name: name, Change: Removed})
	}
	return out
}

// Diagnostic is api.Diagnostic, an hcl.Diagnostic as it crosses the API;
// ToWire and FromWire convert.
type Diagnostic = api.Diagnostic

func toWire(diags hcl.Diagnostics) []Diagnostic {
	var out []Diagnostic
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		out = append(out, Diagnostic{Severity: sev, Summary: d.Summary, Detail: d.Detail, Subject: rangeToWire(d.Subject),
			Context: rangeToWire(d.Context)})
	}
	return out
}

// ToWire converts diagnostics for the API.
func ToWire(diags hcl.Diagnostics) []Diagnostic { return toWire(diags) }

// FromWire converts API diagnostics back to hcl.Diagnostics.
func FromWire(ds []Diagnostic) hcl.Diagnostics {
	var out hcl.Diagnostics
	for _, d := range ds {
		sev := hcl.DiagError
		if d.Severity == "warning" {
			sev = hcl.DiagWarning
		}
		out = append(out, &hcl.Diagnostic{Severity: sev, Summary: d.Summary, Detail: d.Detail,
			Subject: rangeFromWire(d.Subject), Context: rangeFromWire(d.Context)})
	}
	return out
}

func rangeToWire(r *hcl.Range) *api.Range {
	if r == nil {
		return nil
	}
	return &api.Range{Filename: r.Filename,
		Start: api.Pos{Line: r.Start.Line, Column: r.Start.Column, Byte: r.Start.Byte},
		End:   api.Pos{Line: r.End.Line, Column: r.End.Column, Byte: r.End.Byte}}
}

func rangeFromWire(r *api.Range) *hcl.Range {
	if r == nil {
		return nil
	}
	return &hcl.Range{Filename: r.Filename,
		Start: hcl.Pos{Line: r.Start.Line, Column: r.Start.Column, Byte: r.Start.Byte},
		End:   hcl.Pos{Line: r.End.Line, Column: r.End.Column, Byte: r.End.Byte}}
}
