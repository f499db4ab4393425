package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	consul "github.com/hashicorp/consul/api"
)

// memKV is Consul KV as claims use it: consistent reads, and transactions
// applied at once or not at all, every key they write taking the
// transaction's index.
type memKV struct {
	index uint64
	pairs map[string]*consul.KVPair
}

func newMemKV() *memKV { return &memKV{index: 100, pairs: map[string]*consul.KVPair{}} }

var _ kvReader = (*memKV)(nil)

func (m *memKV) get(_ context.Context, key string) (*consul.KVPair, error) {
	if p, ok := m.pairs[key]; ok {
		c := *p
		return &c, nil
	}
	return nil, nil
}

func (m *memKV) list(_ context.Context, prefix string) (consul.KVPairs, error) {
	var out consul.KVPairs
	for k, p := range m.pairs {
		if strings.HasPrefix(k, prefix) {
			c := *p
			out = append(out, &c)
		}
	}
	slices.SortFunc(out, func(a, b *consul.KVPair) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// txn applies ops, or nothing and the first failing op's reason.
func (m *memKV) txn(ops consul.TxnOps) error {
	next := map[string]*consul.KVPair{}
	deleted := map[string]bool{}
	cur := func(k string) *consul.KVPair {
		if deleted[k] {
			return nil
		}
		if p, ok := next[k]; ok {
			return p
		}
		return m.pairs[k]
	}
	index := m.index + 1
	for i, op := range ops {
		kv, p := op.KV, cur(op.KV.Key)
		fail := func(why string) error { return fmt.Errorf("op %d %s %s: %s", i, kv.Verb, kv.Key, why) }
		switch kv.Verb {
		case consul.KVCheckNotExists:
			if p != nil {
				return fail("exists")
			}
		case consul.KVCheckIndex:
			if p == nil || p.ModifyIndex != kv.Index {
				return fail("moved")
			}
		case consul.KVCAS:
			if (kv.Index == 0 && p != nil) || (kv.Index != 0 && (p == nil || p.ModifyIndex != kv.Index)) {
				return fail("cas")
			}
			next[kv.Key], deleted[kv.Key] = &consul.KVPair{Key: kv.Key, Value: kv.Value, ModifyIndex: index}, false
		case consul.KVSet:
			next[kv.Key], deleted[kv.Key] = &consul.KVPair{Key: kv.Key, Value: kv.Value, ModifyIndex: index}, false
		case consul.KVDeleteCAS:
			if p == nil || p.ModifyIndex != kv.Index {
				return fail("cas")
			}
			deleted[kv.Key] = true
			delete(next, kv.Key)
		default:
			return fail("verb not modelled")
		}
	}
	m.index = index
	for k := range deleted {
		delete(m.pairs, k)
	}
	for k, p := range next {
		m.pairs[k] = p
	}
	return nil
}

// claimant is one write claiming host for owner, read and committed as
// ConsulStore.Commit does, in steps a test interleaves.
type claimant struct {
	host  string
	owner HostOwner
	reads []claimRead
	err   error // a refusal (*HostTakenError) decided on a read
}

func (c *claimant) read(t *testing.T, kv *memKV) {
	var err error
	if c.reads, err = readClaims(context.Background(), kv, []string{c.host}); err != nil {
		t.Fatal(err)
	}
}

// commit tries the transaction of the last read; false: it failed (a
// claim it read moved) or was refused.
func (c *claimant) commit(kv *memKV) bool {
	value, _ := json.Marshal(c.owner)
	ops, err := claimOps(c.owner, value, c.reads)
	if err != nil {
		c.err = err
		return false
	}
	return kv.txn(ops) == nil
}

// claimed reports whether kv holds c's claim for c's app.
func (c *claimant) claimed(kv *memKV) bool {
	p := kv.pairs[kvHosts+hostKey(c.host)]
	if p == nil {
		return false
	}
	var o HostOwner
	_ = json.Unmarshal(p.Value, &o)
	return sameApp(o, c.owner)
}

// interleavings are the orders of two claimants' read (r) and commit (c)
// steps, each reading before it commits.
var interleavings = []string{"rArBcAcB", "rArBcBcA", "rAcArBcB", "rBcBrAcA", "rBrAcAcB", "rBrAcBcA"}

// run plays order on a fresh KV holding before, then lets each claimant
// whose commit failed read and commit again until it lands or is
// refused (as Commit retries). firstTry says whether each landed at its
// first commit.
func run(t *testing.T, order string, a, b claimant, before []HostClaim) (kv *memKV, ca, cb *claimant, firstTry [2]bool) {
	kv = newMemKV()
	for _, c := range before {
		v, _ := json.Marshal(c.Owner)
		if err := kv.txn(consul.TxnOps{{KV: &consul.KVTxnOp{Verb: consul.KVSet, Key: kvHosts + hostKey(c.Host), Value: v}}}); err != nil {
			t.Fatal(err)
		}
	}
	ca, cb = &a, &b
	who := map[byte]*claimant{'A': ca, 'B': cb}
	for i := 0; i < len(order); i += 2 {
		c := who[order[i+1]]
		if order[i] == 'r' {
			c.read(t, kv)
			continue
		}
		ok := c.commit(kv)
		firstTry[order[i+1]-'A'] = ok
		for tries := 0; !ok && c.err == nil; tries++ {
			if tries == 3 {
				t.Fatalf("%s: %s keeps failing to commit", order, c.host)
			}
			c.read(t, kv)
			ok = c.commit(kv)
		}
	}
	return kv, ca, cb, firstTry
}

// Two claims that overlap, of two workspaces, never both land, in any
// order of their reads and commits; the one refused is told so. Claims
// that cannot overlap land at their first commit whatever the order:
// no key is written by both.
func TestClaimsInEveryInterleaving(t *testing.T) {
	shop := HostOwner{JobID: "shop--web", Workspace: "shop", App: "web"}
	blog := HostOwner{JobID: "blog--web", Workspace: "blog", App: "web"}
	shop2 := HostOwner{JobID: "shop--api", Workspace: "shop", App: "api"}
	for _, c := range []struct {
		a, b    string
		bOwner  HostOwner
		before  []HostClaim
		overlap bool
	}{
		{"a.example.com", "a.example.com", blog, nil, true},
		{"*.example.com", "a.example.com", blog, nil, true},
		{"*.example.com", "x.y.example.com", blog, nil, true},
		{"*.example.com", "*.y.example.com", blog, nil, true},
		{"*.example.com", "*.example.com", blog, nil, true},
		{"*.com", "a.b.example.com", blog, nil, true},
		// A name under a wildcard its workspace holds, against another
		// workspace's wildcard over both.
		{"*.com", "a.b.example.com", blog, []HostClaim{{"*.example.com", blog}}, true},
		// Not overlapping: every deploy's generated names, siblings under
		// the platform domain.
		{"a.caravan.test", "b.caravan.test", blog, nil, false},
		{"a.example.com", "x.a.example.com", blog, nil, false},
		{"*.a.example.com", "b.example.com", blog, nil, false},
		{"*.a.example.com", "*.b.example.com", blog, nil, false},
		{"example.com", "*.example.com", blog, nil, false},
		// Overlapping within a workspace is allowed: both land.
		{"*.example.com", "a.example.com", shop2, nil, false},
		{"a.example.com", "b.example.com", shop2, []HostClaim{{"*.example.com", shop}}, false},
	} {
		for _, order := range interleavings {
			name := fmt.Sprintf("%s(shop) %s(%s) %s", c.a, c.b, c.bOwner.Workspace, order)
			kv, a, b, first := run(t, order, claimant{host: c.a, owner: shop}, claimant{host: c.b, owner: c.bOwner}, c.before)
			if c.overlap {
				if a.claimed(kv) && b.claimed(kv) {
					t.Errorf("%s: both claims landed", name)
				}
				if !a.claimed(kv) && !b.claimed(kv) {
					t.Errorf("%s: neither claim landed", name)
				}
				for _, x := range []*claimant{a, b} {
					if !x.claimed(kv) && !errors.As(x.err, new(*HostTakenError)) {
						t.Errorf("%s: %s refused with %v, want a *HostTakenError", name, x.host, x.err)
					}
				}
				continue
			}
			if !a.claimed(kv) || !b.claimed(kv) || a.err != nil || b.err != nil {
				t.Errorf("%s: landed %v and %v (%v, %v), want both", name, a.claimed(kv), b.claimed(kv), a.err, b.err)
			}
			if c.bOwner.Workspace != shop.Workspace && c.before == nil && first != [2]bool{true, true} {
				t.Errorf("%s: first commits landed %v, want both: claims that cannot overlap never fail each other", name, first)
			}
		}
	}
}

// What one claim's transaction checks and writes.
func TestClaimOps(t *testing.T) {
	shop := HostOwner{JobID: "shop--web", Workspace: "shop", App: "web"}
	op := func(o *consul.TxnOp) string {
		s := string(o.KV.Verb) + " " + strings.TrimPrefix(o.KV.Key, "caravan/")
		if o.KV.Verb == consul.KVCheckIndex {
			s += fmt.Sprintf("@%d", o.KV.Index)
		}
		return s
	}
	for _, c := range []struct {
		name   string
		hosts  []string
		before []string // keys present (index 101, 102, ...), shop's claims or revisions
		want   []string
	}{
		{"a name", []string{"a.caravan.test"}, nil, []string{
			"check-not-exists hostnames/test/caravan/*", "check-not-exists hostnames/test/*",
			"cas hostnames/test/caravan/a",
			"set hostnames-under/test/caravan", "set hostnames-under/test",
		}},
		{"two names share their parents' ops", []string{"a.caravan.test", "b.caravan.test"}, nil, []string{
			"check-not-exists hostnames/test/caravan/*", "check-not-exists hostnames/test/*",
			"cas hostnames/test/caravan/a", "cas hostnames/test/caravan/b",
			"set hostnames-under/test/caravan", "set hostnames-under/test",
		}},
		{"a name under the app's wildcard", []string{"a.example.com"}, []string{"hostnames/com/example/*"}, []string{
			"check-index hostnames/com/example/*@101", "check-not-exists hostnames/com/*",
			"cas hostnames/com/example/a",
			"set hostnames-under/com/example", "set hostnames-under/com",
		}},
		{"a wildcard", []string{"*.example.com"}, []string{"hostnames-under/com/example"}, []string{
			"check-not-exists hostnames/com/*", "check-index hostnames-under/com/example@101",
			"cas hostnames/com/example/*",
			"set hostnames-under/com",
		}},
		{"a wildcard and a name under it: the check before the bump", []string{"*.example.com", "a.example.com"}, nil, []string{
			"check-not-exists hostnames/com/*", "check-not-exists hostnames-under/com/example", "check-not-exists hostnames/com/example/*",
			"cas hostnames/com/example/*", "cas hostnames/com/example/a",
			"set hostnames-under/com", "set hostnames-under/com/example",
		}},
		{"a name held: nothing", []string{"a.example.com"}, []string{"hostnames/com/example/a"}, nil},
	} {
		kv := newMemKV()
		v, _ := json.Marshal(shop)
		for _, k := range c.before {
			if err := kv.txn(consul.TxnOps{{KV: &consul.KVTxnOp{Verb: consul.KVSet, Key: "caravan/" + k, Value: v}}}); err != nil {
				t.Fatal(err)
			}
		}
		reads, err := readClaims(context.Background(), kv, c.hosts)
		if err != nil {
			t.Fatal(err)
		}
		ops, err := claimOps(shop, v, reads)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var got []string
		for _, o := range ops {
			got = append(got, op(o))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}
