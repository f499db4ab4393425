package api

import "time"

// Caller is who asks for a change: a token's name, its ID (names are free
// text and need not be unique; the ID is what history can be traced by)
// and the workspace it may act on ("*" for every workspace). caravan's own
// background work (auto-promote, auto-abort) has a name and no ID.
type Caller struct {
	Name      string `json:"name"`
	TokenID   string `json:"token_id,omitempty"`
	Workspace string `json:"workspace"`
}

// AppRef names an app: by name alone when that is unambiguous among the
// apps the caller may see, or with its workspace and environment.
type AppRef struct {
	Workspace   string `json:"workspace,omitempty"`
	Environment string `json:"environment,omitempty"`
	App         string `json:"app"`
	// Serve names the app's `caravan serve` copy instead of the app.
	Serve bool `json:"serve,omitempty"`
}

// AppState is where an app stands.
type AppState string

// App states.
const (
	StateDeployed AppState = "deployed"
	// StateFailed: the latest version failed; LiveVersion, if any, still
	// serves.
	StateFailed  AppState = "failed"
	StateStopped AppState = "stopped"
)

// VersionKind is how a version came to be.
type VersionKind string

// Version kinds.
const (
	KindDeploy   VersionKind = "deploy"
	KindRollover VersionKind = "rollover"
	KindRollback VersionKind = "rollback"
)

// VersionStatus is where a version of an app stands.
type VersionStatus string

// Version statuses.
const (
	StatusPending    VersionStatus = "pending"
	StatusLive       VersionStatus = "live"
	StatusFailed     VersionStatus = "failed"
	StatusSuperseded VersionStatus = "superseded"
	// StatusCanary marks a version whose canaries take part of the traffic
	// while the previous version stays live; StatusAborted one whose
	// canaries were removed.
	StatusCanary  VersionStatus = "canary"
	StatusAborted VersionStatus = "aborted"
)

// Change says what a deploy did to a function.
type Change string

// Changes to a function.
const (
	Created   Change = "created"
	Updated   Change = "updated"
	Unchanged Change = "unchanged"
	Removed   Change = "removed"
)

// FunctionResult is one function of a deployed app.
type FunctionResult struct {
	Name   string `json:"name"`
	Change Change `json:"change"`
	// Containers is how many run; for an autoscaled function, the fewest
	// (0: it scales to zero) and MaxContainers the most.
	Containers    int    `json:"containers"`
	MaxContainers int    `json:"max_containers,omitempty"`
	URL           string `json:"url,omitempty"`
	// CustomDomains route to the function too.
	CustomDomains []string `json:"custom_domains,omitempty"`
	// Schedule is a scheduled function's cron expression (UTC).
	Schedule string `json:"schedule,omitempty"`
	// Callable marks a function that runs once per `caravan call`.
	Callable bool `json:"callable,omitempty"`
	// CodeChanged: the function's bundle differs from the live version's.
	CodeChanged bool `json:"code_changed,omitempty"`
}

// DeployResult is what a deploy did.
type DeployResult struct {
	Workspace string           `json:"workspace"`
	App       string           `json:"app"`
	JobID     string           `json:"job_id"`
	Version   int              `json:"version"`
	Changed   bool             `json:"changed"`
	SpecHash  string           `json:"spec_hash"`
	Functions []FunctionResult `json:"functions"`
	// Kind is deploy, rollover or rollback.
	Kind VersionKind `json:"kind"`
	// Warnings are the spec's non-fatal diagnostics.
	Warnings []Diagnostic  `json:"warnings,omitempty"`
	Duration time.Duration `json:"duration"`
	// Queued is how much of Duration the rollout waited for its turn to
	// reach Nomad (caravan server's --max-starting).
	Queued time.Duration `json:"queued,omitempty"`
	// Canary is set when the version went live as a canary: it takes part
	// of the traffic until promoted or aborted.
	Canary *CanaryState `json:"canary,omitempty"`
}

// Diagnostic is an hcl.Diagnostic as it crosses the API: everything but the
// expression and evaluation context, so a client can print it with the
// source line exactly as `caravan validate` does (orchestrator.FromWire
// turns it back into one).
type Diagnostic struct {
	// Severity is "error" or "warning".
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
	Detail   string `json:"detail,omitempty"`
	Subject  *Range `json:"subject,omitempty"`
	Context  *Range `json:"context,omitempty"`
}

// Range is a span of a source file. Its JSON is that of hcl.Range (no
// tags, Go field names), which is what the API has always carried; api
// declares its own so that a client does not link HCL and cty.
type Range struct {
	Filename   string
	Start, End Pos
}

// Pos is a position in a source file, as hcl.Pos: Line and Column count
// from 1, Byte from 0.
type Pos struct {
	Line, Column, Byte int
}

// Event is something that happened to a version after it was deployed:
// its canary went live, was promoted or aborted.
type Event struct {
	At   time.Time `json:"at"`
	What string    `json:"what"`
	Who  string    `json:"who,omitempty"`
	// WhoID is the ID of the token Who names.
	WhoID string `json:"who_id,omitempty"`
}

// CanaryState is an app's version in progress as a canary.
type CanaryState struct {
	Version int `json:"version"`
	// DeploymentID is the Nomad deployment of the canaries.
	DeploymentID string `json:"deployment_id"`
	// CanaryJob, instead, is the Nomad job the canary version's
	// autoscaled functions run in, each scaled from zero on its own
	// traffic: a canary deployed while they ran no container (Nomad
	// places no canary where nothing runs to replace).
	CanaryJob string `json:"canary_job,omitempty"`
	// JobFunctions are the functions of Functions that run in CanaryJob
	// when the version also changes functions that run containers, whose
	// canaries are Nomad's (DeploymentID); with a CanaryJob and none
	// listed, all of Functions run there.
	JobFunctions []string `json:"job_functions,omitempty"`
	Traffic      int      `json:"traffic"`
	Canaries     int      `json:"canaries"`
	// Functions are the web functions whose traffic is split.
	Functions []string  `json:"functions,omitempty"`
	Since     time.Time `json:"since"`
	// PromoteAt is when caravan promotes it on its own (zero: never).
	PromoteAt time.Time `json:"promote_at,omitzero"`
	// Previews are the canaries' own URLs, by function.
	Previews map[string]string `json:"previews,omitempty"`
	// Keys are the Consul KV keys of the published splits.
	Keys []string `json:"keys,omitempty"`
}

// PlanResult is what a deploy of a spec would do, found without changing
// anything.
type PlanResult struct {
	Workspace string `json:"workspace"`
	App       string `json:"app"`
	JobID     string `json:"job_id"`
	// Changed is false when a deploy would be a no-op.
	Changed bool `json:"changed"`
	// Version is the version a deploy would create; LiveVersion the one
	// serving now (0: none).
	Version     int            `json:"version,omitempty"`
	LiveVersion int            `json:"live_version,omitempty"`
	Functions   []FunctionPlan `json:"functions"`
	// Diff is Nomad's plan diff, one line a change, caravan's own
	// bookkeeping meta left out.
	Diff []string `json:"diff,omitempty"`
	// HostsAdded and HostsRemoved are the hostnames the app would start and
	// stop serving; Certificates those that would get a new certificate.
	HostsAdded   []string `json:"hosts_added,omitempty"`
	HostsRemoved []string `json:"hosts_removed,omitempty"`
	Certificates []string `json:"certificates,omitempty"`
	// Problems would make the deploy fail: functions Nomad cannot place,
	// hostnames another app serves.
	Problems []string     `json:"problems,omitempty"`
	Warnings []Diagnostic `json:"warnings,omitempty"`
}

// FunctionPlan is what a deploy would do to one function's containers.
type FunctionPlan struct {
	Name        string `json:"name"`
	Change      Change `json:"change"`
	Place       uint64 `json:"place,omitempty"`
	Stop        uint64 `json:"stop,omitempty"`
	InPlace     uint64 `json:"in_place,omitempty"`
	Destructive uint64 `json:"destructive,omitempty"`
	Canary      uint64 `json:"canary,omitempty"`
	Unplaceable string `json:"unplaceable,omitempty"`
	// CodeChanged: the function's bundle differs from the live version's.
	CodeChanged bool `json:"code_changed,omitempty"`
}

// History is an app's record and the versions of its current history.
type History struct {
	App      *AppRecord       `json:"app"`
	Versions []*VersionRecord `json:"versions"`
}

// AppRecord is what caravan keeps about an app between deploys.
type AppRecord struct {
	Workspace   string `json:"workspace"`
	App         string `json:"app"`
	Environment string `json:"environment,omitempty"`
	JobID       string `json:"job_id"`
	// Serve marks a `caravan serve` copy.
	Serve bool `json:"serve,omitempty"`
	// Generation starts at 1 and grows each time a stopped app is deployed
	// again, which starts a new history.
	Generation int      `json:"generation"`
	State      AppState `json:"state"`
	// LatestVersion is the last version number handed out; LiveVersion the
	// one serving (0: none).
	LatestVersion int `json:"latest_version"`
	LiveVersion   int `json:"live_version"`
	// Rollovers counts `app rollover`s; it is passed to every task as
	// CARAVAN_ROLLOVER so a rollover replaces every container.
	Rollovers int `json:"rollovers"`
	// Hosts are the hostnames the app has claimed.
	Hosts []string `json:"hosts,omitempty"`
	// Canary is the version in progress as a canary, if any.
	Canary *CanaryState `json:"canary,omitempty"`
	// StaleSplits are the Consul KV keys of traffic splits whose removal
	// failed: caravan server removes them until they are gone, and a
	// change of the app removes them before it rolls out.
	StaleSplits []string  `json:"stale_splits,omitempty"`
	UpdatedAt   time.Time `json:"updated_at"`
	StoppedBy   string    `json:"stopped_by,omitempty"`
	// StoppedByID is the ID of the token StoppedBy names.
	StoppedByID string `json:"stopped_by_id,omitempty"`
}

// VersionRecord is one entry of an app's history, with the spec it ran, so
// any version can be rolled back to, however old. History leaves Spec out.
type VersionRecord struct {
	Version  int           `json:"version"`
	Kind     VersionKind   `json:"kind"`
	Status   VersionStatus `json:"status"`
	Strategy string        `json:"strategy"`
	Who      string        `json:"who"`
	// WhoID is the ID of the token Who names (empty for caravan's own
	// work, and for versions recorded before IDs were).
	WhoID      string   `json:"who_id,omitempty"`
	Tag        string   `json:"tag,omitempty"`
	GitCommit  string   `json:"git_commit,omitempty"`
	GitDirty   bool     `json:"git_dirty,omitempty"`
	SpecHash   string   `json:"spec_hash"`
	Filename   string   `json:"filename"`
	Spec       string   `json:"spec"`
	RollbackOf int      `json:"rollback_of,omitempty"`
	Hosts      []string `json:"hosts,omitempty"`
	// Bundles maps each function with a bundle to its ID: a rollback to
	// the version restores this code.
	Bundles map[string]string `json:"bundles,omitempty"`
	// CodeChanged lists the functions whose bundle the version changed
	// from the version live when it was deployed.
	CodeChanged []string `json:"code_changed,omitempty"`
	Error       string   `json:"error,omitempty"`
	// Events are what happened to the version after it was deployed
	// (canary started, promoted, aborted).
	Events     []Event   `json:"events,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// HostOwner is the app that serves a hostname. A claim belongs to the
// app's identity (workspace, environment, app, serve copy or not); the
// job ID is for the message.
type HostOwner struct {
	JobID       string `json:"job_id"`
	Workspace   string `json:"workspace"`
	Environment string `json:"environment,omitempty"`
	App         string `json:"app"`
	Serve       bool   `json:"serve,omitempty"`
}

// DomainBody asks to verify a custom domain for a workspace, or (with an
// operator's token, workspace "*") to assign it to one. An empty
// workspace is the token's own.
type DomainBody struct {
	Domain    string `json:"domain"`
	Workspace string `json:"workspace,omitempty"`
}

// DomainBinding says which workspace may serve a custom domain and every
// name under it (a binding of example.com covers api.example.com and
// *.example.com), until a binding of a name below says otherwise.
type DomainBinding struct {
	Domain    string `json:"domain"`
	Workspace string `json:"workspace"`
	// Method is "dns" (the TXT record proved it) or "assigned" (an
	// operator said so).
	Method string    `json:"method"`
	By     string    `json:"by,omitempty"`
	At     time.Time `json:"at"`
}

// Domain binding methods.
const (
	DomainVerifiedByDNS = "dns"
	DomainAssigned      = "assigned"
)

// DomainChallenge is the TXT record that proves a workspace controls a
// custom domain: create Record (a TXT record) carrying Value.
type DomainChallenge struct {
	Domain string `json:"domain"`
	Record string `json:"record"`
	Value  string `json:"value"`
}

// AppSummary is one app as `caravan app list` shows it.
type AppSummary struct {
	Workspace   string `json:"workspace"`
	Environment string `json:"environment,omitempty"`
	App         string `json:"app"`
	JobID       string `json:"job_id"`
	// Serve marks a `caravan serve` copy.
	Serve bool `json:"serve,omitempty"`
	// State is deployed, failed (the latest version failed; LiveVersion,
	// if any, still serves) or stopped.
	State         AppState          `json:"state"`
	Version       int               `json:"version"`
	LatestVersion int               `json:"latest_version"`
	Functions     []FunctionSummary `json:"functions"`
	DeployedAt    time.Time         `json:"deployed_at"`
	// Canary is a version taking part of the traffic, awaiting promotion.
	Canary *CanaryState `json:"canary,omitempty"`
}

// FunctionSummary is one function of a listed app.
type FunctionSummary struct {
	Name string `json:"name"`
	URL  string `json:"url,omitempty"`
	// Service is a web function's Consul service name (the name the
	// caravan proxies report its load by).
	Service string `json:"service,omitempty"`
	// Running is how many of its containers run; Desired how many Nomad
	// is asked for (for an autoscaled function, the autoscaler's count).
	Running int `json:"running"`
	Desired int `json:"desired"`
	// Autoscaled marks a function whose count follows its load
	// (max_containers above min_containers); Load is that load summed over
	// the caravan proxies, nil when no proxy answered.
	Autoscaled bool          `json:"autoscaled,omitempty"`
	Load       *FunctionLoad `json:"load,omitempty"`
	// Schedule and LastRun describe a scheduled function.
	Schedule string     `json:"schedule,omitempty"`
	LastRun  *RunResult `json:"last_run,omitempty"`
	// Callable marks a function that runs once per `caravan call`.
	Callable bool `json:"callable,omitempty"`
}

// FunctionLoad is an autoscaled function's load as the caravan proxies
// report it, summed over those that answered.
type FunctionLoad struct {
	// InFlight is how many of its requests its containers serve now;
	// Queued how many wait for room (at zero, during a cold start, at
	// max_containers).
	InFlight int `json:"in_flight"`
	Queued   int `json:"queued"`
	// Proxies is how many proxies answered, of ProxiesKnown registered
	// and passing.
	Proxies      int `json:"proxies"`
	ProxiesKnown int `json:"proxies_known"`
}

// RunResult is one run of a scheduled function.
type RunResult struct {
	Function string `json:"function"`
	// JobID is the run's Nomad job (a child of the periodic job).
	JobID string `json:"job_id"`
	// Status is running, succeeded or failed.
	Status     string    `json:"status"`
	ExitCode   int       `json:"exit_code"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// CallResult is what a call returned.
type CallResult struct {
	Function string `json:"function"`
	// CallID names a warm call (its record is readable for 7 days:
	// `caravan call get ID`); Attempts is how many deliveries its input
	// took (more than 1 after a worker was lost mid-input).
	CallID   string `json:"call_id,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	// JobID is the Nomad job the call dispatched (a child of the
	// function's parameterized job); AllocID the allocation that ran it.
	JobID   string `json:"job_id"`
	AllocID string `json:"alloc_id,omitempty"`
	// ExitCode is the process's exit code; -1 when it did not run.
	ExitCode int `json:"exit_code"`
	// Output is what the function printed on stdout, Stderr on stderr,
	// each at most 4 MiB (orchestrator.OutputLimit; the rest is cut, and
	// the Truncated field says so).
	Output          string `json:"output"`
	OutputTruncated bool   `json:"output_truncated,omitempty"`
	Stderr          string `json:"stderr"`
	StderrTruncated bool   `json:"stderr_truncated,omitempty"`
	// Error says why the function did not run, when it did not.
	Error string `json:"error,omitempty"`
	// Duration is from the call to its result.
	Duration time.Duration `json:"duration"`
}

// CallStatus is a warm call as `caravan call get` reads it.
type CallStatus struct {
	ID       string `json:"id"`
	Function string `json:"function"`
	// AppJob is the app's Nomad job ID.
	AppJob string `json:"app_job"`
	// State is queued (waiting for or running in a worker), done,
	// cancelled, or failed (no answer from the function: dead-lettered).
	State    string    `json:"state"`
	Created  time.Time `json:"created"`
	Finished time.Time `json:"finished,omitzero"`
	// Result is the answer once done (or why there is none once failed).
	Result *CallResult `json:"result,omitempty"`
}

// MapItem is one line of a map's streamed answer: the result of input
// Index (counted from 0), in input order.
type MapItem struct {
	Index int `json:"index"`
	*CallResult
}

// TokenKind is what a credential opens; each check accepts only its own
// kind.
type TokenKind string

// Credential kinds.
const (
	// TokenAPI is the API's bearer token, "cvn_<id>_<secret>"
	// (CARAVAN_TOKEN). It opens no endpoint.
	TokenAPI TokenKind = "api"
	// TokenEndpoint is an endpoint key: Caravan-Key <id> and
	// Caravan-Secret <secret> open the requires_proxy_auth endpoints of its
	// one workspace, and nothing else (not the API).
	TokenEndpoint TokenKind = "endpoint"
)

// TokenBody is the body of POST /v1/tokens.
type TokenBody struct {
	Name string `json:"name"`
	// Workspace of the new token; default the caller's. Only a token for
	// every workspace ("*") may create tokens for another. An endpoint key
	// belongs to one workspace, never "*".
	Workspace string `json:"workspace,omitempty"`
	// Kind is api (the default) or endpoint.
	Kind TokenKind `json:"kind,omitempty"`
}

// TokenInfo describes a token; it never holds the secret.
type TokenInfo struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Workspace string `json:"workspace"`
	// Kind is api or endpoint; a record stored without one is api.
	Kind        TokenKind `json:"kind"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by,omitempty"`
	CreatedByID string    `json:"created_by_id,omitempty"`
	// RevokedAt is set on a revoked token: its record stays, as a
	// tombstone that history's IDs still lead to, and it is never
	// accepted again.
	RevokedAt   time.Time `json:"revoked_at,omitzero"`
	RevokedBy   string    `json:"revoked_by,omitempty"`
	RevokedByID string    `json:"revoked_by_id,omitempty"`
}

// NewToken is a token as created: its secret is shown this once.
type NewToken struct {
	TokenInfo
	Secret string `json:"secret"`
	// Token is "cvn_<id>_<secret>", for CARAVAN_TOKEN; empty for an
	// endpoint key, which is sent as Caravan-Key: ID, Caravan-Secret: Secret.
	Token string `json:"token,omitempty"`
}

// DeployBody is the body of POST /v1/deploy and POST /v1/plan. Spec is at
// most 256 KiB (413 input_too_large past it). Like every request body, it
// is refused (400 bad_request) with a field the server does not know or
// anything after it.
type DeployBody struct {
	Filename string `json:"filename"`
	Spec     string `json:"spec"`
	// Timeout is a Go duration such as "5m".
	Timeout string `json:"timeout,omitempty"`
	// Strategy overrides the spec's: "rolling", "recreate", "canary" or
	// "blue-green".
	Strategy  string `json:"strategy,omitempty"`
	Tag       string `json:"tag,omitempty"`
	GitCommit string `json:"git_commit,omitempty"`
	GitDirty  bool   `json:"git_dirty,omitempty"`
	// Serve deploys the `caravan serve` copy of the app.
	Serve bool `json:"serve,omitempty"`
	// Bundles maps each function that has a bundle (see spec.Files) to
	// the ID of the bundle the server stores for it (PUT
	// /v1/bundles/{id} first). Absent: the deploy carries no code, and
	// ${spec_dir} is the spec's directory on the machine that deploys.
	Bundles map[string]string `json:"bundles,omitempty"`
}

// BundlesBody lists bundle IDs: POST /v1/bundles/missing asks which of
// them workspace cannot deploy yet (the server lacks them, or workspace
// never uploaded their files), and answers with those.
type BundlesBody struct {
	IDs []string `json:"ids"`
	// Workspace the bundles are for: the token's when empty (an
	// operator's token must name one).
	Workspace string `json:"workspace,omitempty"`
}

// BundleInfo is a stored bundle: PUT /v1/bundles/{id} answers with it.
type BundleInfo struct {
	ID string `json:"id"`
	// Files and Size (of the files together, uncompressed); Stored is the
	// compressed size the server keeps.
	Files  int   `json:"files"`
	Size   int64 `json:"size"`
	Stored int64 `json:"stored"`
	// Existed: the server had it already and read nothing.
	Existed bool `json:"existed,omitempty"`
}

// ChangeBody is the body of rollover, rollback, promote, abort and stop,
// and (as a query) names the app for history, url, logs and call.
type ChangeBody struct {
	Workspace   string `json:"workspace,omitempty"`
	Environment string `json:"environment,omitempty"`
	// Version to roll back to (0: the one live before the current one).
	Version  int    `json:"version,omitempty"`
	Strategy string `json:"strategy,omitempty"`
	Timeout  string `json:"timeout,omitempty"`
	// Serve names the app's `caravan serve` copy.
	Serve bool `json:"serve,omitempty"`
}

// RunBody is the body of POST /v1/apps/{app}/run.
type RunBody struct {
	ChangeBody
	Function string `json:"function"`
}
