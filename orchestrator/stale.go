package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// A traffic split's routers rank above the routers of the route they stand
// in for, the next version's included (see router.SplitPriority): a split
// left in Consul KV would keep taking the route's requests. So a removal
// that fails is recorded in the app's record (AppRecord.StaleSplits), and
// the split is removed again by caravan server's watch loop (WatchCanaries)
// until it is gone, and by the next change of the app before it rolls out
// (which is refused while it cannot be).

// removeOrRecord removes split keys of jobID's app (see removeSplits); if
// that fails, they are recorded as stale. It runs under the app's lock.
func (o *Orchestrator) removeOrRecord(ctx context.Context, jobID string, keys []string) error {
	err := o.removeSplits(ctx, keys)
	if err == nil {
		return nil
	}
	if rerr := o.recordStale(context.WithoutCancel(ctx), jobID, keys); rerr != nil {
		o.log.Error("recording a traffic split left behind", "job", jobID, "keys", len(keys), "error", rerr)
		return errors.Join(err, rerr)
	}
	o.log.Warn("traffic split left behind; caravan server retries its removal", "job", jobID, "error", err)
	return err
}

// recordStale adds keys to the stale splits of jobID's record.
func (o *Orchestrator) recordStale(ctx context.Context, jobID string, keys []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rec, index, err := o.store.App(ctx, jobID)
	if err != nil || rec == nil {
		return errors.Join(err, errors.New("app record vanished"))
	}
	rec.StaleSplits = union(rec.StaleSplits, keys)
	return o.store.PutApp(ctx, rec, index)
}

// clearStaleSplits removes the stale splits jobID's record lists and
// forgets them; while they cannot be removed it returns an
// *UnavailableError. It runs under the app's lock, and never while a
// canary is undecided: a canary's split may use the same keys.
func (o *Orchestrator) clearStaleSplits(ctx context.Context, jobID string) error {
	rec, _, err := o.store.App(ctx, jobID)
	if err != nil || rec == nil || len(rec.StaleSplits) == 0 || rec.Canary != nil {
		return err
	}
	if err := o.removeSplits(ctx, rec.StaleSplits); err != nil {
		return &UnavailableError{Why: fmt.Sprintf("a traffic split of app %q left by an earlier rollout could not be removed (%v); "+
			"it would outrank the new version's routes, so nothing was changed: retry", rec.App, err)}
	}
	removed := rec.StaleSplits
	rec, index, err := o.store.App(ctx, jobID)
	if err != nil || rec == nil {
		return errors.Join(err, errors.New("app record vanished"))
	}
	rec.StaleSplits = slices.DeleteFunc(rec.StaleSplits, func(k string) bool { return slices.Contains(removed, k) })
	if len(rec.StaleSplits) == 0 {
		rec.StaleSplits = nil
	}
	if err := o.store.PutApp(ctx, rec, index); err != nil {
		return err
	}
	o.log.Info("stale traffic split removed", "job", jobID, "keys", len(removed))
	return nil
}

// retryStaleSplits removes the stale splits of rec's app, for the watch
// loop: it takes the app's lock, waiting for it no longer than a round.
func (o *Orchestrator) retryStaleSplits(ctx context.Context, rec *AppRecord, wait time.Duration) {
	lctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	held, unlock, err := o.store.Lock(lctx, rec.JobID)
	if err != nil {
		return // busy: a change of the app removes them itself
	}
	defer unlock()
	if err := o.clearStaleSplits(held, rec.JobID); err != nil {
		o.log.Warn("removing a stale traffic split", "job", rec.JobID, "error", err)
	}
}
