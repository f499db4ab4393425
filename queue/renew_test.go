package queue

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/nats-io/nats.go"
)

func TestRenewDelay(t *testing.T) {
	for _, tc := range []struct {
		validFor time.Duration
		failures int
		want     time.Duration
	}{
		{time.Hour, 0, 30 * time.Minute},
		{time.Hour, 1, time.Second},
		{time.Hour, 2, 2 * time.Second},
		{time.Hour, 5, 16 * time.Second},
		{time.Hour, 6, 30 * time.Second},
		{time.Hour, 60, 30 * time.Second},
		// A short life gets tries an eighth of it apart.
		{2 * time.Second, 0, time.Second},
		{2 * time.Second, 1, 250 * time.Millisecond},
		{2 * time.Second, 9, 250 * time.Millisecond},
		{400 * time.Millisecond, 3, 100 * time.Millisecond},
		{time.Minute, 4, 7500 * time.Millisecond},
	} {
		if got := renewDelay(tc.validFor, tc.failures); got != tc.want {
			t.Errorf("renewDelay(%s, %d) = %s, want %s", tc.validFor, tc.failures, got, tc.want)
		}
	}
}

// minter mints credentials of fn's worker valid for lifetime, as the
// agent endpoint does, counting them; while refuse is set it refuses.
type minter struct {
	lifetime time.Duration
	refuse   atomic.Bool
	n        atomic.Int32
}

func (m *minter) grant() Grant { return Grant{Func: fn, Alloc: "alloc-renew"} }

func (m *minter) fetch(ctx context.Context) (Credential, error) {
	if m.refuse.Load() {
		return Credential{}, errors.New("403 Forbidden: allocation alloc-renew is complete")
	}
	now := time.Now()
	g := m.grant()
	g.Exp = Expiry(now, m.lifetime)
	cred, err := Mint(testToken, g)
	if err != nil {
		return Credential{}, err
	}
	m.n.Add(1)
	return Credential{Token: cred, ValidFor: g.Expires().Sub(now)}, nil
}

// TestExpiredCredentialRefused: the embedded server refuses an expired
// credential at connect, and a fresh one of the same grant connects.
func TestExpiredCredentialRefused(t *testing.T) {
	e, _ := testNATS(t, "")
	g := Grant{Func: fn, Alloc: "alloc-old", Exp: time.Now().Add(-time.Second).Unix()}
	_, err := ConnectWorker(Config{URL: e.URL(), Token: mustMint(t, testToken, g), InboxPrefix: g.InboxPrefix()})
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("an expired credential: %v, want an authorization violation", err)
	}
	g.Exp = Expiry(time.Now(), time.Minute)
	q, err := ConnectWorker(Config{URL: e.URL(), Token: mustMint(t, testToken, g), InboxPrefix: g.InboxPrefix()})
	if err != nil {
		t.Fatalf("a fresh credential: %v", err)
	}
	q.nc.Close()
}

// TestExpiredConnectionClosed: a connection whose credential expires,
// not renewed, is closed by the server, and may not come back with it.
func TestExpiredConnectionClosed(t *testing.T) {
	e, _ := testNATS(t, "")
	m := &minter{lifetime: 2 * time.Second}
	c, err := m.fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var errs []error
	nc, err := nats.Connect(e.URL(), nats.Token(c.Token), nats.CustomInboxPrefix(m.grant().InboxPrefix()),
		nats.ReconnectWait(100*time.Millisecond), nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// A control: it works while the credential does.
	if _, err := nc.Subscribe(m.grant().InboxPrefix()+".x", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// nats.go gives up on a second refusal in a row: the connection ends
	// closed, having been told its credential expired.
	ctx := deadline(t)
	for !nc.IsClosed() {
		if ctx.Err() != nil {
			t.Fatalf("the connection is %s past its credential's expiry", nc.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	expired := false
	for _, err := range errs {
		expired = expired || errors.Is(err, nats.ErrAuthExpired)
	}
	if !expired || !errors.Is(nc.LastError(), nats.ErrAuthorization) {
		t.Fatalf("errors %v, last %v: want the server's expiry, then refusals", errs, nc.LastError())
	}
}

// TestRenewal: a worker whose credential lives 2 s renews it, reconnects
// with each fresh one and keeps taking inputs (large ones too) for
// several lifetimes, every one answered;
// once renewals are refused, its connection dies with the last one.
func TestRenewal(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	// A delivery in flight to the connection a reconnect drops is lost
	// (as with any NATS reconnect): JetStream delivers it again after the
	// lease, which is short here.
	cfg := FuncConfig{AckWait: 2 * time.Second}
	if err := q.Ensure(deadline(t), fn, cfg); err != nil {
		t.Fatal(err)
	}
	m := &minter{lifetime: 2 * time.Second}
	start := time.Now()
	c, err := m.fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r := NewRenewer(c, start, m.fetch)
	wq, err := ConnectWorker(Config{URL: e.URL(), TokenFunc: r.Token, InboxPrefix: m.grant().InboxPrefix(), Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wq.nc.Close)
	r.Renewed = func() { _ = wq.Reconnect() }
	rctx, stopRenewing := context.WithCancel(context.Background())
	defer stopRenewing()
	go r.Run(rctx)
	var ran atomic.Int32
	startWorker(t, wq, cfg, 2, func(_ context.Context, _ string, in []byte) *api.CallResult {
		ran.Add(1)
		return &api.CallResult{Output: string(in)}
	})
	calls, retried := 0, 0
	var slowest time.Duration
	for time.Since(start) < 3*m.lifetime+time.Second {
		// Every fifth input and its output pass through the object
		// stores.
		input := `1`
		if calls%5 == 4 {
			input = `"` + strings.Repeat("x", InlineLimit) + `"`
		}
		began := time.Now()
		rec := call(t, q, []byte(input))
		slowest = max(slowest, time.Since(began))
		if rec.State != Done || rec.Result.Output != input {
			t.Fatalf("call %d at %s: %+v %.200v", calls, time.Since(start), rec, rec.Result)
		}
		if rec.Attempts > 1 {
			retried++
		}
		calls++
		time.Sleep(20 * time.Millisecond)
	}
	if m.n.Load() < 4 || wq.nc.Stats().Reconnects < 3 {
		t.Fatalf("%d credentials minted, %d reconnects in %s: want a renewal and a reconnect each half lifetime", m.n.Load(), wq.nc.Stats().Reconnects, time.Since(start))
	}
	t.Logf("%d calls over %s, %d credentials, %d reconnects, %d calls delivered more than once, the slowest took %s", calls, time.Since(start).Round(time.Millisecond), m.n.Load(), wq.nc.Stats().Reconnects, retried, slowest)

	// Renewal refused (the allocation stopped): the last credential
	// expires, the server closes the connection, and reconnecting with it
	// is refused; inputs wait for another worker.
	m.refuse.Store(true)
	expires := r.Expires()
	ctx := deadline(t)
	for time.Now().Before(expires) || wq.nc.IsConnected() {
		if ctx.Err() != nil {
			t.Fatalf("the worker is %s past its credential's expiry", wq.nc.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := ran.Load()
	id := NewID()
	if err := q.Submit(ctx, fn, id, []byte(`2`), true); err != nil {
		t.Fatal(err)
	}
	// The worker stays out: it never reconnects with the expired
	// credential. (Poll a while: the claim is an absence.)
	for range 20 {
		if wq.nc.IsConnected() || ran.Load() != before {
			t.Fatalf("the worker came back with an expired credential (%s, ran %d)", wq.nc.Status(), ran.Load()-before)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Renewal works again: the worker comes back and takes the input.
	m.refuse.Store(false)
	back := time.Now()
	rec, err := q.Wait(ctx, id)
	t.Logf("taken %s after renewal came back", time.Since(back))
	if err != nil || rec.State != Done {
		t.Fatalf("after renewal came back: %+v %v", rec, err)
	}
}
