package api

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrorCode names a kind of failure on the wire: the "kind" of every error
// the API answers. Each has one HTTP status, in the codes table below.
type ErrorCode string

// Error codes. The server answers each with the status of the codes table;
// the client reads the code from the answer's body, or, when a body has no
// error (a proxy answered, say), from the status.
const (
	// CodeUnauthorized: a missing, malformed, unknown or revoked token
	// (401).
	CodeUnauthorized ErrorCode = "unauthorized"
	// CodeForbidden: the token may not act on that workspace (403).
	CodeForbidden ErrorCode = "forbidden"
	// CodePolicyDenied: the server's policy does not let the app's
	// workspace run what the spec asks for (a driver, more CPU, memory,
	// GPUs or containers than its limits); the message names the policy
	// block, each function and each limit (403). Nothing changed.
	CodePolicyDenied ErrorCode = "policy_denied"
	// CodeBadRequest: a request that cannot be carried out as asked (400).
	CodeBadRequest ErrorCode = "bad_request"
	// CodeInvalidSpec: a spec that does not load or validate; the error
	// carries its diagnostics (400). Nothing changed.
	CodeInvalidSpec ErrorCode = "invalid_spec"
	// CodeNotFound: no such app, version, function or token among those the
	// token may see (404).
	CodeNotFound ErrorCode = "not_found"
	// CodeOwnership: a Nomad job with caravan's name that caravan does not
	// own (409).
	CodeOwnership ErrorCode = "ownership"
	// CodeHostTaken: a hostname another app serves (409).
	CodeHostTaken ErrorCode = "host_taken"
	// CodeDomainUnverified: a custom domain the workspace has not proved
	// it controls; the message names the TXT record to create (409).
	CodeDomainUnverified ErrorCode = "domain_unverified"
	// CodeConflict: the app is not in a state that allows the change (no
	// live version to roll over, a version that never went live), or its
	// record changed underneath the request; retrying may succeed; or its
	// workspace has no Nomad namespace and the server may not create one
	// (409).
	CodeConflict ErrorCode = "conflict"
	// CodeCanaryPending: a change refused while a canary awaits promotion
	// or abort (409).
	CodeCanaryPending ErrorCode = "canary_pending"
	// CodeBundleMissing: a deploy or rollback names a code bundle the
	// server does not store (never uploaded, or garbage-collected); the
	// message names the functions and bundles (409). Nothing changed.
	CodeBundleMissing ErrorCode = "bundle_missing"
	// CodeInputTooLarge: a call's input over 16 KiB, or a request body
	// over its bound (a spec over 256 KiB, a change body over 64 KiB) (413).
	CodeInputTooLarge ErrorCode = "input_too_large"
	// CodeRolloutFailed: the new version could not be placed or did not
	// become healthy; the previous one keeps serving. The error carries
	// the function, allocation and version (422).
	CodeRolloutFailed ErrorCode = "rollout_failed"
	// CodeInternal: anything else; the server logs it (500).
	CodeInternal ErrorCode = "internal"
	// CodeUnavailable: the server cannot reach what it needs (Consul) to
	// answer now, or a change lost its app's lock to another server; retry
	// later (503).
	CodeUnavailable ErrorCode = "unavailable"
)

// codes is the one table of error codes and their HTTP statuses. The server
// answers with it (Status), the client reads it backwards (CodeOf) and
// the README and server's package doc list it. Where codes share a status,
// the first listed is what a bare status means.
var codes = []struct {
	code   ErrorCode
	status int
}{
	{CodeBadRequest, http.StatusBadRequest},
	{CodeInvalidSpec, http.StatusBadRequest},
	{CodeUnauthorized, http.StatusUnauthorized},
	{CodeForbidden, http.StatusForbidden},
	{CodePolicyDenied, http.StatusForbidden},
	{CodeNotFound, http.StatusNotFound},
	{CodeConflict, http.StatusConflict},
	{CodeOwnership, http.StatusConflict},
	{CodeHostTaken, http.StatusConflict},
	{CodeDomainUnverified, http.StatusConflict},
	{CodeCanaryPending, http.StatusConflict},
	{CodeBundleMissing, http.StatusConflict},
	{CodeInputTooLarge, http.StatusRequestEntityTooLarge},
	{CodeRolloutFailed, http.StatusUnprocessableEntity},
	{CodeInternal, http.StatusInternalServerError},
	{CodeUnavailable, http.StatusServiceUnavailable},
}

// Codes returns every error code, in the order of the table.
func Codes() []ErrorCode {
	out := make([]ErrorCode, len(codes))
	for i, c := range codes {
		out[i] = c.code
	}
	return out
}

// Status is the HTTP status the server answers code with; 500 for a code
// not in the table.
func (c ErrorCode) Status() int {
	for _, e := range codes {
		if e.code == c {
			return e.status
		}
	}
	return http.StatusInternalServerError
}

// CodeOf is the code a bare HTTP error status means: the first code of the
// table with that status, else internal (including for any 5xx not listed).
func CodeOf(status int) ErrorCode {
	for _, e := range codes {
		if e.status == status {
			return e.code
		}
	}
	if status >= 400 && status < 500 {
		return CodeBadRequest
	}
	return CodeInternal
}

// Known reports whether c is in the table.
func (c ErrorCode) Known() bool {
	for _, e := range codes {
		if e.code == c {
			return true
		}
	}
	return false
}

// APIError is the error envelope of every failed request, {"error": APIError},
// and what the client returns for one: check it with errors.As, or its code
// with ErrorCodeOf.
type APIError struct {
	// Kind is the error's code; JSON "kind".
	Kind    ErrorCode `json:"kind"`
	Message string    `json:"message"`
	// Diagnostics are an invalid_spec's problems, with their source ranges.
	Diagnostics []Diagnostic `json:"diagnostics,omitempty"`
	// Function, AllocID and Version say what failed in a rollout_failed.
	Function string `json:"function,omitempty"`
	AllocID  string `json:"alloc_id,omitempty"`
	Version  int    `json:"version,omitempty"`
	// Status is the HTTP status, filled in by the client.
	Status int `json:"-"`
}

func (e *APIError) Error() string { return e.Message }

// ErrorCode is e's code; internal when it has none.
func (e *APIError) ErrorCode() ErrorCode {
	if e.Kind == "" {
		return CodeInternal
	}
	return e.Kind
}

// Errorf returns an *APIError with code and a formatted message, for errors
// that need no type of their own.
func Errorf(code ErrorCode, format string, args ...any) *APIError {
	return &APIError{Kind: code, Message: fmt.Sprintf(format, args...)}
}

// Coder is an error that knows its code. The orchestrator's error types
// and *APIError are Coders; the server answers any error through it.
type Coder interface {
	error
	ErrorCode() ErrorCode
}

// ErrorCodeOf returns the code of the first error in err's tree that has
// one, "" for nil, and internal for an error without a code.
func ErrorCodeOf(err error) ErrorCode {
	if err == nil {
		return ""
	}
	var c Coder
	if errors.As(err, &c) {
		return c.ErrorCode()
	}
	return CodeInternal
}
