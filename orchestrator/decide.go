package orchestrator

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

// This file holds the decisions of a change as pure functions: values in,
// values out, no I/O. The I/O steps in apply.go, canary.go and resume.go
// read what they need, ask these, and carry out the answer.

// effective is the app a change rolls out: the parsed spec with the
// request's strategy override and the rules of a serve copy (its own job,
// and always rolling: it is redeployed on every save, for one developer,
// with no canary waiting for a promotion). parsed is not changed. New and
// stored versions alike go through it.
func effective(parsed *spec.App, strategy string, serve bool) *spec.App {
	app := *parsed
	app.Serve = serve
	d := spec.Deploy{}
	if parsed.Deploy != nil {
		d = *parsed.Deploy
	}
	if strategy != "" {
		d.Strategy = strategy
	}
	if serve && (d.Strategy == spec.StrategyCanary || d.Strategy == spec.StrategyBlueGreen) {
		d.Strategy = spec.StrategyRolling
	}
	if parsed.Deploy != nil || d != (spec.Deploy{}) {
		app.Deploy = &d
	}
	return &app
}

// plan is what a change will do, decided before anything is written.
type plan struct {
	// Noop: Nomad already runs every function as rendered; nothing is
	// written.
	Noop bool
	// Functions says what happens to each function.
	Functions []FunctionResult
	// Record is the app record to write (a copy: the input is untouched)
	// and Version the version to record as pending.
	Record  *AppRecord
	Version *VersionRecord
	// Hosts are the hostnames the version serves, sorted; Claim those the
	// app does not hold yet.
	Hosts, Claim []string
}

// decide works out what change c does to an app, from its record (rec,
// never nil), the job Nomad runs (nil: none) and the hashes of the
// functions Nomad runs (old).
func decide(c change, caller Caller, rendered *jobs.Rendered, rec *AppRecord, current *nomad.Job, old map[string]string, now time.Time) plan {
	p := plan{Functions: functionResults(c.app, rendered, old)}
	next := *rec
	if c.kind == KindRollover {
		next.Rollovers++
	}
	if c.kind == KindDeploy && unchanged(&next, current, old, rendered) {
		p.Noop, p.Record = true, &next
		return p
	}
	if c.kind != KindDeploy {
		// A rollover or rollback replaces every container.
		for i := range p.Functions {
			if p.Functions[i].Change == Unchanged {
				p.Functions[i].Change = Updated
			}
		}
	}
	p.Hosts = renderedHosts(rendered)
	for _, h := range p.Hosts {
		if !slices.Contains(rec.Hosts, h) {
			p.Claim = append(p.Claim, h)
		}
	}
	// Until a version with these hosts is live, the app holds both sets.
	next.Hosts = union(rec.Hosts, p.Hosts)
	next.LatestVersion, next.UpdatedAt = rec.LatestVersion+1, now
	p.Record = &next
	p.Version = &VersionRecord{
		Version: next.LatestVersion, Kind: c.kind, Status: StatusPending, Strategy: c.app.DeployStrategy(), Who: caller.Name, WhoID: caller.TokenID,
		Tag: c.req.Tag, GitCommit: c.req.GitCommit, GitDirty: c.req.GitDirty, SpecHash: rendered.SpecHash,
		Filename: c.req.Filename, Spec: string(c.req.Spec), RollbackOf: c.rollbackOf, StartedAt: now, Hosts: p.Hosts,
		Bundles: bundlesOf(c.app),
	}
	return p
}

// unchanged reports whether deploying rendered would change nothing: Nomad
// runs every function of it as rendered (old are the running hashes), with
// the app's rollover count.
func unchanged(rec *AppRecord, current *nomad.Job, old map[string]string, rendered *jobs.Rendered) bool {
	return current != nil && !stopped(current) && rec.LiveVersion > 0 &&
		maps.Equal(old, rendered.FunctionHashes()) && runningRollovers(current) == rec.Rollovers
}

// rollbackTarget picks the version a rollback deploys: want, or with want
// 0 the latest version before the live one that was live itself. Only a
// version that went live can be rolled back to.
func rollbackTarget(rec *AppRecord, versions []*VersionRecord, want int) (*VersionRecord, error) {
	if want == 0 {
		for _, v := range slices.Backward(versions) {
			if v.Version < rec.LiveVersion && v.Status == StatusSuperseded {
				return v, nil
			}
		}
		return nil, &NotFoundError{App: rec.App, Why: "it has no earlier version that was ever live"}
	}
	for _, v := range versions {
		if v.Version != want {
			continue
		}
		if !wentLive(v.Status) {
			return nil, &ConflictError{App: rec.App, Why: fmt.Sprintf("version %d never went live (%s); roll back to a version that did", want, v.Status)}
		}
		return v, nil
	}
	return nil, &NotFoundError{App: rec.App, Why: fmt.Sprintf("it has no version %d (latest is %d)", want, rec.LatestVersion)}
}

// outcome is what recording the end of a version's rollout writes.
type outcome struct {
	Record *AppRecord
	// Versions to write: the version itself, and the one it superseded.
	Versions []*VersionRecord
	// Release are hostnames nothing live serves any more.
	Release []string
}

// settle records how version v's rollout ended (rollErr nil: live) on a
// copy of the app record; prevLive is the version live until now (nil:
// none, or v itself). A version that went live keeps its hostnames and
// releases the rest; one that failed releases what it claimed, keeping
// what prevLive serves, so a version that never went live holds nothing.
// It refuses a transition the lifecycle does not allow.
func settle(rec *AppRecord, v, prevLive *VersionRecord, rollErr error, now time.Time) (outcome, error) {
	next, nv := *rec, *v
	out := outcome{Record: &next}
	nv.FinishedAt, next.UpdatedAt = now, now
	if rollErr != nil {
		if err := transition(&nv, StatusFailed); err != nil {
			return outcome{}, err
		}
		nv.Error = rollErr.Error()
		next.State = StateFailed
		out.Versions = append(out.Versions, &nv)
		if prevLive != nil && prevLive.Version == v.Version {
			prevLive = nil
		}
		next.Hosts, out.Release = served(rec.Hosts, prevLive)
		return out, nil
	}
	if err := transition(&nv, StatusLive); err != nil {
		return outcome{}, err
	}
	if prevLive != nil && prevLive.Version != v.Version {
		pv := *prevLive
		if err := transition(&pv, StatusSuperseded); err != nil {
			return outcome{}, err
		}
		out.Versions = append(out.Versions, &pv)
	}
	out.Versions = append(out.Versions, &nv)
	next.State, next.LiveVersion = StateDeployed, v.Version
	for _, h := range rec.Hosts {
		if !slices.Contains(v.Hosts, h) {
			out.Release = append(out.Release, h)
		}
	}
	next.Hosts = slices.Clone(v.Hosts)
	return out, nil
}

// served splits held, the hostnames an app holds, into those its live
// version serves (live nil: none) and the rest, to release.
func served(held []string, live *VersionRecord) (keep, release []string) {
	for _, h := range held {
		if live != nil && slices.Contains(live.Hosts, h) {
			keep = append(keep, h)
		} else {
			release = append(release, h)
		}
	}
	return keep, release
}

// canaryCount is how many canaries Nomad gave each of functions in dep
// (the spec's number, clamped to each function's count): the largest.
func canaryCount(dep *nomad.Deployment, functions []string) int {
	n := 0
	for _, fn := range functions {
		if st := dep.TaskGroups[fn]; st != nil {
			n = max(n, st.DesiredCanaries)
		}
	}
	return n
}

// settlement is what settling a canary does.
type settlement int

const (
	// finishPromotion: Nomad already promoted (a server stopped after
	// promoting); only the split is left to remove.
	finishPromotion settlement = iota + 1
	// promoteCanary: all traffic to the canaries, then Nomad promotes.
	promoteCanary
	// abortCanary: all traffic back to the live version, the deployment
	// failed.
	abortCanary
)

// howToSettle decides how a request to promote (or abort) a canary is
// carried out, given whether Nomad already promoted its deployment.
func howToSettle(promote, promotedInNomad bool) settlement {
	switch {
	case promote && promotedInNomad:
		return finishPromotion
	case promote:
		return promoteCanary
	default:
		return abortCanary
	}
}

// settledStatus is the status a settled canary version ends with when it
// did not become live: an abort is aborted, a promotion that failed is
// failed.
func settledStatus(promote bool) VersionStatus {
	if promote {
		return StatusFailed
	}
	return StatusAborted
}

// watchAction is what caravan server does on its own about a canary.
type watchAction int

const (
	watchNothing watchAction = iota
	// watchFinish: Nomad promoted it but caravan never recorded it.
	watchFinish
	// watchPromote: promote_after has passed.
	watchPromote
	// watchAbort: its canaries failed their checks twice in a row.
	watchAbort
)

// canaryWatch decides what to do about canary st at now, given whether
// Nomad promoted it, whether its canaries are healthy, and how many
// checks in a row found them sick before this one. It returns the action
// and the new count of sick checks.
func canaryWatch(st *CanaryState, now time.Time, promoted, healthy bool, sick int) (watchAction, int) {
	switch {
	case promoted:
		return watchFinish, 0
	case !st.PromoteAt.IsZero() && now.After(st.PromoteAt):
		return watchPromote, 0
	case healthy:
		return watchNothing, 0
	case sick+1 < sickChecks:
		return watchNothing, sick + 1
	default:
		return watchAbort, 0
	}
}

// sickChecks is how many checks in a row must find a canary without a
// passing container before caravan aborts it.
const sickChecks = 2

// resumeAction is what a starting server does about a version a previous
// server left pending.
type resumeAction int

const (
	// resumeFail: the version never reached Nomad, or Nomad runs another.
	resumeFail resumeAction = iota + 1
	// resumeFollow: Nomad runs it; follow its deployment to the end.
	resumeFollow
)

// howToResume decides from the job Nomad runs (nil: none) and whether it
// is the pending version's.
func howToResume(job *nomad.Job, runsVersion bool) (resumeAction, string) {
	switch {
	case job == nil:
		return resumeFail, "caravan server stopped before the job reached Nomad"
	case !runsVersion:
		return resumeFail, "caravan server stopped during the rollout and Nomad now runs " +
			"another version (reverted, or this one never registered)"
	default:
		return resumeFollow, ""
	}
}
