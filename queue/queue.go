package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Config says how to reach NATS.
type Config struct {
	URL string
	// Token, or CredsFile (a NATS .creds file), authenticates.
	Token     string
	CredsFile string
	// TokenFunc, when set instead of Token, gives the token at each
	// (re)connect: a worker's current credential (Renewer.Token).
	TokenFunc func() string
	// CAFile verifies the server's TLS certificate; CertFile and KeyFile
	// are a client certificate. All optional.
	CAFile, CertFile, KeyFile string
	// Name is the connection's name as NATS monitoring shows it.
	Name string
	// InboxPrefix replaces _INBOX for the connection's replies: a worker's
	// credential lets it listen on its own prefix only (Grant).
	InboxPrefix string
	// Replicas is how many JetStream servers of a cluster keep each
	// stream, bucket and object store caravan server makes (0: 1). An
	// external cluster of three needs 3 to lose a server and nothing
	// stored (CheckReplicas).
	Replicas int
}

// MaxReplicas is the most copies JetStream keeps of a stream.
const MaxReplicas = 5

// CheckReplicas says whether n copies can be asked of JetStream: 1 to
// MaxReplicas, and 1 only of the embedded server (a cluster of one).
func CheckReplicas(n int, external bool) error {
	switch {
	case n < 1 || n > MaxReplicas:
		return fmt.Errorf("%d replicas: JetStream keeps 1 to %d copies of a stream", n, MaxReplicas)
	case n > 1 && !external:
		return fmt.Errorf("%d replicas: the embedded NATS is one server, which keeps 1; give --nats-url a JetStream cluster", n)
	}
	return nil
}

// ErrNotFound is a call ID with no record, and ErrExpired one whose
// record is gone because it is older than Retention.
var (
	ErrNotFound = errors.New("no such call")
	ErrExpired  = errors.New("the call's result expired: results are kept 7 days")
)

// missing is ErrExpired for an ID older than Retention, else ErrNotFound.
func missing(id string, now time.Time) error {
	if t, ok := IDTime(id); ok && now.Sub(t) > Retention {
		return ErrExpired
	}
	return ErrNotFound
}

// IDTime is when call id was made (IDs start with the millisecond).
func IDTime(id string) (time.Time, bool) {
	if len(id) < 12 || id[0] != 'c' {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(id[1:12], 16, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// Queue is caravan's view of JetStream: calls in, results out.
type Queue struct {
	nc *nats.Conn
	js jetstream.JetStream
	// results is nil on a worker's connection (ConnectWorker): caravan
	// server stores results for it.
	results jetstream.KeyValue

	mu      sync.Mutex
	ensured map[Func]FuncConfig
	// objects are the functions' object stores by bucket, as bound.
	objects map[string]jetstream.ObjectStore
	// admin is the token inputs are signed under (InputKey); empty signs
	// none.
	admin string
	// replicas of what Ensure and Connect make (Config.Replicas).
	replicas int
}

// sign adds its signature to msg, an input of f.
func (q *Queue) sign(f Func, msg *nats.Msg) {
	if q.admin != "" {
		msg.Header.Set(hdrSig, inputSig(InputKey(q.admin, f), msg.Header.Get(hdrCall), msg.Data, msg.Header.Get(hdrInputRef)))
	}
}

// FuncConfig is how a function's stream and consumer behave.
type FuncConfig struct {
	AckWait     time.Duration
	MaxAttempts int
}

func (c FuncConfig) withDefaults() FuncConfig {
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	return c
}

// Connect connects caravan server to NATS, makes sure the call records'
// bucket exists, and answers workers' requests to store their results
// (serveResults, results.go).
func Connect(ctx context.Context, cfg Config) (*Queue, error) {
	nc, err := dial(cfg)
	if err != nil {
		return nil, err
	}
	q, err := open(ctx, nc, max(cfg.Replicas, 1))
	if err == nil {
		q.admin = cfg.Token
		err = q.serveResults()
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return q, nil
}

// ConnectWorker connects a worker with its credential (cfg.Token, minted
// for its function: Grant; cfg.InboxPrefix the grant's). It makes
// nothing and touches no bucket until it needs one.
//
// A worker's connection does not give up on a refused credential (one
// that expired before its renewal came): it reconnects until the
// credential it presents is good again, or it is closed.
func ConnectWorker(cfg Config) (*Queue, error) {
	nc, err := dial(cfg, nats.IgnoreAuthErrorAbort())
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &Queue{nc: nc, js: js, ensured: map[Func]FuncConfig{}, objects: map[string]jetstream.ObjectStore{}}, nil
}

func dial(cfg Config, extra ...nats.Option) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.Name(cfg.Name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}, extra...)
	if cfg.TokenFunc != nil {
		opts = append(opts, nats.TokenHandler(cfg.TokenFunc))
	} else if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", cfg.URL, err)
	}
	return nc, nil
}

// open makes sure the call records' bucket exists, kept by replicas
// servers.
func open(ctx context.Context, nc *nats.Conn, replicas int) (*Queue, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	q := &Queue{nc: nc, js: js, ensured: map[Func]FuncConfig{}, objects: map[string]jetstream.ObjectStore{}, replicas: replicas}
	q.results, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: ResultsBucket, Description: "caravan calls: records and results", TTL: Retention,
		Storage: jetstream.FileStorage, History: 1, MaxValueSize: InlineLimit + 64<<10, Replicas: replicas})
	if err != nil {
		return nil, fmt.Errorf("JetStream KV %s: %w", ResultsBucket, err)
	}
	return q, nil
}

// objectStore is the object store bucket, made first when create (caravan
// server's Ensure), else bound as it is (a worker may not make one).
func (q *Queue) objectStore(ctx context.Context, bucket string, create bool) (jetstream.ObjectStore, error) {
	q.mu.Lock()
	o := q.objects[bucket]
	q.mu.Unlock()
	if o != nil && !create {
		return o, nil
	}
	var err error
	if create {
		o, err = q.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket: bucket, TTL: Retention, Storage: jetstream.FileStorage, Replicas: q.replicas})
	} else {
		o, err = q.js.ObjectStore(ctx, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("JetStream object store %s: %w", bucket, err)
	}
	q.mu.Lock()
	q.objects[bucket] = o
	q.mu.Unlock()
	return o, nil
}

// Close drains the connection.
func (q *Queue) Close() { _ = q.nc.Drain() }

// Reconnect drops the connection and makes it again at once, with the
// token Config.TokenFunc gives now: a worker does it after renewing its
// credential, so that the server never closes it for the old one's
// expiry. Subscriptions carry over and publishes meanwhile are buffered;
// requests in flight fail (their callers ask again).
func (q *Queue) Reconnect() error { return q.nc.ForceReconnect() }

// Ensure makes f's stream and its workers' consumer exist as cfg says.
// It remembers what it made: a second call with the same cfg costs nothing.
func (q *Queue) Ensure(ctx context.Context, f Func, cfg FuncConfig) error {
	cfg = cfg.withDefaults()
	q.mu.Lock()
	have, ok := q.ensured[f]
	q.mu.Unlock()
	if ok && have == cfg {
		return nil
	}
	if err := f.Check(); err != nil {
		return err
	}
	_, err := q.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: f.Stream(), Description: "caravan: inputs of " + f.String(),
		Subjects: []string{f.Subject()}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, MaxAge: Retention, MaxMsgSize: InlineLimit + 16<<10,
		Duplicates: 2 * time.Minute, Replicas: q.replicas,
	})
	if err != nil {
		return fmt.Errorf("JetStream stream %s: %w", f.Stream(), err)
	}
	_, err = q.js.CreateOrUpdateConsumer(ctx, f.Stream(), jetstream.ConsumerConfig{
		Durable: ConsumerName, AckPolicy: jetstream.AckExplicitPolicy, AckWait: cfg.AckWait,
		// Deliveries are counted by the worker, which dead-letters the
		// input after MaxAttempts (JetStream would just stop).
		MaxDeliver: -1, MaxAckPending: 100_000, MaxWaiting: 4096,
	})
	if err != nil {
		return fmt.Errorf("JetStream consumer %s/%s: %w", f.Stream(), ConsumerName, err)
	}
	for _, b := range []string{f.InputsBucket(), f.OutputsBucket()} {
		if _, err := q.objectStore(ctx, b, true); err != nil {
			return err
		}
	}
	q.mu.Lock()
	q.ensured[f] = cfg
	q.mu.Unlock()
	return nil
}

// Remove deletes f's stream with the inputs still in it (the records of
// finished calls, and their object stores, stay until they expire).
func (q *Queue) Remove(ctx context.Context, f Func) error {
	q.mu.Lock()
	delete(q.ensured, f)
	q.mu.Unlock()
	err := q.js.DeleteStream(ctx, f.Stream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	return err
}

// Depth is how many of f's inputs wait for a worker or run.
func (q *Queue) Depth(ctx context.Context, f Func) (int, error) {
	s, err := q.js.Stream(ctx, f.Stream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return int(info.State.Msgs), nil
}

// NewID is a fresh call ID: "c", the millisecond in 11 hex digits, then
// 22 random letters and digits.
func NewID() string { return newID(time.Now()) }

func newID(now time.Time) string { return fmt.Sprintf("c%011x%s", now.UnixMilli(), nuid.Next()) }

// Submit queues input for f as call id. spawned calls get a queued
// record first, so Get finds them before they finish; a sync call (not
// spawned) is watched by its caller and skips that write.
func (q *Queue) Submit(ctx context.Context, f Func, id string, input []byte, spawned bool) error {
	if len(input) > MaxInput {
		return &TooLargeError{Size: len(input), Limit: MaxInput}
	}
	if spawned {
		rec := Record{ID: id, Workspace: f.Workspace, AppJobID: f.AppJobID, Function: f.Name, State: Queued, Created: time.Now().UTC()}
		b, _ := json.Marshal(rec)
		if _, err := q.results.Create(ctx, id, b); err != nil {
			return fmt.Errorf("recording call %s: %w", id, err)
		}
	}
	msg := nats.NewMsg(f.Subject())
	msg.Header.Set(hdrCall, id)
	msg.Header.Set(nats.MsgIdHdr, id)
	if spawned {
		msg.Header.Set(hdrSpawned, "1")
	}
	if len(input) > InlineLimit {
		inputs, err := q.objectStore(ctx, f.InputsBucket(), false)
		if err != nil {
			return err
		}
		if _, err := inputs.PutBytes(ctx, id, input); err != nil {
			return fmt.Errorf("storing the input of call %s: %w", id, err)
		}
		msg.Header.Set(hdrInputRef, id)
	} else {
		msg.Data = input
	}
	q.sign(f, msg)
	if _, err := q.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("queueing call %s: %w", id, err)
	}
	return nil
}

// SubmitAll queues inputs[i] for f as call id(i), each unspawned (a map's
// items), with up to a few thousand publishes in flight rather than one
// at a time. It returns once JetStream has acknowledged them all, or the
// first error.
func (q *Queue) SubmitAll(ctx context.Context, f Func, id func(int) string, inputs [][]byte) error {
	var futures []jetstream.PubAckFuture
	for i, input := range inputs {
		if len(input) > InlineLimit {
			if err := q.Submit(ctx, f, id(i), input, false); err != nil {
				return err
			}
			continue
		}
		msg := nats.NewMsg(f.Subject())
		msg.Header.Set(hdrCall, id(i))
		msg.Header.Set(nats.MsgIdHdr, id(i))
		msg.Data = input
		q.sign(f, msg)
		fut, err := q.js.PublishMsgAsync(msg)
		if err != nil {
			return fmt.Errorf("queueing input %d: %w", i, err)
		}
		futures = append(futures, fut)
	}
	select {
	case <-q.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	for i, fut := range futures {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			return fmt.Errorf("queueing input %d: %w", i, err)
		}
	}
	return nil
}

// TooLargeError is an input over MaxInput.
type TooLargeError struct{ Size, Limit int }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the input is %d bytes, over the limit of %d bytes (%d MiB) a call takes", e.Size, e.Limit, e.Limit>>20)
}

// Get reads call id's record; ErrNotFound when there is none.
func (q *Queue) Get(ctx context.Context, id string) (*Record, error) {
	e, err := q.results.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, missing(id, time.Now())
	}
	if err != nil {
		return nil, err
	}
	return q.decode(ctx, e.Value())
}

// decode reads a record, fetching its whole form from the object store
// when it was too large for a value.
func (q *Queue) decode(ctx context.Context, b []byte) (*Record, error) {
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("call record: %w", err)
	}
	if rec.OutputRef == "" {
		return &rec, nil
	}
	outputs, err := q.objectStore(ctx, rec.fn().OutputsBucket(), false)
	if err != nil {
		return nil, err
	}
	full, err := outputs.GetBytes(ctx, rec.OutputRef)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading the result of call %s: %w", rec.ID, err)
	}
	var whole Record
	if err := json.Unmarshal(full, &whole); err != nil {
		return nil, fmt.Errorf("call result: %w", err)
	}
	return &whole, nil
}

// finish stores stored, the record (final) rec as its KV entry holds it
// (a stub naming its whole form in the outputs bucket when large), and
// announces it on its done subject.
func (q *Queue) finish(ctx context.Context, rec *Record, stored []byte) error {
	if _, err := q.results.Put(ctx, rec.ID, stored); err != nil {
		return fmt.Errorf("storing the result of call %s: %w", rec.ID, err)
	}
	return q.nc.Publish(doneSubject(rec.ID), stored)
}

// Wait waits until call id is final (or ctx ends) and returns its record.
func (q *Queue) Wait(ctx context.Context, id string) (*Record, error) {
	w, err := q.Watch(id)
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	return w.Next(ctx, id)
}

// Watcher receives the done announcements of some calls.
type Watcher struct {
	q   *Queue
	sub *nats.Subscription
	mu  sync.Mutex
	got map[string][]byte
	// nudge has a value when got changed.
	nudge chan struct{}
}

// Watch announces the end of call id. Make it before Submit.
func (q *Queue) Watch(id string) (*Watcher, error) {
	w := &Watcher{q: q, got: map[string][]byte{}, nudge: make(chan struct{}, 1)}
	var err error
	w.sub, err = q.nc.Subscribe(doneSubject(id), func(m *nats.Msg) {
		w.mu.Lock()
		w.got[m.Subject[len(subjectDone)+1:]] = m.Data
		w.mu.Unlock()
		select {
		case w.nudge <- struct{}{}:
		default:
		}
	})
	if err == nil {
		err = w.sub.SetPendingLimits(-1, -1)
	}
	if err != nil {
		return nil, err
	}
	return w, nil
}

// WatchMap is Watch for every item of map id (items "<id>.<n>").
func (q *Queue) WatchMap(id string) (*Watcher, error) { return q.Watch(id + ".*") }

// Stop ends the watch.
func (w *Watcher) Stop() { _ = w.sub.Unsubscribe() }

// Next waits until call id is final and returns its record. Between
// announcements it reads the record every second, so a missed one (a
// reconnect) costs a second, not the call.
func (w *Watcher) Next(ctx context.Context, id string) (*Record, error) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		w.mu.Lock()
		b, ok := w.got[id]
		delete(w.got, id)
		w.mu.Unlock()
		if ok {
			return w.q.decode(ctx, b)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.nudge:
		case <-tick.C:
			rec, err := w.q.Get(ctx, id)
			if err == nil && rec.Final() {
				return rec, nil
			}
		}
	}
}

// Cancel stops call id: a queued one never runs, a running one's process
// is killed. A call already final stays as it was; Cancel returns the
// record as it is after.
func (q *Queue) Cancel(ctx context.Context, id string) (*Record, error) {
	for {
		e, err := q.results.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, missing(id, time.Now())
		}
		if err != nil {
			return nil, err
		}
		rec, err := q.decode(ctx, e.Value())
		if err != nil || rec.Final() {
			return rec, err
		}
		rec.State, rec.Finished = Cancelled, time.Now().UTC()
		b, _ := json.Marshal(rec)
		if _, err := q.results.Update(ctx, id, b, e.Revision()); err != nil {
			continue // changed underneath (finished?): look again
		}
		_ = q.nc.Publish(stopSubject(rec.fn(), id), nil)
		_ = q.nc.Publish(doneSubject(id), b)
		return rec, nil
	}
}

// StopSync stops the run of a sync call whose caller left.
func (q *Queue) StopSync(f Func, id string) { _ = q.nc.Publish(stopSubject(f, id), nil) }
