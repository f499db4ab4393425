package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/caravanhq/caravan/api"
	"io"
	"strings"
	"time"

	"github.com/caravanhq/caravan/jobs"
	nomad "github.com/hashicorp/nomad/api"
)

// syncCallable makes the callable functions' parameterized jobs of app job
// appJobID exactly want (stamped with version), as syncPeriodic does for
// scheduled functions: they stay registered with the app, so a call
// registers nothing.
func (o *Orchestrator) syncCallable(ctx context.Context, appJobID string, want []*nomad.Job, version, rollovers int) error {
	return o.syncOwned(ctx, callableKind, appJobID, want, version, rollovers)
}

// DefaultCallTimeout is how long a call waits for its result by default.
const DefaultCallTimeout = 5 * time.Minute

// OutputLimit caps the stdout, and apart from it the stderr, a call
// returns; past it the result says the output was truncated.
const OutputLimit = 4 << 20

// logSettle is how long after a failed task's exit its output is surely
// in its log files: twice Nomad's log collector's flush interval.
const logSettle = 200 * time.Millisecond

// CallRequest is one call of a callable function.
type CallRequest struct {
	AppRef
	Function string
	// Input is the function's input: a JSON document of at most
	// jobs.PayloadLimit bytes. Empty sends `null`.
	Input []byte
	// Timeout bounds the wait for the result (default DefaultCallTimeout).
	Timeout time.Duration
}

// CallResult is api.CallResult: the orchestrator returns wire types as they are.
type CallResult = api.CallResult

// InputTooLargeError is a call input over the limit: of what Nomad
// dispatches for an isolated function, of the queue's for a warm one
// (Warm). Nothing was queued or dispatched.
type InputTooLargeError struct {
	Size, Limit int
	Warm        bool
}

func (e *InputTooLargeError) Error() string {
	if e.Warm {
		return fmt.Sprintf("the input is %d bytes, over the limit of %d bytes (%d MiB) a call takes: "+
			"pass a reference to the data instead, such as a URL the function can read", e.Size, e.Limit, e.Limit>>20)
	}
	return fmt.Sprintf("the input is %d bytes, over the limit of %d bytes (%d KiB) an isolated function's call takes (Nomad's dispatch payload limit): "+
		"pass a reference to the data instead, such as a URL or a file path the function can read, or deploy the function without isolated = true (16 MiB)", e.Size, e.Limit, e.Limit/1024)
}

// CheckInput checks a call's input without calling anything: at most
// jobs.PayloadLimit bytes (else *InputTooLargeError) of valid JSON (else
// *BadRequestError). It returns the payload to dispatch: `null` for none.
func CheckInput(input []byte) ([]byte, error) {
	if len(input) > jobs.PayloadLimit {
		return nil, &InputTooLargeError{Size: len(input), Limit: jobs.PayloadLimit}
	}
	if len(strings.TrimSpace(string(input))) == 0 {
		return []byte("null"), nil
	}
	var v json.RawMessage
	if err := json.Unmarshal(input, &v); err != nil {
		return nil, &BadRequestError{Why: "the input is not valid JSON (" + err.Error() + "): send one JSON document, such as {\"numbers\": [1, 2]}"}
	}
	return input, nil
}

// Call runs a callable function of an app's live version once with
// req.Input and waits for its result: it dispatches the function's
// parameterized job (registered by the deploy, so a call registers
// nothing) and reads the output of the allocation that ran it.
func (o *Orchestrator) Call(ctx context.Context, caller Caller, req CallRequest) (*CallResult, error) {
	began := time.Now()
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	f, isolated, err := o.callable(ctx, caller, req.AppRef, req.Function)
	if err != nil {
		return nil, err
	}
	if !isolated {
		return o.callWarm(ctx, f, req.Input, timeout, began)
	}
	payload, err := CheckInput(req.Input)
	if err != nil {
		return nil, err
	}

	id := jobs.CallableID(f.AppJobID, req.Function)
	dispatched, evalID, err := o.nomad.Dispatch(ctx, id, map[string]string{jobs.MetaCaller: caller.Name}, payload)
	if err != nil {
		return nil, fmt.Errorf("dispatching %s: %w", id, err)
	}
	res := &CallResult{Function: req.Function, JobID: dispatched, ExitCode: -1}
	o.log.Info("call", "job", dispatched, "caller", caller.Name, "input_bytes", len(payload))
	eval, err := o.waitEval(ctx, evalID)
	if err != nil {
		return nil, err
	}
	for _, m := range eval.FailedTGAllocs {
		// Nothing would run it soon: take it back rather than leave it
		// queued in Nomad.
		_, _ = o.nomad.Deregister(ctx, dispatched, true)
		return nil, fmt.Errorf("Nomad cannot place a run of %q now (%d nodes evaluated, %d filtered, %d out of resources): nothing ran",
			req.Function, m.NodesEvaluated, m.NodesFiltered, m.NodesExhausted)
	}
	alloc, err := o.waitDone(ctx, dispatched)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no result from %s within %s: it goes on running (`nomad job status %s`)", dispatched, timeout, dispatched)
		}
		return nil, err
	}
	res.AllocID = alloc.ID
	st := alloc.TaskStates[req.Function]
	ran, why := false, "its allocation is "+alloc.ClientStatus
	var exited time.Time
	if st != nil {
		for _, e := range st.Events {
			switch {
			case e.Type == nomad.TaskTerminated:
				res.ExitCode, ran, exited = e.ExitCode, true, time.Unix(0, e.Time)
			case e.FailsTask && e.DisplayMessage != "":
				why = e.DisplayMessage
			}
		}
	}
	if !ran {
		res.Error = "the function did not run: " + why
	}
	if st != nil && !st.StartedAt.IsZero() {
		if alloc.ClientStatus == nomad.AllocClientStatusFailed {
			// Nomad marks a failed task dead before its log collector
			// has written the last of the output (it flushes every
			// 100ms); a successful one only after.
			if wait := time.Until(exited.Add(logSettle)); wait > 0 {
				time.Sleep(min(wait, logSettle))
			}
		}
		if res.Output, res.OutputTruncated, err = o.readLog(ctx, alloc, req.Function, "stdout"); err == nil {
			res.Stderr, res.StderrTruncated, err = o.readLog(ctx, alloc, req.Function, "stderr")
		}
		if err != nil {
			return nil, fmt.Errorf("reading the output of %s: %w", dispatched, err)
		}
	}
	res.Duration = time.Since(began)
	return res, nil
}

// callables lists the callable functions of stubs for an error message.
func callables(stubs []*nomad.JobListStub) string {
	names := sortedFunctions(stubs)
	if len(names) == 0 {
		return "it has none; callable = true in a function makes one"
	}
	return "callable functions: " + strings.Join(names, ", ")
}

// waitDone waits, with blocking queries, until the allocation of a
// dispatched job has finished, and returns it.
func (o *Orchestrator) waitDone(ctx context.Context, jobID string) (*nomad.Allocation, error) {
	var index uint64
	for {
		stubs, last, err := o.nomad.JobAllocations(ctx, jobID, index)
		if err != nil {
			return nil, err
		}
		index = last
		for _, s := range stubs {
			switch s.ClientStatus {
			case nomad.AllocClientStatusComplete, nomad.AllocClientStatusFailed, nomad.AllocClientStatusLost:
				return o.nomad.Allocation(ctx, s.ID)
			}
		}
	}
}

// readLog reads a task's stdout or stderr from its allocation, at most
// OutputLimit bytes, and says whether there was more.
func (o *Orchestrator) readLog(ctx context.Context, alloc *nomad.Allocation, task, stream string) (string, bool, error) {
	r, err := o.nomad.ReadFile(ctx, alloc, "alloc/logs/"+task+"."+stream+".0", OutputLimit+1)
	if err != nil {
		return "", false, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return "", false, err
	}
	if len(b) > OutputLimit {
		return string(b[:OutputLimit]), true, nil
	}
	return string(b), false, nil
}
