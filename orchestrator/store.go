package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caravanhq/caravan/api"
	consul "github.com/hashicorp/consul/api"
)

// App states.
const (
	StateDeployed = api.StateDeployed
	StateFailed   = api.StateFailed
	StateStopped  = api.StateStopped
)

// VersionKind, VersionStatus and AppState are api's: the history's values
// as they cross the wire.
type (
	VersionKind   = api.VersionKind
	VersionStatus = api.VersionStatus
	AppState      = api.AppState
)

// Version kinds and statuses.
const (
	KindDeploy   = api.KindDeploy
	KindRollover = api.KindRollover
	KindRollback = api.KindRollback

	StatusPending    = api.StatusPending
	StatusLive       = api.StatusLive
	StatusFailed     = api.StatusFailed
	StatusSuperseded = api.StatusSuperseded
)

// AppRecord is api.AppRecord: the orchestrator returns wire types as they are.
type AppRecord = api.AppRecord

// VersionRecord is api.VersionRecord: the orchestrator returns wire types as they are.
type VersionRecord = api.VersionRecord

// Store keeps app and version records; Consul KV in production.
type Store interface {
	// Lock serialises changes to one app across caravan servers; it waits
	// until the lock is free or ctx ends. The context it returns is for the
	// work done under the lock: ctx's values without its cancellation (a
	// change belongs to the holder, not to the client that asked for it),
	// cancelled with cause ErrLockLost when the lock is lost, and when
	// unlock is called.
	Lock(ctx context.Context, jobID string) (held context.Context, unlock func(), err error)
	// App returns the record of an app and its modify index (nil, 0 when
	// there is none).
	App(ctx context.Context, jobID string) (*AppRecord, uint64, error)
	// PutApp writes rec if the stored record is still at index (0: absent).
	PutApp(ctx context.Context, rec *AppRecord, index uint64) error
	// Apps returns every app's record, and nothing else: no version is
	// read.
	Apps(ctx context.Context) ([]*AppRecord, error)
	PutVersion(ctx context.Context, jobID string, generation int, v *VersionRecord) error
	// Version returns one version (nil when there is none).
	Version(ctx context.Context, jobID string, generation, version int) (*VersionRecord, error)
	// Versions returns a generation's versions, oldest first.
	Versions(ctx context.Context, jobID string, generation int) ([]*VersionRecord, error)
	// ClaimHost records that owner serves host; it returns a
	// *HostTakenError when another app already does.
	ClaimHost(ctx context.Context, host string, owner HostOwner) error
	// ReleaseHost forgets host if jobID owns it.
	ReleaseHost(ctx context.Context, host, jobID string) error
	// HostOwner returns who serves host (nil: nobody).
	HostOwner(ctx context.Context, host string) (*HostOwner, error)
}

// HostOwner is api.HostOwner: the orchestrator returns wire types as they are.
type HostOwner = api.HostOwner

// ErrLockLost ends work under an app's lock whose Consul session expired
// (the server could not renew it in time): another server may hold the
// lock now, so this one must write nothing more.
var ErrLockLost error = &UnavailableError{Why: "lost the app's lock: another caravan server may be changing it; try again"}

// ErrConflict is a check-and-set write that lost to another writer: a
// *ConflictError, so it answers 409 and the request may be retried.
var ErrConflict error = &ConflictError{Why: "the app record changed underneath this request"}

// ConsulStore keeps records under caravan/apps/ in Consul KV:
//
//	caravan/apps/<job>/record                       AppRecord
//	caravan/apps/<job>/<generation>/<version:08d>   VersionRecord
//	caravan/apps/<job>/lock                         Consul lock
type ConsulStore struct {
	Client *consul.Client
}

var _ Store = (*ConsulStore)(nil)

const (
	kvApps  = "caravan/apps/"
	kvHosts = "caravan/hosts/"
)

func (s *ConsulStore) Lock(ctx context.Context, jobID string) (context.Context, func(), error) {
	lock, err := s.Client.LockOpts(&consul.LockOptions{
		Key:          kvApps + jobID + "/lock",
		SessionName:  "caravan deploy " + jobID,
		SessionTTL:   "15s",
		LockWaitTime: 5 * time.Second,
	})
	if err != nil {
		return nil, nil, err
	}
	// stop ends the wait for the lock when ctx ends; closed once.
	stop := make(chan struct{})
	var once sync.Once
	closeStop := func() { once.Do(func() { close(stop) }) }
	waiting := context.AfterFunc(ctx, closeStop)
	lost, err := lock.Lock(stop)
	waiting()
	if err != nil || lost == nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("waiting for another change to app %s to finish: %w", jobID, ctx.Err())
		}
		return nil, nil, fmt.Errorf("locking app %s: %v", jobID, err)
	}
	held, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	go func() {
		select {
		case <-lost:
			cancel(ErrLockLost)
		case <-held.Done():
		}
	}()
	return held, func() {
		cancel(nil)
		_ = lock.Unlock()
	}, nil
}

func (s *ConsulStore) App(ctx context.Context, jobID string) (*AppRecord, uint64, error) {
	pair, _, err := s.Client.KV().Get(kvApps+jobID+"/record", (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil || pair == nil {
		return nil, 0, err
	}
	var rec AppRecord
	if err := json.Unmarshal(pair.Value, &rec); err != nil {
		return nil, 0, fmt.Errorf("reading record of %s: %w", jobID, err)
	}
	return &rec, pair.ModifyIndex, nil
}

func (s *ConsulStore) PutApp(ctx context.Context, rec *AppRecord, index uint64) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ok, _, err := s.Client.KV().CAS(&consul.KVPair{Key: kvApps + rec.JobID + "/record", Value: b, ModifyIndex: index},
		(&consul.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("writing record of %s: %w", rec.JobID, err)
	}
	if !ok {
		return ErrConflict
	}
	return nil
}

// Apps lists the apps' folders (keys only), then reads their records in
// transactions of 64 reads: the versions below them, with their specs,
// are never read.
func (s *ConsulStore) Apps(ctx context.Context) ([]*AppRecord, error) {
	dirs, _, err := s.Client.KV().Keys(kvApps, "/", (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("listing apps: %w", err)
	}
	var out []*AppRecord
	for chunk := range slices.Chunk(dirs, 64) {
		var ops consul.TxnOps
		for _, d := range chunk {
			if strings.HasSuffix(d, "/") {
				ops = append(ops, &consul.TxnOp{KV: &consul.KVTxnOp{Verb: consul.KVGetOrEmpty, Key: d + "record"}})
			}
		}
		if len(ops) == 0 {
			continue
		}
		ok, resp, _, err := s.Client.Txn().Txn(ops, (&consul.QueryOptions{}).WithContext(ctx))
		if err != nil || !ok {
			return nil, errors.Join(fmt.Errorf("reading app records"), err, txnErrors(resp))
		}
		for _, r := range resp.Results {
			if r.KV == nil || len(r.KV.Value) == 0 {
				continue
			}
			var rec AppRecord
			if err := json.Unmarshal(r.KV.Value, &rec); err != nil {
				return nil, fmt.Errorf("reading %s: %w", r.KV.Key, err)
			}
			out = append(out, &rec)
		}
	}
	return out, nil
}

// txnErrors joins the errors of a Consul transaction that did not commit.
func txnErrors(resp *consul.TxnResponse) error {
	if resp == nil {
		return nil
	}
	var errs []error
	for _, e := range resp.Errors {
		errs = append(errs, errors.New(e.What))
	}
	return errors.Join(errs...)
}

func (s *ConsulStore) Version(ctx context.Context, jobID string, generation, version int) (*VersionRecord, error) {
	pair, _, err := s.Client.KV().Get(versionKey(jobID, generation, version), (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil || pair == nil {
		return nil, err
	}
	var v VersionRecord
	if err := json.Unmarshal(pair.Value, &v); err != nil {
		return nil, fmt.Errorf("reading version %d of %s: %w", version, jobID, err)
	}
	return &v, nil
}

func versionKey(jobID string, generation, version int) string {
	return fmt.Sprintf("%s%s/%d/%08d", kvApps, jobID, generation, version)
}

func (s *ConsulStore) PutVersion(ctx context.Context, jobID string, generation int, v *VersionRecord) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = s.Client.KV().Put(&consul.KVPair{Key: versionKey(jobID, generation, v.Version), Value: b},
		(&consul.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("writing version %d of %s: %w", v.Version, jobID, err)
	}
	return nil
}

func (s *ConsulStore) Versions(ctx context.Context, jobID string, generation int) ([]*VersionRecord, error) {
	prefix := fmt.Sprintf("%s%s/%d/", kvApps, jobID, generation)
	pairs, _, err := s.Client.KV().List(prefix, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("reading history of %s: %w", jobID, err)
	}
	var out []*VersionRecord
	for _, p := range pairs {
		var v VersionRecord
		if err := json.Unmarshal(p.Value, &v); err != nil {
			return nil, fmt.Errorf("reading %s: %w", p.Key, err)
		}
		out = append(out, &v)
	}
	slices.SortFunc(out, func(a, b *VersionRecord) int { return a.Version - b.Version })
	return out, nil
}

func (s *ConsulStore) HostOwner(ctx context.Context, host string) (*HostOwner, error) {
	pair, _, err := s.Client.KV().Get(kvHosts+host, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil || pair == nil {
		return nil, err
	}
	var owner HostOwner
	if err := json.Unmarshal(pair.Value, &owner); err != nil {
		return nil, fmt.Errorf("reading the claim on %s: %w", host, err)
	}
	return &owner, nil
}

func (s *ConsulStore) ClaimHost(ctx context.Context, host string, owner HostOwner) error {
	kv := s.Client.KV()
	b, _ := json.Marshal(owner)
	for {
		pair, _, err := kv.Get(kvHosts+host, (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("reading the claim on %s: %w", host, err)
		}
		if pair != nil {
			var cur HostOwner
			if err := json.Unmarshal(pair.Value, &cur); err != nil {
				return fmt.Errorf("reading the claim on %s: %w", host, err)
			}
			if cur.JobID == owner.JobID {
				return nil
			}
			return &HostTakenError{Host: host, Owner: cur}
		}
		// ModifyIndex 0: create only.
		ok, _, err := kv.CAS(&consul.KVPair{Key: kvHosts + host, Value: b}, (&consul.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("claiming %s: %w", host, err)
		}
		if ok {
			return nil
		}
		// Someone claimed it between our read and write: read again.
	}
}

func (s *ConsulStore) ReleaseHost(ctx context.Context, host, jobID string) error {
	kv := s.Client.KV()
	pair, _, err := kv.Get(kvHosts+host, (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil || pair == nil {
		return err
	}
	var cur HostOwner
	if json.Unmarshal(pair.Value, &cur) == nil && cur.JobID != jobID {
		return nil
	}
	_, _, err = kv.DeleteCAS(pair, (&consul.WriteOptions{}).WithContext(ctx))
	return err
}
