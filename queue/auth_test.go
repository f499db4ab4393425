package queue

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// now is the test clock of the grants' pure tests.
var now = time.Unix(1_800_000_000, 0)

func TestGrant(t *testing.T) {
	g := Grant{Func: fn, Alloc: "0b8e-11", Exp: now.Add(time.Hour).Unix()}
	cred, err := Mint("k", g)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParseGrant("k", cred, now); err != nil || got != g {
		t.Fatalf("ParseGrant = %+v %v", got, err)
	}
	body := strings.Split(cred, ".")[1]
	other := mustMint(t, "k", Grant{Func: Func{Workspace: "other", AppJobID: fn.AppJobID, Name: fn.Name}, Alloc: g.Alloc, Exp: g.Exp})
	later := mustMint(t, "k", Grant{Func: g.Func, Alloc: g.Alloc, Exp: g.Exp + 3600})
	// The format before expiry: the same grant without exp, under cw1.
	old, _ := json.Marshal(struct {
		Func
		Alloc string `json:"alloc"`
	}{fn, g.Alloc})
	oldBody := base64.RawURLEncoding.EncodeToString(old)
	for _, tc := range []struct {
		name, cred string
		want       error
	}{
		{"another key", mustMint(t, "k2", g), ErrBadCredential},
		{"no prefix", strings.TrimPrefix(cred, grantPrefix), ErrBadCredential},
		{"body swapped", grantPrefix + strings.Split(other, ".")[1] + "." + strings.Split(cred, ".")[2], ErrBadCredential},
		{"expiry extended", grantPrefix + strings.Split(later, ".")[1] + "." + strings.Split(cred, ".")[2], ErrBadCredential},
		{"no signature", grantPrefix + body, ErrBadCredential},
		{"the admin one", "k", ErrBadCredential},
		{"the old format", "cw1." + oldBody + "." + grantSig("k", oldBody), ErrBadCredential},
		{"the old format under the new prefix", grantPrefix + oldBody + "." + grantSig("k", oldBody), ErrBadCredential},
		{"empty", "", ErrBadCredential},
	} {
		if _, err := ParseGrant("k", tc.cred, now); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := Mint("k", Grant{Func: Func{Workspace: "a.b", AppJobID: "x", Name: "y"}, Alloc: "z", Exp: g.Exp}); err == nil {
		t.Error("a workspace with a dot minted")
	}
	if _, err := Mint("k", Grant{Func: fn, Alloc: "z"}); err == nil {
		t.Error("a grant without an expiry minted")
	}
}

// TestGrantExpiry: a grant is good before its exp second and refused
// from it on, through ParseGrant as through the embedded server's check.
func TestGrantExpiry(t *testing.T) {
	exp := now.Unix()
	for _, tc := range []struct {
		name string
		exp  int64
		at   time.Time
		want error
	}{
		{"long before", exp, now.Add(-time.Hour), nil},
		{"a nanosecond before", exp, now.Add(-time.Nanosecond), nil},
		{"at exp", exp, now, ErrCredentialExpired},
		{"after", exp, now.Add(time.Second), ErrCredentialExpired},
		{"a day after", exp, now.Add(24 * time.Hour), ErrCredentialExpired},
		{"no expiry", 0, now, ErrBadCredential},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := Grant{Func: fn, Alloc: "a1", Exp: tc.exp}
			if got := g.Expired(tc.at); got != (tc.want != nil) {
				t.Errorf("Expired = %v", got)
			}
			b, _ := json.Marshal(g)
			body := base64.RawURLEncoding.EncodeToString(b)
			cred := grantPrefix + body + "." + grantSig("k", body)
			if _, err := ParseGrant("k", cred, tc.at); !errors.Is(err, tc.want) {
				t.Errorf("ParseGrant: %v, want %v", err, tc.want)
			}
			c := &fakeClientAuth{token: cred}
			if ok := (Authenticator{Token: "k", Now: func() time.Time { return tc.at }}).Check(c); ok != (tc.want == nil) {
				t.Errorf("Check = %v", ok)
			}
			if tc.want == nil && (c.user == nil || !c.user.ConnectionDeadline.Equal(time.Unix(tc.exp, 0))) {
				t.Errorf("registered %+v, want a deadline at exp", c.user)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	for _, tc := range []struct {
		at       time.Time
		lifetime time.Duration
		want     int64
	}{
		{now, time.Hour, now.Unix() + 3600},
		{now.Add(time.Millisecond), time.Hour, now.Unix() + 3601},
		{now.Add(999 * time.Millisecond), 2 * time.Second, now.Unix() + 3},
		{now.Add(-time.Nanosecond), time.Second, now.Unix() + 1},
	} {
		if got := Expiry(tc.at, tc.lifetime); got != tc.want {
			t.Errorf("Expiry(%s, %s) = %d, want %d", tc.at, tc.lifetime, got, tc.want)
		}
		if g := (Grant{Exp: Expiry(tc.at, tc.lifetime)}); g.Expired(tc.at.Add(tc.lifetime - time.Nanosecond)) {
			t.Errorf("Expiry(%s, %s): valid less than its lifetime", tc.at, tc.lifetime)
		}
	}
}

// fakeClientAuth is a connection as the embedded server's check sees it.
type fakeClientAuth struct {
	token string
	user  *server.User
}

func (c *fakeClientAuth) GetOpts() *server.ClientOpts                 { return &server.ClientOpts{Token: c.token} }
func (c *fakeClientAuth) GetTLSConnectionState() *tls.ConnectionState { return nil }
func (c *fakeClientAuth) RegisterUser(u *server.User)                 { c.user = u }
func (c *fakeClientAuth) RemoteAddress() net.Addr                     { return nil }
func (c *fakeClientAuth) GetNonce() []byte                            { return nil }
func (c *fakeClientAuth) Kind() int                                   { return server.CLIENT }
func (c *fakeClientAuth) GetID() uint64                               { return 1 }

func mustMint(t *testing.T, key string, g Grant) string {
	t.Helper()
	if g.Exp == 0 {
		g.Exp = Expiry(time.Now(), time.Hour)
	}
	c, err := Mint(key, g)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// violations connects as a worker of f and records the permission
// violations the server reports to it.
type violations struct {
	q  *Queue
	mu sync.Mutex
	s  []string
}

func workerWithViolations(t *testing.T, url string, f Func) *violations {
	t.Helper()
	v := &violations{}
	g := Grant{Func: f, Alloc: "alloc-" + f.Workspace}
	nc, err := nats.Connect(url, nats.Token(mustMint(t, testToken, g)), nats.CustomInboxPrefix(g.InboxPrefix()),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			v.mu.Lock()
			v.s = append(v.s, err.Error())
			v.mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	v.q = &Queue{nc: nc, js: js, ensured: map[Func]FuncConfig{}, objects: map[string]jetstream.ObjectStore{}}
	return v
}

// denied runs op, which must fail, and waits for the server's report of
// a permission violation naming subject.
func (v *violations) denied(t *testing.T, what, subject string, op func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := op(ctx); err == nil {
		t.Errorf("%s: allowed", what)
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		v.mu.Lock()
		for _, s := range v.s {
			if strings.Contains(strings.ToLower(s), "permissions violation") && strings.Contains(s, subject) {
				v.mu.Unlock()
				return
			}
		}
		v.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("%s: failed, but the server reported no permission violation on %s (got %q)", what, subject, v.s)
}

// TestWorkerIsolation: a worker credential of workspace A's function
// reaches nothing of workspace B's: not its stream, call records,
// objects, results or cancellations, nor caravan server's replies.
func TestWorkerIsolation(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	ctx := deadline(t)
	a := Func{Workspace: "wsa", AppJobID: "wsa--app", Name: "echo"}
	b := Func{Workspace: "wsb", AppJobID: "wsb--app", Name: "echo"}
	for _, f := range []Func{a, b} {
		if err := q.Ensure(ctx, f, FuncConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	// B has a spawned call with a large input waiting, and a finished one.
	queued, done := NewID(), NewID()
	if err := q.Submit(ctx, b, queued, make([]byte, InlineLimit+1), true); err != nil {
		t.Fatal(err)
	}
	if err := q.Submit(ctx, b, done, []byte(`"b"`), true); err != nil {
		t.Fatal(err)
	}
	bw := connectWorkerOf(t, e.URL(), b)
	rec := &Record{ID: done, State: Done, Result: nil}
	if err := bw.sendResult(ctx, b, rec); err != nil {
		t.Fatalf("B's own worker storing B's result: %v", err)
	}

	v := workerWithViolations(t, e.URL(), a)
	// A's own consumer is reachable (a control: the credential works).
	if _, err := v.q.js.Consumer(ctx, a.Stream(), ConsumerName); err != nil {
		t.Fatalf("A's worker reading its own consumer: %v", err)
	}
	v.denied(t, "pulling B's stream", "$JS.API.CONSUMER.MSG.NEXT."+b.Stream(), func(ctx context.Context) error {
		_, err := v.q.nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT."+b.Stream()+"."+ConsumerName, []byte(`{"batch":1,"expires":500000000}`))
		return err
	})
	v.denied(t, "binding B's consumer", "$JS.API.CONSUMER.INFO."+b.Stream(), func(ctx context.Context) error {
		_, err := v.q.js.Consumer(ctx, b.Stream(), ConsumerName)
		return err
	})
	v.denied(t, "making a consumer on B's stream", "$JS.API.CONSUMER.CREATE."+b.Stream(), func(ctx context.Context) error {
		_, err := v.q.js.CreateOrUpdateConsumer(ctx, b.Stream(), jetstream.ConsumerConfig{Durable: "thief"})
		return err
	})
	v.denied(t, "changing B's stream", "$JS.API.STREAM.UPDATE."+b.Stream(), func(ctx context.Context) error {
		_, err := v.q.js.UpdateStream(ctx, jetstream.StreamConfig{Name: b.Stream(), Subjects: []string{"caravan.calls.>"}})
		return err
	})
	v.denied(t, "reading call records", "$JS.API.STREAM.INFO.KV_"+ResultsBucket, func(ctx context.Context) error {
		_, err := v.q.js.KeyValue(ctx, ResultsBucket)
		return err
	})
	v.denied(t, "getting B's call record", "$JS.API.DIRECT.GET.KV_"+ResultsBucket, func(ctx context.Context) error {
		_, err := v.q.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_"+ResultsBucket+".$KV."+ResultsBucket+"."+done, nil)
		return err
	})
	v.denied(t, "writing B's call record", "$KV."+ResultsBucket, func(ctx context.Context) error {
		_, err := v.q.nc.RequestWithContext(ctx, "$KV."+ResultsBucket+"."+done, []byte(`{}`))
		return err
	})
	v.denied(t, "reading B's inputs", "$JS.API.STREAM.INFO.OBJ_"+b.InputsBucket(), func(ctx context.Context) error {
		_, err := v.q.objectStore(ctx, b.InputsBucket(), false)
		return err
	})
	v.denied(t, "writing B's outputs", "$O."+b.OutputsBucket(), func(ctx context.Context) error {
		_, err := v.q.nc.RequestWithContext(ctx, "$O."+b.OutputsBucket()+".C.x", []byte("forged"))
		return err
	})
	v.denied(t, "publishing B's results", resultsSubject(b), func(ctx context.Context) error {
		return v.q.sendResult(ctx, b, &Record{ID: queued, State: Done})
	})
	v.denied(t, "asking B's call states", statusSubject(b), func(ctx context.Context) error {
		_, err := v.q.nc.RequestWithContext(ctx, statusSubject(b), []byte(done))
		return err
	})
	for _, s := range []string{"caravan.done.>", stopSubject(b, "*"), "_INBOX.>", "$KV.>", ">"} {
		v.denied(t, "subscribing to "+s, s, func(ctx context.Context) error {
			sub, err := v.q.nc.SubscribeSync(s)
			if err != nil {
				return err
			}
			if err := v.q.nc.FlushWithContext(ctx); err != nil {
				return err
			}
			// The server refuses it asynchronously: wait for its report.
			_, err = sub.NextMsgWithContext(ctx)
			return err
		})
	}

	// Through its own subjects, A gets no further: caravan server
	// refuses a result for B's call and answers no state of it.
	ctx = deadline(t)
	if err := v.q.sendResult(ctx, a, &Record{ID: queued, State: Done}); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("A's result for B's call: %v, want refused", err)
	}
	if s := v.q.callState(ctx, a, done); s != "" {
		t.Errorf("A asking B's call's state through its own subject: %q", s)
	}
	got, err := q.Get(ctx, queued)
	if err != nil || got.State != Queued || got.Workspace != b.Workspace {
		t.Fatalf("B's queued call after A's tries: %+v %v", got, err)
	}
	got, err = q.Get(ctx, done)
	if err != nil || got.State != Done {
		t.Fatalf("B's done call after A's tries: %+v %v", got, err)
	}
	raw, _ := json.Marshal(got)
	if strings.Contains(string(raw), "forged") {
		t.Fatalf("B's record changed: %s", raw)
	}
}

// TestInputInjection: a worker of A can have JetStream deliver A's own
// input on B's input subject (its pull request's reply subject), and B's
// stream takes it; B's worker does not run it, for it carries no
// signature of B's.
func TestInputInjection(t *testing.T) {
	e, _ := testNATS(t, "")
	q := connect(t, e.URL())
	ctx := deadline(t)
	a := Func{Workspace: "wsa", AppJobID: "wsa--app", Name: "echo"}
	b := Func{Workspace: "wsb", AppJobID: "wsb--app", Name: "echo"}
	for _, f := range []Func{a, b} {
		if err := q.Ensure(ctx, f, FuncConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Submit(ctx, a, NewID(), []byte(`"rm -rf"`), false); err != nil {
		t.Fatal(err)
	}
	v := workerWithViolations(t, e.URL(), a)
	if err := v.q.nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+a.Stream()+"."+ConsumerName, b.Subject(), []byte(`{"batch":1}`)); err != nil {
		t.Fatal(err)
	}
	for n := 0; n == 0; {
		if ctx.Err() != nil {
			t.Fatal("A's input never reached B's stream: the test shows nothing")
		}
		n, _ = q.Depth(ctx, b)
		time.Sleep(20 * time.Millisecond)
	}
	ran := make(chan string, 1)
	w := &Worker{Q: connectWorkerOf(t, e.URL(), b), Func: b, MaxInputs: 1, InputKey: InputKey(testToken, b),
		Run: func(_ context.Context, _ string, in []byte) *api.CallResult {
			ran <- string(in)
			return &api.CallResult{}
		}}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = w.Serve(wctx, time.Second) }()
	for n := 1; n > 0; {
		select {
		case in := <-ran:
			t.Fatalf("B's worker ran A's injected input %s", in)
		case <-ctx.Done():
			t.Fatal("B's worker never dropped the injected input")
		case <-time.After(20 * time.Millisecond):
		}
		n, _ = q.Depth(ctx, b)
	}
}
