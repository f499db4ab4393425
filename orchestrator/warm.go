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
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/queue"
	nomad "github.com/hashicorp/nomad/api"
)

// Calls is the queue warm calls go through: *queue.Queue (QueueCalls
// adapts it).
type Calls interface {
	Ensure(ctx context.Context, f queue.Func, cfg queue.FuncConfig) error
	Submit(ctx context.Context, f queue.Func, id string, input []byte, spawned bool) error
	// SubmitAll queues inputs[i] as call id(i), unspawned, many at once.
	SubmitAll(ctx context.Context, f queue.Func, id func(int) string, inputs [][]byte) error
	// Watch announces the end of call id (or of every item of a map,
	// with Watch(id, true)). Make it before Submit.
	Watch(id string, mapped bool) (CallWatch, error)
	Get(ctx context.Context, id string) (*queue.Record, error)
	Cancel(ctx context.Context, id string) (*queue.Record, error)
}

// CallWatch waits for calls to end.
type CallWatch interface {
	Next(ctx context.Context, id string) (*queue.Record, error)
	Stop()
}

// QueueCalls is Calls over *queue.Queue.
type QueueCalls struct {
	*queue.Queue
	// Func configures every function's stream and consumer.
	Func queue.FuncConfig
}

func (q QueueCalls) Watch(id string, mapped bool) (CallWatch, error) {
	if mapped {
		return q.Queue.WatchMap(id)
	}
	return q.Queue.Watch(id)
}

// MapLimit is the most inputs one map takes.
const MapLimit = 100_000

// warmCache remembers for a moment which function a call names, so a
// burst of calls reads Consul and Nomad once.
type warmCache struct {
	mu sync.Mutex
	m  map[string]warmEntry
}

type warmEntry struct {
	f        queue.Func
	isolated bool
	at       time.Time
}

// warmTTL is how long a call's lookup of its function is reused: a
// function removed by a deploy may take inputs for that long (they wait in
// its stream, unanswered, until they expire).
const warmTTL = 2 * time.Second

// callable resolves the callable function a call names: its queue's Func,
// and whether it is isolated (a parameterized job) rather than warm.
func (o *Orchestrator) callable(ctx context.Context, caller Caller, ref AppRef, function string) (queue.Func, bool, error) {
	key := strings.Join([]string{caller.Workspace, ref.Workspace, ref.Environment, ref.App, fmt.Sprint(ref.Serve), function}, "\x00")
	o.warm.mu.Lock()
	e, ok := o.warm.m[key]
	o.warm.mu.Unlock()
	if ok && time.Since(e.at) < warmTTL {
		return e.f, e.isolated, nil
	}
	rec, err := o.resolve(ctx, caller, ref)
	if err != nil {
		return queue.Func{}, false, err
	}
	if rec.LiveVersion == 0 {
		return queue.Func{}, false, &NotFoundError{App: rec.App, Why: "it has no live version"}
	}
	stubs, err := o.ownedStubs(ctx, rec.JobID, callableKind)
	if err != nil {
		return queue.Func{}, false, err
	}
	i := slices.IndexFunc(stubs, func(s *nomad.JobListStub) bool { return s.Meta[jobs.MetaFunction] == function })
	if i < 0 {
		return queue.Func{}, false, &NotFoundError{App: rec.App, Why: fmt.Sprintf("it has no callable function %q live (%s)", function, callables(stubs))}
	}
	e = warmEntry{f: queue.Func{Workspace: rec.Workspace, AppJobID: rec.JobID, Name: function},
		isolated: stubs[i].Meta[jobs.MetaWorkers] == "", at: time.Now()}
	o.warm.mu.Lock()
	if o.warm.m == nil {
		o.warm.m = map[string]warmEntry{}
	}
	o.warm.m[key] = e
	o.warm.mu.Unlock()
	return e.f, e.isolated, nil
}

// checkWarmInput is CheckInput for the queue's limit.
func checkWarmInput(input []byte) ([]byte, error) {
	if len(input) > queue.MaxInput {
		return nil, &InputTooLargeError{Size: len(input), Limit: queue.MaxInput, Warm: true}
	}
	if len(strings.TrimSpace(string(input))) == 0 {
		return []byte("null"), nil
	}
	if !json.Valid(input) {
		var v json.RawMessage
		err := json.Unmarshal(input, &v)
		return nil, &BadRequestError{Why: "the input is not valid JSON (" + err.Error() + "): send one JSON document, such as {\"numbers\": [1, 2]}"}
	}
	return input, nil
}

func (o *Orchestrator) needCalls() error {
	if o.calls == nil {
		return errors.New("this server has no queue for warm calls")
	}
	return nil
}

// submit queues input as a new call of f, watched when watch.
func (o *Orchestrator) submit(ctx context.Context, f queue.Func, input []byte, watch bool) (string, CallWatch, error) {
	if err := o.needCalls(); err != nil {
		return "", nil, err
	}
	if err := o.calls.Ensure(ctx, f, o.callsFunc); err != nil {
		return "", nil, err
	}
	id := queue.NewID()
	var w CallWatch
	if watch {
		var err error
		if w, err = o.calls.Watch(id, false); err != nil {
			return "", nil, err
		}
	}
	if err := o.calls.Submit(ctx, f, id, input, true); err != nil {
		if w != nil {
			w.Stop()
		}
		return "", nil, err
	}
	if o.callQueued != nil {
		o.callQueued()
	}
	return id, w, nil
}

// callWarm is Call of a warm function: its input through the queue to a
// worker, and back.
func (o *Orchestrator) callWarm(ctx context.Context, f queue.Func, input []byte, timeout time.Duration, began time.Time) (*CallResult, error) {
	payload, err := checkWarmInput(input)
	if err != nil {
		return nil, err
	}
	id, w, err := o.submit(ctx, f, payload, true)
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	// A call whose function's workers have all stopped fails with their
	// reason instead of waiting out its timeout.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		mu  sync.Mutex
		why string
	)
	go o.watchWorkers(wctx, f, stop, &why, &mu)
	rec, err := w.Next(wctx, id)
	if err != nil {
		mu.Lock()
		reason := why
		mu.Unlock()
		if reason != "" && ctx.Err() == nil {
			return nil, &ConflictError{App: f.AppJobID, Why: fmt.Sprintf("call %s of %q stays queued: %s", id, f.Name, reason)}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no result from call %s within %s: it stays queued or running; `caravan call get %s --wait` reads it later", id, timeout, id)
		}
		return nil, err
	}
	res := resultOf(rec)
	res.Duration = time.Since(began)
	return res, nil
}

// resultOf is a final record's result as a call returns it.
func resultOf(rec *queue.Record) *CallResult {
	res := &CallResult{Function: rec.Function, ExitCode: -1}
	if rec.Result != nil {
		c := *rec.Result
		res = &c
	}
	res.CallID, res.Attempts = rec.ID, rec.Attempts
	if rec.State == queue.Cancelled && res.Error == "" {
		res.Error = "the call was cancelled"
	}
	return res
}

// Spawn queues one call of a warm function and returns its ID at once.
func (o *Orchestrator) Spawn(ctx context.Context, caller Caller, req CallRequest) (*api.CallStatus, error) {
	f, isolated, err := o.callable(ctx, caller, req.AppRef, req.Function)
	if err != nil {
		return nil, err
	}
	if isolated {
		return nil, &BadRequestError{Why: fmt.Sprintf("function %q is isolated (a container per call): it cannot be spawned; call it, or deploy it without isolated = true", req.Function)}
	}
	payload, err := checkWarmInput(req.Input)
	if err != nil {
		return nil, err
	}
	id, _, err := o.submit(ctx, f, payload, false)
	if err != nil {
		return nil, err
	}
	o.log.Debug("spawn", "call", id, "function", f.String(), "caller", caller.Name, "input_bytes", len(payload))
	return &api.CallStatus{ID: id, Function: f.Name, AppJob: f.AppJobID, State: queue.Queued, Created: time.Now().UTC()}, nil
}

// CallGet reads call id; with wait > 0, it first waits that long for the
// call to end.
func (o *Orchestrator) CallGet(ctx context.Context, caller Caller, id string, wait time.Duration) (*api.CallStatus, error) {
	if err := o.needCalls(); err != nil {
		return nil, err
	}
	rec, err := o.callRecord(ctx, caller, id)
	if err != nil || rec.Final() || wait <= 0 {
		return statusOf(rec), err
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	w, err := o.calls.Watch(id, false)
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	if again, err := o.calls.Get(ctx, id); err == nil && again.Final() {
		return statusOf(again), nil
	}
	if done, err := w.Next(wctx, id); err == nil {
		return statusOf(done), nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rec, err = o.callRecord(ctx, caller, id)
	return statusOf(rec), err
}

// CallCancel cancels call id (a queued call never runs; a running one's
// process is stopped) and returns its record after.
func (o *Orchestrator) CallCancel(ctx context.Context, caller Caller, id string) (*api.CallStatus, error) {
	if err := o.needCalls(); err != nil {
		return nil, err
	}
	if _, err := o.callRecord(ctx, caller, id); err != nil {
		return nil, err
	}
	rec, err := o.calls.Cancel(ctx, id)
	if err != nil {
		return nil, o.callErr(id, err)
	}
	o.log.Info("call cancelled", "call", id, "by", caller.Name, "state", rec.State)
	return statusOf(rec), nil
}

// callRecord reads call id if the caller's workspace owns it: another
// workspace's call is not found.
func (o *Orchestrator) callRecord(ctx context.Context, caller Caller, id string) (*queue.Record, error) {
	if !queue.ValidID(id) {
		return nil, &NotFoundError{Why: fmt.Sprintf("%q is not a call ID (`caravan call --spawn` prints one)", id)}
	}
	rec, err := o.calls.Get(ctx, id)
	if err != nil {
		return nil, o.callErr(id, err)
	}
	if caller.Workspace != "*" && caller.Workspace != rec.Workspace {
		return nil, o.callErr(id, queue.ErrNotFound)
	}
	return rec, nil
}

func (o *Orchestrator) callErr(id string, err error) error {
	switch {
	case errors.Is(err, queue.ErrExpired):
		return &NotFoundError{Why: fmt.Sprintf("call %s expired: results are kept 7 days", id)}
	case errors.Is(err, queue.ErrNotFound):
		return &NotFoundError{Why: fmt.Sprintf("no call %s in your workspace", id)}
	}
	return err
}

func statusOf(rec *queue.Record) *api.CallStatus {
	if rec == nil {
		return nil
	}
	st := &api.CallStatus{ID: rec.ID, Function: rec.Function, AppJob: rec.AppJobID, State: rec.State, Created: rec.Created, Finished: rec.Finished}
	if rec.Final() {
		st.Result = resultOf(rec)
	}
	return st
}

// MapRequest runs a warm function once per input.
type MapRequest struct {
	AppRef
	Function string
	Inputs   [][]byte
	// Timeout bounds the whole map (default DefaultCallTimeout).
	Timeout time.Duration
}

// Map queues every input of req as a call of the function, then hands
// each result to each in input order as it comes. An input that is not
// JSON or over the limit fails the map before anything is queued.
func (o *Orchestrator) Map(ctx context.Context, caller Caller, req MapRequest, each func(api.MapItem) error) error {
	if err := o.needCalls(); err != nil {
		return err
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	f, isolated, err := o.callable(ctx, caller, req.AppRef, req.Function)
	if err != nil {
		return err
	}
	if isolated {
		return &BadRequestError{Why: fmt.Sprintf("function %q is isolated (a container per call): map needs a warm one; deploy it without isolated = true", req.Function)}
	}
	if len(req.Inputs) > MapLimit {
		return &BadRequestError{Why: fmt.Sprintf("%d inputs, over the %d a map takes: split them", len(req.Inputs), MapLimit)}
	}
	payloads := make([][]byte, len(req.Inputs))
	for i, in := range req.Inputs {
		p, err := checkWarmInput(in)
		if err != nil {
			return fmt.Errorf("input %d (line %d): %w", i, i+1, err)
		}
		payloads[i] = p
	}
	if err := o.calls.Ensure(ctx, f, o.callsFunc); err != nil {
		return err
	}
	mapID := queue.NewID()
	w, err := o.calls.Watch(mapID, true)
	if err != nil {
		return err
	}
	defer w.Stop()
	o.log.Info("map", "map", mapID, "function", f.String(), "inputs", len(payloads), "caller", caller.Name)
	// Inputs are queued while results stream back: a slow submit does not
	// hold the first results.
	subErr := make(chan error, 1)
	go func() {
		err := o.calls.SubmitAll(ctx, f, func(i int) string { return fmt.Sprintf("%s.%d", mapID, i) }, payloads)
		if err != nil {
			cancel()
		} else if o.callQueued != nil {
			o.callQueued() // (the autoscaler's rounds saw the first ones meanwhile)
		}
		subErr <- err
	}()
	for i := range payloads {
		rec, err := w.Next(ctx, fmt.Sprintf("%s.%d", mapID, i))
		if err != nil {
			select {
			case serr := <-subErr:
				if serr != nil {
					return serr
				}
			default:
			}
			if ctx.Err() != nil {
				return fmt.Errorf("map %s: %d of %d results within %s", mapID, i, len(payloads), timeout)
			}
			return err
		}
		if err := each(api.MapItem{Index: i, CallResult: resultOf(rec)}); err != nil {
			return err
		}
	}
	return nil
}

// workersDown decides from the allocations of a function's workers job
// whether none can take inputs: none is pending or running, and one Nomad
// means to run has ended (failed, lost, complete). why is the latest such
// one's failure. No allocations at all, or only stopped ones, is not down
// (Nomad may still be placing them).
func workersDown(stubs []*nomad.AllocationListStub) (down bool, why string) {
	if len(stubs) == 0 {
		return false, ""
	}
	var newest *nomad.AllocationListStub
	for _, s := range stubs {
		switch s.ClientStatus {
		case nomad.AllocClientStatusPending, nomad.AllocClientStatusRunning:
			return false, ""
		}
		// Only an allocation Nomad means to run tells of a failure; those
		// it stopped (a redeploy's old ones) are being replaced.
		if s.DesiredStatus != nomad.AllocDesiredStatusRun {
			continue
		}
		if newest == nil || s.ModifyTime > newest.ModifyTime {
			newest = s
		}
	}
	if newest == nil {
		return false, ""
	}
	why = fmt.Sprintf("its workers are %s (allocation %s)", newest.ClientStatus, newest.ID)
	for task, st := range newest.TaskStates {
		for _, e := range st.Events {
			if e.DisplayMessage != "" && (e.FailsTask || e.Type == nomad.TaskTerminated || e.Type == nomad.TaskDriverFailure || e.Type == nomad.TaskNotRestarting) {
				why = fmt.Sprintf("its workers cannot start: task %s: %s (allocation %s)", task, e.DisplayMessage, newest.ID)
			}
		}
	}
	return true, why
}

// workersCheck is how often a waiting call looks at its function's
// workers.
const workersCheck = 2 * time.Second

// watchWorkers cancels the wait of a call of f (cancel) when f's workers
// have all stopped, setting *why to the reason, until ctx ends.
func (o *Orchestrator) watchWorkers(ctx context.Context, f queue.Func, cancel context.CancelFunc, why *string, mu *sync.Mutex) {
	t := time.NewTicker(workersCheck)
	defer t.Stop()
	// Down twice in a row: a redeploy's old workers stop as its new ones
	// are placed, and one look could fall between.
	downs := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stubs, _, err := o.nomad.JobAllocations(ctx, jobs.CallableID(f.AppJobID, f.Name), 0)
		if err != nil {
			continue
		}
		down, reason := workersDown(stubs)
		if !down {
			downs = 0
			continue
		}
		if downs++; downs >= 2 {
			mu.Lock()
			*why = reason
			mu.Unlock()
			cancel()
			return
		}
	}
}
