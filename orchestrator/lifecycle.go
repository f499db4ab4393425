package orchestrator

import (
	"fmt"
	"slices"
)

// A version's lifecycle:
//
//	pending ──► live ──► superseded
//	   │  ▲      ▲
//	   │  └──────┼──── canary ──► aborted
//	   ▼         │       │
//	 failed ◄────┴───────┘
//
// pending: recorded, on its way to Nomad; canary: its canaries take part of
// the traffic, awaiting promotion; live: serving; superseded: a later
// version went live; failed and aborted never served (alone). transition
// is the one place a status changes.
var transitions = map[VersionStatus][]VersionStatus{
	StatusPending:    {StatusLive, StatusFailed, StatusCanary},
	StatusCanary:     {StatusLive, StatusFailed, StatusAborted},
	StatusLive:       {StatusSuperseded},
	StatusSuperseded: nil,
	StatusFailed:     nil,
	StatusAborted:    nil,
}

// TransitionError is a change of a version's status its lifecycle does
// not allow: it was settled by someone else meanwhile.
type TransitionError struct {
	Version  int
	From, To VersionStatus
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("version %d is %s and cannot become %s", e.Version, e.From, e.To)
}

// transition moves v to status to, or refuses with a *TransitionError.
func transition(v *VersionRecord, to VersionStatus) error {
	if !slices.Contains(transitions[v.Status], to) {
		return &TransitionError{Version: v.Version, From: v.Status, To: to}
	}
	v.Status = to
	return nil
}

// wentLive reports whether a version with status s once served alone (so
// it can be rolled back to).
func wentLive(s VersionStatus) bool { return s == StatusLive || s == StatusSuperseded }
