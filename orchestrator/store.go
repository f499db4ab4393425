package orchestrator

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
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
	// Commit writes w in one transaction, or nothing: w.Record if the
	// stored record is still at w.Index (else ErrConflict), w.Versions,
	// claims on w.Claim for the record's app (a *HostTakenError, and
	// nothing written, when another app's claim is in the way; see
	// claimConflict) and the release of w.Release (those the app holds).
	Commit(ctx context.Context, w Write) error
	// HostClaims returns the claims that overlap host (see overlaps).
	HostClaims(ctx context.Context, host string) ([]HostClaim, error)
	// Domains returns every custom domain binding.
	Domains(ctx context.Context) ([]DomainBinding, error)
	// PutDomain stores b, replacing any binding of b.Domain.
	PutDomain(ctx context.Context, b DomainBinding) error
	// Secret returns the secret challenge values are derived from, the
	// same for every caravan server of the cluster (made on first use).
	Secret(ctx context.Context) ([]byte, error)
	// BundleKey returns the key bundle fetch URLs are signed with, the
	// same for every caravan server of the cluster (made on first use).
	BundleKey(ctx context.Context) ([]byte, error)
	// GrantBundle records that workspace ws holds bundle id's files (it
	// uploaded them); BundleGranted reports whether it does. A workspace
	// deploys only the bundles it holds: a bundle's ID alone, which
	// another workspace may read in Nomad or its history, opens nothing.
	GrantBundle(ctx context.Context, ws, id string) error
	BundleGranted(ctx context.Context, ws, id string) (bool, error)
}

// Write is what one step of a change writes at once (see Store.Commit).
type Write struct {
	// Record is written if the stored record is still at Index (0:
	// absent); the claims are its app's.
	Record *AppRecord
	Index  uint64
	// Versions of the record's generation.
	Versions []*VersionRecord
	// Claim are hostnames to claim (those the app holds stay held);
	// Release those to give up (another app's are left alone).
	Claim, Release []string
}

// DomainBinding is api.DomainBinding: the orchestrator returns wire types as they are.
type DomainBinding = api.DomainBinding

// HostOwner is api.HostOwner: the orchestrator returns wire types as they are.
type HostOwner = api.HostOwner

// ErrLockLost ends work under an app's lock whose Consul session expired
// (the server could not renew it in time): another server may hold the
// lock now, so this one must write nothing more.
var ErrLockLost error = &UnavailableError{Why: "lost the app's lock: another caravan server may be changing it; try again"}

// ErrConflict is a check-and-set write that lost to another writer: a
// *ConflictError, so it answers 409 and the request may be retried.
var ErrConflict error = &ConflictError{Why: "the app record changed underneath this request"}

// ConsulStore keeps records under caravan/ in Consul KV:
//
//	caravan/apps/<job>/record                       AppRecord
//	caravan/apps/<job>/<generation>/<version:08d>   VersionRecord
//	caravan/apps/<job>/lock                         Consul lock
//	caravan/hostnames/<labels reversed>             HostOwner: com/example/api, com/example/*
//	caravan/hostnames-under/<labels reversed>       bumped by every claim under that domain
//	caravan/domains/<domain>                        DomainBinding
//	caravan/domain-secret                           the challenge values' secret
//	caravan/bundle-key                              the key bundle fetch URLs are signed with
//	caravan/bundle-grants/<workspace>/<bundle>      the workspace uploaded that bundle's files
//
// (caravan server keeps caravan/probe-secret and caravan/router-config
// beside them: server/cluster.go.)
//
// A claim's key lists its labels from the top, so the folder of a domain
// holds its subtree and one prefix read finds every claim under a
// wildcard. No key is written by every claim: a claim's transaction
// creates its own key, checks the wildcard keys above it and bumps their
// base domains' under revisions, and a wildcard's checks its own base's
// (claimops.go), so two overlapping claims cannot both land while claims
// that cannot overlap never fail each other.
type ConsulStore struct {
	Client *consul.Client
}

var _ Store = (*ConsulStore)(nil)

const (
	kvApps         = "caravan/apps/"
	kvHosts        = "caravan/hostnames/"
	kvDomains      = "caravan/domains/"
	kvDomainSecret = "caravan/domain-secret"
	kvBundleKey    = "caravan/bundle-key"
	kvBundleGrants = "caravan/bundle-grants/"
)

// An app's lock is held through a Consul session of LockSessionTTL that
// its holder renews. A server that dies holding it loses it once Consul
// lets the session expire (between one and two TTLs), and another server
// may take it LockDelay after that: Consul's default of 15 s guards
// holders that cannot tell they lost a lock, and a caravan server can (its
// held context ends as soon as the lock's watch fails or sees the key
// change hands), so a second is enough and a crashed server's rollout is
// taken over in 11-21 s rather than 30-45.
const (
	LockSessionTTL = "10s" // Consul's least
	LockDelay      = time.Second
)

func (s *ConsulStore) Lock(ctx context.Context, jobID string) (context.Context, func(), error) {
	lock, err := s.Client.LockOpts(&consul.LockOptions{
		Key:          kvApps + jobID + "/lock",
		SessionName:  "caravan deploy " + jobID,
		SessionTTL:   LockSessionTTL,
		LockDelay:    LockDelay,
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

// maxTxnOps is how many operations Consul takes in one transaction.
const maxTxnOps = 64

// Commit reads what the claims and releases need (readClaims, the
// releases' keys), decides with claimOps, and writes everything in one
// transaction that fails if a claim it read moved meanwhile (then it reads
// again) or the record did (ErrConflict).
func (s *ConsulStore) Commit(ctx context.Context, w Write) error {
	for attempt := 0; ; attempt++ {
		ops, recordOp, err := s.commitOps(ctx, w)
		if err != nil {
			return err
		}
		if len(ops) > maxTxnOps {
			return fmt.Errorf("writing %s: %d operations are more than one Consul transaction takes (%d); serve fewer hostnames",
				w.Record.JobID, len(ops), maxTxnOps)
		}
		ok, resp, _, err := s.Client.Txn().Txn(ops, (&consul.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("writing %s: %w", w.Record.JobID, err)
		}
		if ok {
			return nil
		}
		for _, e := range resp.Errors {
			if e.OpIndex == recordOp {
				return ErrConflict
			}
		}
		if attempt == commitAttempts-1 {
			return errors.Join(fmt.Errorf("writing %s: the hostname claims kept changing", w.Record.JobID), txnErrors(resp))
		}
		// An overlapping claim (a wildcard over a name, or a name under a
		// wildcard) landed first: wait a random while, growing, so that
		// contenders take turns instead of colliding again at once.
		select {
		case <-ctx.Done():
			return fmt.Errorf("writing %s: %w", w.Record.JobID, ctx.Err())
		case <-time.After(commitBackoff(attempt, mrand.Float64())):
		}
	}
}

// commitAttempts is how many times Commit tries a transaction whose
// claims revision moved (about 20 s of backoff in all).
const commitAttempts = 40

// commitBackoff is the wait after failed attempt n (from 0): 10ms
// doubling up to 640ms, scaled by 0.5 + r (r in [0, 1)) so that
// contenders spread out.
func commitBackoff(n int, r float64) time.Duration {
	base := 10 * time.Millisecond << min(n, 6)
	return time.Duration(float64(base) * (0.5 + r))
}

// commitOps reads and builds the operations of w, and says which one
// writes the record.
func (s *ConsulStore) commitOps(ctx context.Context, w Write) (consul.TxnOps, int, error) {
	kv := s.Client.KV()
	q := (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx)
	owner := ownerOf(w.Record)
	ownerJSON, _ := json.Marshal(owner)
	var ops consul.TxnOps
	if len(w.Claim) > 0 {
		reads, err := readClaims(ctx, consulReader{kv}, w.Claim)
		if err != nil {
			return nil, 0, err
		}
		if ops, err = claimOps(owner, ownerJSON, reads); err != nil {
			return nil, 0, err
		}
	}
	for _, h := range w.Release {
		pair, _, err := kv.Get(kvHosts+hostKey(h), q)
		if err != nil {
			return nil, 0, fmt.Errorf("reading the claim on %s: %w", h, err)
		}
		var cur HostOwner
		if pair == nil || json.Unmarshal(pair.Value, &cur) != nil || !sameApp(cur, owner) {
			continue
		}
		ops = append(ops, &consul.TxnOp{KV: &consul.KVTxnOp{Verb: consul.KVDeleteCAS, Key: pair.Key, Index: pair.ModifyIndex}})
	}
	for _, v := range w.Versions {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, 0, err
		}
		ops = append(ops, &consul.TxnOp{KV: &consul.KVTxnOp{Verb: consul.KVSet, Key: versionKey(w.Record.JobID, w.Record.Generation, v.Version), Value: b}})
	}
	b, err := json.Marshal(w.Record)
	if err != nil {
		return nil, 0, err
	}
	recordOp := len(ops)
	ops = append(ops, &consul.TxnOp{KV: &consul.KVTxnOp{Verb: consul.KVCAS, Key: kvApps + w.Record.JobID + "/record", Value: b, Index: w.Index}})
	return ops, recordOp, nil
}

// HostClaims reads the keys overlapKeys names: the name's own, the
// wildcards above it and, for a wildcard, its base domain's folder.
func (s *ConsulStore) HostClaims(ctx context.Context, host string) ([]HostClaim, error) {
	reads, err := readClaims(ctx, consulReader{s.Client.KV()}, []string{host})
	if err != nil {
		return nil, err
	}
	return reads[0].claims()
}

func (s *ConsulStore) Domains(ctx context.Context) ([]DomainBinding, error) {
	pairs, _, err := s.Client.KV().List(kvDomains, (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("reading the domain bindings: %w", err)
	}
	var out []DomainBinding
	for _, p := range pairs {
		var b DomainBinding
		if err := json.Unmarshal(p.Value, &b); err != nil {
			return nil, fmt.Errorf("reading %s: %w", p.Key, err)
		}
		out = append(out, b)
	}
	return out, nil
}

func (s *ConsulStore) PutDomain(ctx context.Context, b DomainBinding) error {
	v, _ := json.Marshal(b)
	if _, err := s.Client.KV().Put(&consul.KVPair{Key: kvDomains + b.Domain, Value: v}, (&consul.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("binding %s: %w", b.Domain, err)
	}
	return nil
}

// Secret reads caravan/domain-secret, or creates it (create-only, so two
// servers starting at once agree on the one that won).
func (s *ConsulStore) Secret(ctx context.Context) ([]byte, error) {
	return s.createOnce(ctx, kvDomainSecret, "the domain secret")
}

// BundleKey reads caravan/bundle-key, or creates it (create-only, as
// Secret).
func (s *ConsulStore) BundleKey(ctx context.Context) ([]byte, error) {
	return s.createOnce(ctx, kvBundleKey, "the bundle key")
}

// createOnce reads key, or writes 32 random bytes there if it is absent
// (check-and-set on absence, so servers racing agree on the winner's).
func (s *ConsulStore) createOnce(ctx context.Context, key, what string) ([]byte, error) {
	kv := s.Client.KV()
	for {
		p, _, err := kv.Get(key, (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", what, err)
		}
		if p != nil {
			return p.Value, nil
		}
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
		ok, _, err := kv.CAS(&consul.KVPair{Key: key, Value: secret}, (&consul.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("writing %s: %w", what, err)
		}
		if ok {
			return secret, nil
		}
	}
}

// GrantBundle writes caravan/bundle-grants/<ws>/<id>.
func (s *ConsulStore) GrantBundle(ctx context.Context, ws, id string) error {
	_, err := s.Client.KV().Put(&consul.KVPair{Key: kvBundleGrants + ws + "/" + id, Value: []byte(time.Now().UTC().Format(time.RFC3339))},
		(&consul.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("recording workspace %s's bundle %s: %w", ws, id, err)
	}
	return nil
}

// BundleGranted reads caravan/bundle-grants/<ws>/<id>.
func (s *ConsulStore) BundleGranted(ctx context.Context, ws, id string) (bool, error) {
	p, _, err := s.Client.KV().Get(kvBundleGrants+ws+"/"+id, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("reading workspace %s's bundle %s: %w", ws, id, err)
	}
	return p != nil, nil
}
