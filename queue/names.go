// Package queue owns caravan's warm function calls on NATS JetStream: one
// work-queue stream per callable function, a durable pull consumer its
// workers share, call records (and results) in a KV bucket kept 7 days,
// and payloads over InlineLimit in an object store. Queue is what caravan
// server uses; Worker is what `caravan worker` runs in a task. Embedded
// runs a NATS server in caravan server's own process.
package queue

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Limits and retention.
const (
	// InlineLimit is the largest payload (an input, a result record)
	// carried in a message or KV value; past it the payload goes to the
	// object store and the message carries its name.
	InlineLimit = 256 << 10
	// MaxInput is the largest call input.
	MaxInput = 16 << 20
	// MaxMessage is the embedded server's max_payload: an inline payload
	// and its headers fit with room to spare.
	MaxMessage = 1 << 20
	// Retention is how long a call's record and result are readable.
	Retention = 7 * 24 * time.Hour
	// DefaultAckWait is how long a worker holds an input without a
	// heartbeat before JetStream gives it to another; workers heartbeat
	// every third of it.
	DefaultAckWait = 30 * time.Second
	// DefaultMaxAttempts is how many times an input is delivered before it
	// is dead-lettered: its call fails with ErrDeadLetter's reason.
	DefaultMaxAttempts = 3
)

// Buckets and subjects.
const (
	ResultsBucket = "caravan-calls"
	// ConsumerName is the durable pull consumer of every function's stream.
	ConsumerName = "workers"
	subjectCalls = "caravan.calls"
	subjectDone  = "caravan.done"
	subjectStop  = "caravan.cancel"
	// Workers ask caravan server (results.go) to store a result, and
	// whether a call is already final, on subjects of their function.
	subjectResults = "caravan.results"
	subjectStatus  = "caravan.status"
	// serversGroup is the queue group of caravan servers answering them.
	serversGroup = "caravan-servers"

	hdrCall     = "Caravan-Call"
	hdrInputRef = "Caravan-Input-Ref"
	hdrSpawned  = "Caravan-Spawned"
	// hdrSig signs an input for its function (InputKey): a message that
	// reaches a function's stream any other way is not run.
	hdrSig = "Caravan-Sig"
)

// Func names one callable function of one deployed app.
type Func struct {
	Workspace string
	// AppJobID is the app's Nomad job ID (it carries the environment).
	AppJobID string
	Name     string
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Check says whether f's parts can be part of a stream name and subject.
func (f Func) Check() error {
	for _, p := range []struct{ what, v string }{{"workspace", f.Workspace}, {"app job", f.AppJobID}, {"function", f.Name}} {
		if !nameRE.MatchString(p.v) {
			return fmt.Errorf("queue: %s %q is not letters, digits, - and _", p.what, p.v)
		}
	}
	return nil
}

// Stream is the name of f's work-queue stream.
func (f Func) Stream() string { return "CALLS_" + f.joined() }

// joined is f's app job ID and name in one token of [a-zA-Z0-9_-] that
// no other pair gives: "<job>_<name>" when neither holds "_" (every
// name caravan makes, as before), else each with "_" doubled, joined by
// "_-" (so "a_b"+"c" is "a__b_-c" and "a"+"b_c" is "a_-b__c"). Read left
// to right, "__" is a "_" and "_-" the join, so a token names one pair;
// and a token of the first form has one "_", one of the second at least
// three.
func (f Func) joined() string {
	if !strings.Contains(f.AppJobID, "_") && !strings.Contains(f.Name, "_") {
		return f.AppJobID + "_" + f.Name
	}
	esc := func(s string) string { return strings.ReplaceAll(s, "_", "__") }
	return esc(f.AppJobID) + "_-" + esc(f.Name)
}

// Subject is the subject f's inputs are published on:
// caravan.calls.<workspace>.<app job>.<function>.
func (f Func) Subject() string {
	return strings.Join([]string{subjectCalls, f.Workspace, f.AppJobID, f.Name}, ".")
}

func (f Func) String() string { return f.AppJobID + "/" + f.Name }

// doneSubject carries the record of call id when it is finished.
func doneSubject(id string) string { return subjectDone + "." + id }

// InputsBucket is the object store of f's inputs over InlineLimit, and
// OutputsBucket of its results over it: one per function, so a worker's
// credential reaches its own (WorkerPermissions) and no other's.
func (f Func) InputsBucket() string  { return "in_" + f.joined() }
func (f Func) OutputsBucket() string { return "out_" + f.joined() }

// part is f as subject tokens: <workspace>.<app job>.<function>.
func (f Func) part() string { return f.Workspace + "." + f.AppJobID + "." + f.Name }

// funcOf reads the Func of a subject prefix + "." + f.part().
func funcOf(prefix, subject string) (Func, bool) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok {
		return Func{}, false
	}
	p := strings.Split(rest, ".")
	if len(p) != 3 {
		return Func{}, false
	}
	f := Func{Workspace: p[0], AppJobID: p[1], Name: p[2]}
	return f, f.Check() == nil
}

func resultsSubject(f Func) string { return subjectResults + "." + f.part() }
func statusSubject(f Func) string  { return subjectStatus + "." + f.part() }

// stopSubject asks the worker of f running call id to stop it.
func stopSubject(f Func, id string) string { return subjectStop + "." + f.part() + "." + id }

var idRE = regexp.MustCompile(`^[a-zA-Z0-9]{8,40}(\.[0-9]{1,7})?$`)

// ValidID says whether id can be a call ID (a spawn's, or a map item's
// "<map>.<index>").
func ValidID(id string) bool { return idRE.MatchString(id) }
