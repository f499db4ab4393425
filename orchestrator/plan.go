package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"github.com/caravanhq/caravan/api"
	"slices"
	"strings"
	"time"

	"github.com/caravanhq/caravan/jobs"
	nomad "github.com/hashicorp/nomad/api"
)

// PlanResult is api.PlanResult: the orchestrator returns wire types as they are.
type PlanResult = api.PlanResult

// FunctionPlan is api.FunctionPlan: the orchestrator returns wire types as they are.
type FunctionPlan = api.FunctionPlan

// Plan says what deploying req would change across the Nomad job (Nomad's
// own plan, placement failures included), the hostnames and certificates,
// without changing anything.
func (o *Orchestrator) Plan(ctx context.Context, caller Caller, req DeployRequest) (*PlanResult, error) {
	c, err := deployChange(req)
	if err != nil {
		return nil, err
	}
	app, diags := c.app, c.diags
	rendered, err := o.prepare(ctx, caller, c)
	// A refusal by the policy, or a workspace without its Nomad namespace,
	// is a problem: the plan goes on to show the rest of what the deploy
	// would meet (without Nomad's plan, when there is no namespace to
	// plan in).
	var denied *PolicyError
	var missing *NamespaceMissingError
	if errors.As(err, &denied) {
		// prepare stopped before the namespace.
		err = o.nomad.Namespace(ctx, app.Workspace)
	}
	if errors.As(err, &missing) {
		err = nil
	}
	if err == nil && (denied != nil || missing != nil) {
		rendered, err = o.render(ctx, app)
	}
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
	if denied != nil {
		res.Problems = append(res.Problems, denied.Error())
	}
	if missing != nil {
		res.Problems = append(res.Problems, missing.Error())
	}
	old, err := o.runningHashes(ctx, current)
	if err != nil {
		return nil, err
	}
	p := decide(c, caller, rendered, rec, current, old, time.Now().UTC())
	live, err := o.liveBundles(ctx, rec)
	if err != nil {
		return nil, err
	}
	changed := codeChanged(live, bundlesOf(app), rec.LiveVersion > 0)
	for _, f := range p.Functions {
		res.Functions = append(res.Functions, FunctionPlan{Name: f.Name, Change: f.Change, CodeChanged: slices.Contains(changed, f.Name)})
	}
	if p.Noop {
		return res, nil
	}
	res.Changed, res.Version = true, p.Version.Version
	stamp(job, p.Record.Rollovers)
	if missing != nil {
		return res, nil
	}

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
	owner := ownerOf(p.Record)
	for _, h := range res.HostsAdded {
		claims, err := o.store.HostClaims(ctx, h)
		if err != nil {
			return nil, err
		}
		if taken := claimConflict(h, owner, claims); taken != nil {
			res.Problems = append(res.Problems, visibleTo(taken, caller).Error())
			continue
		}
		// The platform's wildcard, ordered when the server started,
		// covers generated hostnames: nothing new to order for them.
		if !o.router.InWildcard(h) {
			res.Certificates = append(res.Certificates, h)
		}
	}
	// Domains not yet proved: the deploy would look their TXT records up.
	unproved, err := o.unproved(ctx, app.Workspace, newCustomDomains(app, p.Claim))
	if err != nil {
		return nil, err
	}
	for _, c := range unproved {
		if txt, err := o.dns.LookupTXT(ctx, c.Record); err != nil || !provesControl(txt, c.Value) {
			res.Problems = append(res.Problems, (&DomainUnverifiedError{Workspace: app.Workspace, Challenges: []DomainChallenge{c}}).Error())
		}
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
