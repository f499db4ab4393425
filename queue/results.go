package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Workers cannot reach the call records' bucket: they ask caravan server
// to store a result (on resultsSubject of their function, the record as
// its KV entry is to hold it) and whether a call is already final (on
// statusSubject, the call's ID). Every caravan server answers, one of
// them each request (a queue group). A server stores a record only under
// the function whose subject it came on, and never over another
// function's call or a final record (a cancelled spawn keeps its state; a
// redelivered input is answered once).

const (
	replyOK = "ok"
	// resultsAtOnce bounds the results one server stores at once.
	resultsAtOnce = 64
)

func (q *Queue) serveResults() error {
	sem := make(chan struct{}, resultsAtOnce)
	if _, err := q.nc.QueueSubscribe(subjectResults+".>", serversGroup, func(m *nats.Msg) {
		if !inbox(m.Reply) {
			return
		}
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			reply := replyOK
			if err := q.storeResult(ctx, m); err != nil {
				reply = err.Error()
			}
			_ = m.Respond([]byte(reply))
		}()
	}); err != nil {
		return err
	}
	_, err := q.nc.QueueSubscribe(subjectStatus+".>", serversGroup, func(m *nats.Msg) {
		if !inbox(m.Reply) {
			return
		}
		f, ok := funcOf(subjectStatus, m.Subject)
		id := string(m.Data)
		state := ""
		if ok && ValidID(id) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if e, err := q.results.Get(ctx, id); err == nil {
				var have Record
				if json.Unmarshal(e.Value(), &have) == nil && have.fn() == f {
					state = have.State
				}
			}
			cancel()
		}
		_ = m.Respond([]byte(state))
	})
	return err
}

// storeResult stores the record in m for the function of its subject.
func (q *Queue) storeResult(ctx context.Context, m *nats.Msg) error {
	f, ok := funcOf(subjectResults, m.Subject)
	if !ok {
		return errors.New("refused: not a function's results subject")
	}
	var rec Record
	if err := json.Unmarshal(m.Data, &rec); err != nil {
		return fmt.Errorf("refused: the record is not JSON: %v", err)
	}
	if !ValidID(rec.ID) || !rec.Final() || (rec.OutputRef != "" && rec.OutputRef != rec.ID) {
		return errors.New("refused: a result names a valid call ID, a final state and, when large, an output named as the call")
	}
	rec.Workspace, rec.AppJobID, rec.Function = f.Workspace, f.AppJobID, f.Name
	stored, _ := json.Marshal(rec)
	if _, err := q.results.Create(ctx, rec.ID, stored); err == nil {
		return q.nc.Publish(doneSubject(rec.ID), stored)
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	for range 5 {
		e, err := q.results.Get(ctx, rec.ID)
		if err != nil {
			return err
		}
		var have Record
		if err := json.Unmarshal(e.Value(), &have); err != nil {
			return err
		}
		if have.fn() != f {
			return fmt.Errorf("refused: call %s is not a call of %s", rec.ID, f)
		}
		if have.Final() {
			return nil // answered already, or cancelled: it stays so
		}
		if _, err := q.results.Update(ctx, rec.ID, stored, e.Revision()); err == nil {
			return q.nc.Publish(doneSubject(rec.ID), stored)
		}
	}
	return fmt.Errorf("call %s kept changing while its result was stored", rec.ID)
}

// sendResult asks caravan server to store rec, putting its whole form in
// f's outputs bucket first when it is over InlineLimit.
func (q *Queue) sendResult(ctx context.Context, f Func, rec *Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if len(b) > InlineLimit {
		outputs, err := q.objectStore(ctx, f.OutputsBucket(), false)
		if err != nil {
			return err
		}
		if _, err := outputs.PutBytes(ctx, rec.ID, b); err != nil {
			return fmt.Errorf("storing the result of call %s: %w", rec.ID, err)
		}
		stub := *rec
		stub.Result, stub.OutputRef = nil, rec.ID
		b, _ = json.Marshal(stub)
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	reply, err := q.nc.RequestWithContext(rctx, resultsSubject(f), b)
	if err != nil {
		return fmt.Errorf("asking caravan server to store the result of call %s: %w", rec.ID, err)
	}
	if s := string(reply.Data); s != replyOK {
		return &RefusedError{ID: rec.ID, Why: strings.TrimSpace(s)}
	}
	return nil
}

// RefusedError is caravan server's answer to a result it did not store.
type RefusedError struct{ ID, Why string }

func (e *RefusedError) Error() string {
	return fmt.Sprintf("caravan server did not store the result of call %s: %s", e.ID, e.Why)
}

// callState asks caravan server for the state of f's call id: "" when
// it has no record (or no server answers).
func (q *Queue) callState(ctx context.Context, f Func, id string) string {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reply, err := q.nc.RequestWithContext(rctx, statusSubject(f), []byte(id))
	if err != nil {
		return ""
	}
	return string(reply.Data)
}

func final(state string) bool { return state == Done || state == Cancelled || state == Failed }

// inbox says whether reply is an inbox. caravan server answers only
// there: its answers, published with every permission, must not land on
// a subject a worker names (another function's inputs, say).
func inbox(reply string) bool { return strings.HasPrefix(reply, "_INBOX") }
