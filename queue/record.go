package queue

import (
	"time"

	"github.com/caravanhq/caravan/api"
)

// States of a call.
const (
	Queued    = "queued"
	Done      = "done"
	Cancelled = "cancelled"
	// Failed: the call has no answer from the function: dead-lettered
	// after MaxAttempts deliveries, or the input could not be read.
	Failed = "failed"
)

// Record is a call as its KV entry holds it.
type Record struct {
	ID        string `json:"id"`
	Workspace string `json:"workspace"`
	AppJobID  string `json:"app_job"`
	Function  string `json:"function"`
	State     string `json:"state"`
	// Attempts is how many deliveries the input had when it finished.
	Attempts int       `json:"attempts,omitempty"`
	Created  time.Time `json:"created"`
	Finished time.Time `json:"finished,omitzero"`
	// Result is the function's answer once State is Done (or why it has
	// none, in Error, once Failed).
	Result *api.CallResult `json:"result,omitempty"`
	// OutputRef names the object holding the whole record when it is
	// over InlineLimit; the KV entry then holds only the fields above it.
	OutputRef string `json:"output_ref,omitempty"`
}

// Final says whether the call has its final state.
func (r *Record) Final() bool { return r.State == Done || r.State == Cancelled || r.State == Failed }

// fn is the function rec is a call of.
func (r *Record) fn() Func {
	return Func{Workspace: r.Workspace, AppJobID: r.AppJobID, Name: r.Function}
}
