package orchestrator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

// PlanResult is what a deploy of a spec would do, found without changing
// anything.
type PlanResult struct {
	Workspace string `json:"workspace"`
	App       string `json:"app"`
	JobID     string `json:"job_id"`
	// Changed is false when a deploy would be a no-op.
	Changed bool `json:"changed"`
	// Version is the version a deploy would create; LiveVersion the one
	// serving now (0: none).
	Version     int            `json:"version,omitempty"`
	LiveVersion int            `json:"live_version,omitempty"`
	Functions   []FunctionPlan `json:"functions"`
	// Diff is Nomad's plan diff, one line a change, caravan's own
	// bookkeeping meta left out.
	Diff []string `json:"diff,omitempty"`
	// HostsAdded and HostsRemoved are the hostnames the app would start and
	// stop serving; Certificates those that would get a new certificate.
	HostsAdded   []string `json:"hosts_added,omitempty"`
	HostsRemoved []string `json:"hosts_removed,omitempty"`
	Certificates []string `json:"certificates,omitempty"`
	// Problems would make the deploy fail: functions Nomad cannot place,
	// hostnames another app serves.
	Problems []string     `json:"problems,omitempty"`
	Warnings []Diagnostic `json:"warnings,omitempty"`
}

// FunctionPlan is what a deploy would do to one function's containers.
type FunctionPlan struct {
	Name        string `json:"name"`
	Change      Change `json:"change"`
	Place       uint64 `json:"place,omitempty"`
	Stop        uint64 `json:"stop,omitempty"`
	InPlace     uint64 `json:"in_place,omitempty"`
	Destructive uint64 `json:"destructive,omitempty"`
	Canary      uint64 `json:"canary,omitempty"`
	Unplaceable string `json:"unplaceable,omitempty"`
}

// Plan says what deploying req would change across the Nomad job (Nomad's
// own plan, placement failures included), the hostnames and certificates,
// without changing anything.
func (o *Orchestrator) Plan(ctx context.Context, caller Caller, req DeployRequest) (*PlanResult, error) {
	app, diags := spec.Parse(req.Spec, req.Filename)
	if diags.HasErrors() {
		return nil, &DiagnosticsError{Diags: diags}
	}
	if err := checkStrategy(req.Strategy); err != nil {
		return nil, err
	}
	c := change{kind: KindDeploy, app: effective(app, req.Strategy, req.Serve), diags: diags, req: req}
	app = c.app
	rendered, err := o.prepare(caller, c)
	if err != nil {
		return nil, err
	}
	job := rendered.Job
	id := *job.ID
	rec, _, current, err := o.load(ctx, app, id)
	if err != nil {
		return nil, err
	}
	res := &PlanResult{Workspace: app.Workspace, App: app.Name, JobID: id, LiveVersion: rec.LiveVersion, Warnings: toWire(diags)}
	old, err := o.runningHashes(ctx, current)
	if err != nil {
		return nil, err
	}
	p := decide(c, caller, rendered, rec, current, old, time.Now().UTC())
	for _, f := range p.Functions {
		res.Functions = append(res.Functions, FunctionPlan{Name: f.Name, Change: f.Change})
	}
	if p.Noop {
		return res, nil
	}
	res.Changed, res.Version = true, p.Version.Version
	stamp(job, p.Record.Rollovers)

	plan, err := o.nomad.Plan(ctx, job, true)
	if err != nil {
		return nil, fmt.Errorf("planning job %s with Nomad: %w", id, err)
	}
	need := needs(app)
	for i := range res.Functions {
		f := &res.Functions[i]
		if plan.Annotations != nil {
			if u := plan.Annotations.DesiredTGUpdates[f.Name]; u != nil {
				f.Place, f.Stop, f.InPlace, f.Destructive, f.Canary = u.Place, u.Stop, u.InPlaceUpdate, u.DestructiveUpdate, u.Canary
			}
		}
		if m, ok := plan.FailedTGAllocs[f.Name]; ok {
			_, cause := firstUnplaceable(map[string]*nomad.AllocationMetric{f.Name: m}, need)
			f.Unplaceable = cause
			res.Problems = append(res.Problems, fmt.Sprintf("function %q %s", f.Name, cause))
		}
	}
	res.Diff = flattenDiff(plan.Diff)

	res.HostsAdded = p.Claim
	for _, h := range rec.Hosts {
		if !slices.Contains(p.Hosts, h) {
			res.HostsRemoved = append(res.HostsRemoved, h)
		}
	}
	for _, h := range res.HostsAdded {
		owner, err := o.store.HostOwner(ctx, h)
		if err != nil {
			return nil, err
		}
		if owner != nil && owner.JobID != id {
			res.Problems = append(res.Problems, (&HostTakenError{Host: h, Owner: *owner}).Error())
			continue
		}
		res.Certificates = append(res.Certificates, h)
	}
	return res, nil
}

// bookkeeping is meta caravan changes on every version; it is left out of
// plan diffs, which are about what runs.
var bookkeeping = []string{jobs.MetaVersion, jobs.MetaSpecHash, jobs.MetaGroupHash, jobs.MetaRollover}

// flattenDiff turns Nomad's job diff into lines such as
// `~ group "web" > task "web" > Env[GREETING]: "hi" => "hello"`.
func flattenDiff(d *nomad.JobDiff) []string {
	if d == nil {
		return nil
	}
	var out []string
	var fields func(prefix string, fs []*nomad.FieldDiff, objs []*nomad.ObjectDiff)
	fields = func(prefix string, fs []*nomad.FieldDiff, objs []*nomad.ObjectDiff) {
		for _, f := range fs {
			if f.Type == "None" || slices.ContainsFunc(bookkeeping, func(k string) bool { return strings.HasSuffix(f.Name, "["+k+"]") }) {
				continue
			}
			var line string
			switch f.Type {
			case "Added":
				line = fmt.Sprintf("+ %s%s: %q", prefix, f.Name, f.New)
			case "Deleted":
				line = fmt.Sprintf("- %s%s: %q", prefix, f.Name, f.Old)
			default:
				line = fmt.Sprintf("~ %s%s: %q => %q", prefix, f.Name, f.Old, f.New)
			}
			if len(f.Annotations) > 0 {
				line += " (" + strings.Join(f.Annotations, ", ") + ")"
			}
			out = append(out, line)
		}
		for _, o := range objs {
			if o.Type != "None" {
				fields(prefix+o.Name+" > ", o.Fields, o.Objects)
			}
		}
	}
	fields("", d.Fields, d.Objects)
	for _, g := range d.TaskGroups {
		if g.Type == "None" {
			continue
		}
		if g.Type == "Added" || g.Type == "Deleted" {
			sign := map[string]string{"Added": "+", "Deleted": "-"}[g.Type]
			out = append(out, fmt.Sprintf("%s group %q", sign, g.Name))
			continue
		}
		gp := fmt.Sprintf("group %q > ", g.Name)
		fields(gp, g.Fields, g.Objects)
		for _, t := range g.Tasks {
			if t.Type != "None" {
				fields(gp+fmt.Sprintf("task %q > ", t.Name), t.Fields, t.Objects)
			}
		}
	}
	return out
}
