package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	consul "github.com/hashicorp/consul/api"
)

// This file holds how ConsulStore claims hostnames in Consul KV without a
// key every claim writes: what a claim reads (readClaims), and the pure
// decision of what its transaction checks and writes (claimOps), which a
// test runs against an in-memory KV in every interleaving of two claims.
//
// Two claims overlap when they are the same name (they share its key: the
// second create fails) or when one is a wildcard over the other (they
// share no key). For the second kind every claim, in the transaction that
// creates its key,
//
//   - checks each wildcard key above it where it read it: absent
//     (check-not-exists) or at the index it read (check-index), so a
//     wildcard over it created after its read fails it;
//   - bumps the "under" revision of each of those wildcards' base domains
//     (caravan/hostnames-under/<base, labels reversed>), so a wildcard
//     claim that read its subtree before this claim landed fails;
//
// and a wildcard claim checks its own base's under revision at the index
// it read with its subtree. Whichever of two overlapping claims commits
// second fails its check, reads again and sees the first. Claims that
// cannot overlap (two names, whatever their parents) check only keys
// nobody writes and bump revisions with a plain set, so they never fail
// each other: the deploys of many servers claim at once.

// kvHostsUnder is the folder of the under revisions.
const kvHostsUnder = "caravan/hostnames-under/"

// kvReader is what reading claims takes of Consul KV (consistent reads).
type kvReader interface {
	get(ctx context.Context, key string) (*consul.KVPair, error)
	list(ctx context.Context, prefix string) (consul.KVPairs, error)
}

// consulReader reads kv with consistent reads.
type consulReader struct{ kv *consul.KV }

func (r consulReader) get(ctx context.Context, key string) (*consul.KVPair, error) {
	p, _, err := r.kv.Get(key, (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	return p, err
}

func (r consulReader) list(ctx context.Context, prefix string) (consul.KVPairs, error) {
	ps, _, err := r.kv.List(prefix, (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	return ps, err
}

// claimRead is what was read for a claim on one host.
type claimRead struct {
	host string
	// keys are the pairs of overlapKeys(host) (nil: absent), in its
	// order: the host's own key first, then the wildcard at each parent.
	keys []*consul.KVPair
	// subtree are the claims under a wildcard's base domain, and under
	// the base's under revision (nil: absent); both empty for a name.
	subtree consul.KVPairs
	under   *consul.KVPair
}

// readClaims reads what claiming hosts needs (see claimRead): the under
// revision before the subtree, so that a claim landing between the two
// reads moves the revision read.
func readClaims(ctx context.Context, r kvReader, hosts []string) ([]claimRead, error) {
	var out []claimRead
	// Hosts of one app share parents: each key is read once.
	read := map[string]*consul.KVPair{}
	get := func(key string) (*consul.KVPair, error) {
		if p, ok := read[key]; ok {
			return p, nil
		}
		p, err := r.get(ctx, key)
		if err == nil {
			read[key] = p
		}
		return p, err
	}
	for _, h := range hosts {
		cr := claimRead{host: h}
		keys, subtree := overlapKeys(h)
		if subtree != "" {
			base, _ := wildcardBase(h)
			p, err := get(underKey(base))
			if err != nil {
				return nil, fmt.Errorf("reading the claims under %s: %w", h, err)
			}
			cr.under = p
		}
		for _, k := range keys {
			p, err := get(kvHosts + k)
			if err != nil {
				return nil, fmt.Errorf("reading the claims on %s: %w", h, err)
			}
			cr.keys = append(cr.keys, p)
		}
		if subtree != "" {
			ps, err := r.list(ctx, kvHosts+subtree)
			if err != nil {
				return nil, fmt.Errorf("reading the claims under %s: %w", h, err)
			}
			cr.subtree = ps
		}
		out = append(out, cr)
	}
	return out, nil
}

// underKey is the key of the under revision of domain.
func underKey(domain string) string { return kvHostsUnder + hostKey(domain) }

// claims are the claims r found that overlap its host.
func (r claimRead) claims() ([]HostClaim, error) {
	var out []HostClaim
	for _, p := range append(slices.Clip(r.keys), r.subtree...) {
		if p == nil {
			continue
		}
		var owner HostOwner
		if err := json.Unmarshal(p.Value, &owner); err != nil {
			return nil, fmt.Errorf("reading the claim %s: %w", p.Key, err)
		}
		c := HostClaim{Host: keyHost(strings.TrimPrefix(p.Key, kvHosts)), Owner: owner}
		if overlaps(r.host, c.Host) && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// claimOps decides the claims of owner on what reads found: a
// *HostTakenError when another app's claim is in the way (claimConflict),
// else the operations that claim every host the app does not hold yet
// and fail the transaction if anything a decision read has moved (see
// the top of this file). A host the app holds needs nothing: it is
// there. The checks come first, then the creates, then the bumps, so a
// write that both claims a wildcard and a name under it checks the
// revision it bumps before bumping it; operations shared by several
// hosts (their common parents') are written once. value is owner's JSON.
func claimOps(owner HostOwner, value []byte, reads []claimRead) (consul.TxnOps, error) {
	var checks, creates, bumps consul.TxnOps
	seen := map[string]bool{}
	add := func(to *consul.TxnOps, op *consul.KVTxnOp) {
		if id := string(op.Verb) + " " + op.Key; !seen[id] {
			seen[id] = true
			*to = append(*to, &consul.TxnOp{KV: op})
		}
	}
	for _, r := range reads {
		claims, err := r.claims()
		if err != nil {
			return nil, err
		}
		if taken := claimConflict(r.host, owner, claims); taken != nil {
			return nil, taken
		}
		if r.keys[0] != nil {
			continue // held: claimConflict let it through, so it is owner's
		}
		// Index 0: create only.
		add(&creates, &consul.KVTxnOp{Verb: consul.KVCAS, Key: kvHosts + hostKey(r.host), Value: value})
		keys, _ := overlapKeys(r.host)
		for i, k := range keys[1:] {
			if p := r.keys[i+1]; p != nil {
				add(&checks, &consul.KVTxnOp{Verb: consul.KVCheckIndex, Key: p.Key, Index: p.ModifyIndex})
			} else {
				add(&checks, &consul.KVTxnOp{Verb: consul.KVCheckNotExists, Key: kvHosts + k})
			}
			base, _ := wildcardBase(keyHost(k))
			add(&bumps, &consul.KVTxnOp{Verb: consul.KVSet, Key: underKey(base), Value: []byte(owner.JobID)})
		}
		if base, wildcard := wildcardBase(r.host); wildcard {
			if r.under == nil {
				add(&checks, &consul.KVTxnOp{Verb: consul.KVCheckNotExists, Key: underKey(base)})
			} else {
				add(&checks, &consul.KVTxnOp{Verb: consul.KVCheckIndex, Key: underKey(base), Index: r.under.ModifyIndex})
			}
		}
	}
	return slices.Concat(checks, creates, bumps), nil
}
