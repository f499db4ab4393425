package orchestrator

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/bundle"

	"github.com/caravanhq/caravan/policy"
	"github.com/hashicorp/hcl/v2"
)

// Every error the orchestrator returns on purpose has a code: the server
// answers it with the HTTP status api's table gives that code, and a client
// gets the code back. An error without one is a bug or an outage, and
// answers 500. The server's tests list every type here and fail if one
// lacks a code.

// DiagnosticsError is a spec that did not load or validate. Nothing was
// changed.
type DiagnosticsError struct {
	Diags hcl.Diagnostics
}

func (e *DiagnosticsError) Error() string {
	var b strings.Builder
	n := 0
	for _, d := range e.Diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if n > 0 {
			b.WriteString("; ")
		}
		n++
		if d.Subject != nil {
			fmt.Fprintf(&b, "%s: ", d.Subject)
		}
		b.WriteString(d.Summary)
	}
	return fmt.Sprintf("invalid spec (%d errors): %s", n, b.String())
}

// OwnershipError is a Nomad job with caravan's ID that caravan does not own
// (or that belongs to another app or workspace). caravan leaves it alone.
type OwnershipError struct {
	JobID string
	Why   string
}

func (e *OwnershipError) Error() string {
	return fmt.Sprintf("Nomad job %q is not caravan's to change: %s. Rename the app or remove the job by hand", e.JobID, e.Why)
}

// ForbiddenError is a token that may not act on a workspace.
type ForbiddenError struct {
	Token, Workspace string
}

func (e *ForbiddenError) Error() string {
	return fmt.Sprintf("token %q may not deploy to workspace %q", e.Token, e.Workspace)
}

// PolicyError is a spec its workspace's policy does not allow: a driver,
// or more CPU, memory, GPUs or containers than its limits. It is returned
// before anything is numbered, claimed or registered.
type PolicyError struct {
	// Policy names the rules the app was held to, with their file and
	// line (`workspace "*" (policy.hcl:9)`), or the policy file when no
	// block covers the workspace.
	Policy     string
	Workspace  string
	App        string
	Violations []policy.Violation
}

func (e *PolicyError) Error() string {
	vs := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		vs[i] = v.String()
	}
	return fmt.Sprintf("policy %s does not allow app %q of workspace %q: %s",
		e.Policy, e.App, e.Workspace, strings.Join(vs, "; "))
}

// NotFoundError is an app, or a version of one, that does not exist.
type NotFoundError struct {
	App string
	Why string
}

func (e *NotFoundError) Error() string {
	if e.Why != "" {
		return fmt.Sprintf("app %q: %s", e.App, e.Why)
	}
	return fmt.Sprintf("no app %q: `caravan app list` shows the apps you can see", e.App)
}

// BadRequestError is a request that cannot be carried out as asked.
type BadRequestError struct {
	Why string
}

func (e *BadRequestError) Error() string { return e.Why }

// RolloutError is a new version that could not be placed or did not become
// healthy. The previous version, if any, keeps serving (Nomad reverts it).
type RolloutError struct {
	// Function that failed, when known.
	Function string
	// Cause in a sentence, e.g. a task's last event or a placement failure.
	Cause string
	// AllocID is the Nomad allocation that failed, when there is one.
	AllocID string
	// Version that failed.
	Version int
}

func (e *RolloutError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "version %d failed", e.Version)
	if e.Function != "" {
		fmt.Fprintf(&b, ": function %q", e.Function)
	}
	fmt.Fprintf(&b, ": %s", e.Cause)
	if e.AllocID != "" {
		fmt.Fprintf(&b, " (allocation %s; `nomad alloc status %s` has more)", shortID(e.AllocID), shortID(e.AllocID))
	}
	return b.String()
}

// DeploymentMissingError is a registered version that needs a Nomad
// deployment (see expectsDeployment) for which none appeared: within
// Waited, or a later version's came first (Superseded). caravan cannot
// tell whether the version is healthy, and does not call it live.
type DeploymentMissingError struct {
	JobID string
	// JobVersion is Nomad's number of the version; Version caravan's.
	JobVersion uint64
	Version    int
	Waited     time.Duration
	// Latest is the Nomad version of the job's latest deployment, when
	// it has one.
	Latest *uint64
	// Superseded is the Nomad version whose deployment came instead.
	Superseded *uint64
}

func (e *DeploymentMissingError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "version %d failed: Nomad opened no deployment for job %s version %d", e.Version, e.JobID, e.JobVersion)
	switch {
	case e.Superseded != nil:
		fmt.Fprintf(&b, ": version %d was registered after it and has the latest deployment", *e.Superseded)
	case e.Latest != nil:
		fmt.Fprintf(&b, " within %s (the latest is of version %d)", e.Waited, *e.Latest)
	default:
		fmt.Fprintf(&b, " within %s (the job has none)", e.Waited)
	}
	fmt.Fprintf(&b, "; `nomad job status %s` shows what Nomad runs", e.JobID)
	return b.String()
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// HostTakenError is a hostname another app already serves, or one a
// claim of another workspace's overlaps (a wildcard over it, a name under
// it). Owner and Conflict are empty when the caller may not see them (see
// visibleTo): another workspace learns that the name is taken, not by whom.
type HostTakenError struct {
	Host string
	// Conflict is the claim in the way when it is not Host itself: a
	// wildcard over Host, or a name under Host's wildcard.
	Conflict string
	Owner    HostOwner
}

func (e *HostTakenError) Error() string {
	switch {
	case e.Owner.App == "":
		return fmt.Sprintf("hostname %s is taken by another workspace: choose another label or domain", e.Host)
	case e.Conflict != "":
		return fmt.Sprintf("hostname %s overlaps %s, served by app %q in workspace %q: choose another label or domain, or stop that app",
			e.Host, e.Conflict, e.Owner.App, e.Owner.Workspace)
	}
	return fmt.Sprintf("hostname %s is already served by app %q in workspace %q: choose another label or domain, or stop that app",
		e.Host, e.Owner.App, e.Owner.Workspace)
}

// DomainUnverifiedError is a custom domain its workspace has not proved it
// controls: each challenge names the TXT record to create and its value.
type DomainUnverifiedError struct {
	Workspace  string
	Challenges []api.DomainChallenge
	// Why is what the lookup found, when it found something else.
	Why string
}

func (e *DomainUnverifiedError) Error() string {
	var b strings.Builder
	for i, c := range e.Challenges {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "custom domain %s is not verified for workspace %q: create a DNS TXT record %s with the value %q",
			c.Domain, e.Workspace, c.Record, c.Value)
	}
	if e.Why != "" {
		fmt.Fprintf(&b, " (%s)", e.Why)
	}
	b.WriteString(", then deploy again or run `caravan domain verify`; an operator can also run `caravan domain assign`")
	return b.String()
}

// ConflictError is a change the app's state does not allow now (no live
// version to roll over, a version that never went live), or a
// check-and-set write that lost (ErrConflict). Nothing was changed.
type ConflictError struct {
	// App is the app's name, when the error concerns one.
	App string
	Why string
}

func (e *ConflictError) Error() string {
	if e.App != "" {
		return fmt.Sprintf("app %q: %s", e.App, e.Why)
	}
	return e.Why
}

// SpecTooLargeError is a spec over spec.MaxSize bytes, refused before it
// is parsed, numbered, claimed or written.
type SpecTooLargeError struct {
	Size, Limit int
}

func (e *SpecTooLargeError) Error() string {
	return fmt.Sprintf("the spec is %d bytes, over the limit of %d bytes (%d KiB): a version record in Consul KV holds the spec, "+
		"and a Consul KV value is at most 512 KiB; move large data into files the function reads", e.Size, e.Limit, e.Limit>>10)
}

// BundleMissingError is a change whose code the bundle store lacks:
// Missing maps each function to the bundle it names. Version is the
// version a rollback would restore (0: a deploy). Nothing changed.
type BundleMissingError struct {
	Version int
	Missing map[string]string
}

func (e *BundleMissingError) Error() string {
	var parts []string
	for _, fn := range slices.Sorted(maps.Keys(e.Missing)) {
		parts = append(parts, fmt.Sprintf("function %s's bundle %s", fn, e.Missing[fn][:12]))
	}
	if e.Version > 0 {
		return fmt.Sprintf("version %d's code is gone from the bundle store (%s): it cannot be restored, and nothing changed; "+
			"roll back to another version, or deploy that code again", e.Version, strings.Join(parts, ", "))
	}
	return fmt.Sprintf("the server has no %s: upload it first (caravan deploy does, PUT /v1/bundles/{id}); nothing changed", strings.Join(parts, ", "))
}

// BundleTooLargeError is an upload past the bundle limits, with its
// largest files as far as it was read.
type BundleTooLargeError struct {
	Limit int64
	// Files: the bound was the number of files, not their size.
	Files   bool
	Largest []bundle.File
}

func (e *BundleTooLargeError) Error() string {
	if e.Files {
		return fmt.Sprintf("the bundle holds more than %d files: exclude what the functions do not need (.caravanignore, files { ... })", e.Limit)
	}
	return fmt.Sprintf("the bundle's files come to more than %s, this server's limit (the largest: %s): exclude what the functions do not need (.caravanignore, files { ... })",
		bundle.FormatSize(e.Limit), bundle.DescribeFiles(e.Largest))
}

// BundleInvalidError is an upload that is not the bundle its ID names.
type BundleInvalidError struct{ Why string }

func (e *BundleInvalidError) Error() string { return "bundle refused: " + e.Why }

// BundleAccessError is a bundle fetch that its URL does not allow.
type BundleAccessError struct{ Why string }

func (e *BundleAccessError) Error() string { return "bundle fetch refused: " + e.Why }

// UnavailableError is a change that could not go on for now (its lock
// was lost, say); retrying later may succeed.
type UnavailableError struct {
	Why string
}

func (e *UnavailableError) Error() string { return e.Why }

// NamespaceMissingError is a workspace whose Nomad namespace does not
// exist, on a server that may not create it (--create-namespaces off).
// Nothing was registered.
type NamespaceMissingError struct {
	Namespace, Workspace string
}

func (e *NamespaceMissingError) Error() string {
	return fmt.Sprintf("Nomad has no namespace %s for workspace %q, and this caravan server does not create namespaces: "+
		"create it with `nomad namespace apply -description \"caravan workspace %s\" %s` (or run caravan server with "+
		"--create-namespaces and a Nomad management token)", e.Namespace, e.Workspace, e.Workspace, e.Namespace)
}

func (e *UnavailableError) ErrorCode() api.ErrorCode { return api.CodeUnavailable }
func (e *NamespaceMissingError) ErrorCode() api.ErrorCode {
	return api.CodeConflict
}
func (e *TransitionError) ErrorCode() api.ErrorCode  { return api.CodeConflict }
func (e *DiagnosticsError) ErrorCode() api.ErrorCode { return api.CodeInvalidSpec }
func (e *OwnershipError) ErrorCode() api.ErrorCode   { return api.CodeOwnership }
func (e *ForbiddenError) ErrorCode() api.ErrorCode   { return api.CodeForbidden }
func (e *NotFoundError) ErrorCode() api.ErrorCode    { return api.CodeNotFound }
func (e *BadRequestError) ErrorCode() api.ErrorCode  { return api.CodeBadRequest }
func (e *RolloutError) ErrorCode() api.ErrorCode     { return api.CodeRolloutFailed }
func (e *DeploymentMissingError) ErrorCode() api.ErrorCode {
	return api.CodeRolloutFailed
}
func (e *HostTakenError) ErrorCode() api.ErrorCode { return api.CodeHostTaken }
func (e *DomainUnverifiedError) ErrorCode() api.ErrorCode {
	return api.CodeDomainUnverified
}
func (e *PolicyError) ErrorCode() api.ErrorCode         { return api.CodePolicyDenied }
func (e *ConflictError) ErrorCode() api.ErrorCode       { return api.CodeConflict }
func (e *CanaryPendingError) ErrorCode() api.ErrorCode  { return api.CodeCanaryPending }
func (e *InputTooLargeError) ErrorCode() api.ErrorCode  { return api.CodeInputTooLarge }
func (e *SpecTooLargeError) ErrorCode() api.ErrorCode   { return api.CodeInputTooLarge }
func (e *BundleMissingError) ErrorCode() api.ErrorCode  { return api.CodeBundleMissing }
func (e *BundleTooLargeError) ErrorCode() api.ErrorCode { return api.CodeInputTooLarge }
func (e *BundleInvalidError) ErrorCode() api.ErrorCode  { return api.CodeBadRequest }
func (e *BundleAccessError) ErrorCode() api.ErrorCode   { return api.CodeUnauthorized }
func (e *AgentAccessError) ErrorCode() api.ErrorCode    { return api.CodeUnauthorized }

// Compile-time guards: each error type is an api.Coder.
var (
	_ api.Coder = (*DiagnosticsError)(nil)
	_ api.Coder = (*AgentAccessError)(nil)
	_ api.Coder = (*UnavailableError)(nil)
	_ api.Coder = (*TransitionError)(nil)
	_ api.Coder = (*OwnershipError)(nil)
	_ api.Coder = (*ForbiddenError)(nil)
	_ api.Coder = (*NotFoundError)(nil)
	_ api.Coder = (*PolicyError)(nil)
	_ api.Coder = (*BadRequestError)(nil)
	_ api.Coder = (*RolloutError)(nil)
	_ api.Coder = (*DeploymentMissingError)(nil)
	_ api.Coder = (*HostTakenError)(nil)
	_ api.Coder = (*DomainUnverifiedError)(nil)
	_ api.Coder = (*ConflictError)(nil)
	_ api.Coder = (*CanaryPendingError)(nil)
	_ api.Coder = (*InputTooLargeError)(nil)
	_ api.Coder = (*SpecTooLargeError)(nil)
	_ api.Coder = (*BundleMissingError)(nil)
	_ api.Coder = (*BundleTooLargeError)(nil)
	_ api.Coder = (*BundleInvalidError)(nil)
	_ api.Coder = (*BundleAccessError)(nil)
)
