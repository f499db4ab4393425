// Package orchestrator owns the apply stage: it takes an app spec through
// validation and rendering, registers the result with Nomad, watches Nomad's
// deployment until the new version is healthy (or reverted), and checks that
// every web function answers through Traefik. It is usable as a library:
// caravan server is a thin HTTP layer over it.
package orchestrator

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/caravanhq/caravan/jobs"
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
	Logger hclog.Logger
}

// Orchestrator deploys apps. It is safe for concurrent use.
type Orchestrator struct {
	nomad  Nomad
	consul Consul
	router router.Config
	store  Store
	prober Prober
	log    hclog.Logger
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
	return &Orchestrator{nomad: cfg.Nomad, consul: cfg.Consul, router: cfg.Router, store: cfg.Store, prober: cfg.Prober, log: log}, nil
}

// Caller is who asks for a change: a token's name and the workspace it may
// act on ("*" for every workspace).
type Caller struct {
	Name      string `json:"name"`
	Workspace string `json:"workspace"`
}

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
}

// Change says what a deploy did to a function.
type Change string

const (
	Created   Change = "created"
	Updated   Change = "updated"
	Unchanged Change = "unchanged"
	Removed   Change = "removed"
)

// FunctionResult is one function of a deployed app.
type FunctionResult struct {
	Name       string `json:"name"`
	Change     Change `json:"change"`
	Containers int    `json:"containers"`
	URL        string `json:"url,omitempty"`
	// CustomDomains route to the function too.
	CustomDomains []string `json:"custom_domains,omitempty"`
	// Schedule is a scheduled function's cron expression (UTC).
	Schedule string `json:"schedule,omitempty"`
	// Callable marks a function that runs once per `caravan call`.
	Callable bool `json:"callable,omitempty"`
}

// DeployResult is what a deploy did.
type DeployResult struct {
	Workspace string           `json:"workspace"`
	App       string           `json:"app"`
	JobID     string           `json:"job_id"`
	Version   int              `json:"version"`
	Changed   bool             `json:"changed"`
	SpecHash  string           `json:"spec_hash"`
	Functions []FunctionResult `json:"functions"`
	// Kind is deploy, rollover or rollback.
	Kind string `json:"kind"`
	// Warnings are the spec's non-fatal diagnostics.
	Warnings []Diagnostic  `json:"warnings,omitempty"`
	Duration time.Duration `json:"duration"`
	// Canary is set when the version went live as a canary: it takes part
	// of the traffic until promoted or aborted.
	Canary *CanaryState `json:"canary,omitempty"`
}

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

// Diagnostic is an hcl.Diagnostic as it crosses the API: everything but the
// expression and evaluation context, so a client can print it with the
// source line exactly as `caravan validate` does.
type Diagnostic struct {
	Severity string     `json:"severity"`
	Summary  string     `json:"summary"`
	Detail   string     `json:"detail,omitempty"`
	Subject  *hcl.Range `json:"subject,omitempty"`
	Context  *hcl.Range `json:"context,omitempty"`
}

func toWire(diags hcl.Diagnostics) []Diagnostic {
	var out []Diagnostic
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		out = append(out, Diagnostic{Severity: sev, Summary: d.Summary, Detail: d.Detail, Subject: d.Subject, Context: d.Context})
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
		out = append(out, &hcl.Diagnostic{Severity: sev, Summary: d.Summary, Detail: d.Detail, Subject: d.Subject, Context: d.Context})
	}
	return out
}
