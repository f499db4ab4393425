package queue

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Runner answers one input. ctx ends when the call is cancelled or the
// worker stops; the runner then ends the run (and returns what it has).
// A nil result says the run was lost (the function's process died
// mid-input): the input goes back to the queue, as when a worker dies.
type Runner func(ctx context.Context, id string, input []byte) *api.CallResult

// Worker takes inputs of one function and answers them with Run, at most
// MaxInputs at once.
type Worker struct {
	Q         *Queue
	Func      Func
	Config    FuncConfig
	MaxInputs int
	Run       Runner
	Log       hclog.Logger
	// InputKey, when set, is the function's InputKey: an input without
	// its signature is dropped, not run.
	InputKey string

	mu      sync.Mutex
	running map[string]context.CancelFunc
}

// pullHeartbeat is how often the server tells a worker's waiting pull
// that it still holds it: a pull lost with its connection (the server
// dropped it in a reconnect's gap) is made again after two missed.
const pullHeartbeat = 2 * time.Second

// Serve takes inputs until ctx ends, then waits for the inputs it runs to
// finish, giving back (Nak) those that have not after grace.
func (w *Worker) Serve(ctx context.Context, grace time.Duration) error {
	cfg := w.Config.withDefaults()
	if w.Log == nil {
		w.Log = hclog.NewNullLogger()
	}
	// caravan server makes the stream and consumer (Ensure) when it
	// deploys the function or takes its first call; a worker may not.
	cons, err := w.consumer(ctx)
	if err != nil {
		return err
	}
	w.running = map[string]context.CancelFunc{}
	prefix := stopSubject(w.Func, "")
	stop, err := w.Q.nc.Subscribe(stopSubject(w.Func, "*"), func(m *nats.Msg) {
		id := strings.TrimPrefix(m.Subject, prefix)
		w.mu.Lock()
		cancel := w.running[id]
		w.mu.Unlock()
		if cancel != nil {
			w.Log.Info("cancelled", "call", id)
			cancel()
		}
	})
	if err != nil {
		return err
	}
	defer stop.Unsubscribe()
	// runCtx outlives ctx by grace: inputs in flight may finish.
	runCtx, cancelRuns := context.WithCancel(context.Background())
	defer cancelRuns()
	slots := max(w.MaxInputs, 1)
	var wg sync.WaitGroup
	for range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				msg, err := cons.Next(jetstream.FetchContext(ctx), jetstream.FetchHeartbeat(pullHeartbeat))
				if errors.Is(err, jetstream.ErrNoHeartbeat) {
					// The pull was lost with a connection (a reconnect,
					// one with a renewed credential too): pull again.
					w.Log.Debug("pull: no heartbeat; pulling again")
					continue
				}
				if err != nil {
					if ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
						w.Log.Warn("pull", "error", err)
						select {
						case <-ctx.Done():
						case <-time.After(250 * time.Millisecond):
						}
					}
					continue
				}
				w.handle(runCtx, msg, cfg)
			}
		}()
	}
	<-ctx.Done()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		// Past the grace the runs end, and their inputs go back to the
		// queue for another worker (not cancelled calls).
		cancelRuns()
		<-done
	}
	return nil
}

// consumer waits until the function's consumer exists and returns it,
// looking every 50 ms at first, then less often (up to 1s).
func (w *Worker) consumer(ctx context.Context) (jetstream.Consumer, error) {
	wait := 50 * time.Millisecond
	for {
		cons, err := w.Q.js.Consumer(ctx, w.Func.Stream(), ConsumerName)
		if err == nil {
			return cons, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			w.Log.Warn("consumer", "function", w.Func.String(), "error", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("consumer of %s: %w", w.Func, err)
		case <-time.After(wait):
		}
		wait = min(wait*3/2, time.Second)
	}
}

// handle runs one delivery to its end: a result stored and the input
// acked, or the input given back.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg, cfg FuncConfig) {
	id := msg.Headers().Get(hdrCall)
	meta, err := msg.Metadata()
	if err != nil || !ValidID(id) {
		w.Log.Error("an input without a call ID: dropped", "subject", msg.Subject())
		_ = msg.Term()
		return
	}
	if w.InputKey != "" && !hmac.Equal([]byte(msg.Headers().Get(hdrSig)), []byte(inputSig(w.InputKey, id, msg.Data(), msg.Headers().Get(hdrInputRef)))) {
		w.Log.Error("an input not signed for this function: dropped", "call", id)
		_ = msg.Term()
		return
	}
	attempt := int(meta.NumDelivered)
	spawned := msg.Headers().Get(hdrSpawned) != ""
	rec := &Record{ID: id, Workspace: w.Func.Workspace, AppJobID: w.Func.AppJobID, Function: w.Func.Name, Attempts: attempt, Created: meta.Timestamp.UTC()}
	// A redelivery may follow a worker that stored the result and died
	// before its ack; a spawned call may have been cancelled while queued.
	if attempt > 1 || spawned {
		if final(w.Q.callState(ctx, w.Func, id)) {
			_ = msg.Ack()
			return
		}
	}
	if attempt > cfg.MaxAttempts {
		rec.State, rec.Finished = Failed, time.Now().UTC()
		rec.Result = &api.CallResult{Function: w.Func.Name, ExitCode: -1,
			Error: fmt.Sprintf("the input was delivered %d times and no worker finished it (each was lost mid-input: its container was killed, or its function's process died): dead-lettered", cfg.MaxAttempts)}
		w.store(ctx, msg, rec)
		return
	}
	input := msg.Data()
	if ref := msg.Headers().Get(hdrInputRef); ref != "" {
		input, err = w.readInput(ctx, ref)
		if err != nil {
			rec.State, rec.Finished = Failed, time.Now().UTC()
			rec.Result = &api.CallResult{Function: w.Func.Name, ExitCode: -1, Error: "the input could not be read: " + err.Error()}
			w.store(ctx, msg, rec)
			return
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	w.mu.Lock()
	w.running[id] = cancel
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.running, id)
		w.mu.Unlock()
		cancel()
	}()
	// Heartbeats extend the lease while the input runs.
	beat := time.NewTicker(cfg.AckWait / 3)
	defer beat.Stop()
	resc := make(chan *api.CallResult, 1)
	began := time.Now()
	go func() { resc <- w.Run(runCtx, id, input) }()
	var res *api.CallResult
	for ran := false; !ran; {
		select {
		case res = <-resc:
			ran = true
		case <-beat.C:
			_ = msg.InProgress()
		}
	}
	if ctx.Err() != nil && runCtx.Err() != nil {
		// The worker is stopping: another takes the input now.
		_ = msg.Nak()
		return
	}
	if res == nil {
		// Lost mid-input: delivered again, to this worker or another,
		// until MaxAttempts dead-letters it.
		w.Log.Warn("the run was lost mid-input; the input goes back", "call", id, "attempt", attempt)
		_ = msg.Nak()
		return
	}
	res.Function = w.Func.Name
	res.Duration = time.Since(began)
	rec.State, rec.Finished, rec.Result = Done, time.Now().UTC(), res
	if runCtx.Err() != nil {
		rec.State = Cancelled
	}
	if ref := msg.Headers().Get(hdrInputRef); ref != "" {
		defer func() {
			if inputs, err := w.Q.objectStore(context.Background(), w.Func.InputsBucket(), false); err == nil {
				_ = inputs.Delete(context.Background(), ref)
			}
		}()
	}
	w.store(ctx, msg, rec)
}

// readInput reads the input in object ref, asking again twice when it
// fails: a reconnect (the worker's, with a renewed credential) cuts the
// reads in flight.
func (w *Worker) readInput(ctx context.Context, ref string) ([]byte, error) {
	var err error
	for try := range 3 {
		if try > 0 {
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(250 * time.Millisecond):
			}
		}
		var inputs jetstream.ObjectStore
		if inputs, err = w.Q.objectStore(ctx, w.Func.InputsBucket(), false); err == nil {
			var b []byte
			if b, err = inputs.GetBytes(ctx, ref); err == nil {
				return b, nil
			}
		}
	}
	return nil, err
}

// store has caravan server store rec (results.go, which keeps a
// spawned call cancelled meanwhile cancelled), then acks msg.
// While no caravan server answers (one restarting) it asks again for a
// while, holding the input's lease, before it gives the input back.
func (w *Worker) store(ctx context.Context, msg jetstream.Msg, rec *Record) {
	lease := w.Config.withDefaults().AckWait
	var err error
	for range 10 {
		_ = msg.InProgress()
		rctx, cancel := context.WithTimeout(ctx, lease/2)
		err = w.Q.sendResult(rctx, w.Func, rec)
		cancel()
		var refused *RefusedError
		if err == nil {
			_ = msg.Ack()
			w.Log.Debug("answered", "call", rec.ID, "state", rec.State, "attempt", strconv.Itoa(rec.Attempts))
			return
		}
		if ctx.Err() != nil || errors.As(err, &refused) {
			break
		}
		w.Log.Warn("storing a result; asking again", "call", rec.ID, "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(min(lease/3, 2*time.Second)):
		}
	}
	w.Log.Error("storing a result; the input goes back", "call", rec.ID, "error", err)
	_ = msg.NakWithDelay(time.Second)
}
