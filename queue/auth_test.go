package queue

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestGrant(t *testing.T) {
	g := Grant{Func: fn, Alloc: "0b8e-11"}
	cred, err := Mint("k", g)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := ParseGrant("k", cred); !ok || got != g {
		t.Fatalf("ParseGrant = %+v %v", got, ok)
	}
	body := strings.Split(cred, ".")[1]
	other, _ := Mint("k", Grant{Func: Func{Workspace: "other", AppJobID: fn.AppJobID, Name: fn.Name}, Alloc: g.Alloc})
	for name, c := range map[string]string{
		"another key":   mustMint(t, "k2", g),
		"no prefix":     strings.TrimPrefix(cred, grantPrefix),
		"body swapped":  grantPrefix + strings.Split(other, ".")[1] + "." + strings.Split(cred, ".")[2],
		"no signature":  grantPrefix + body,
		"the admin one": "k",
	} {
		if _, ok := ParseGrant("k", c); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Mint("k", Grant{Func: Func{Workspace: "a.b", AppJobID: "x", Name: "y"}, Alloc: "z"}); err == nil {
		t.Error("a workspace with a dot minted")
	}
}

func mustMint(t *testing.T, key string, g Grant) string {
	t.Helper()
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
