package orchestrator

import (
	"context"
	"io"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// The orchestrator reaches Nomad and Consul through the two interfaces
// below and nothing else (as Nomad's deploymentwatcher reaches the rest of
// Nomad through a handful of methods). Every method takes the caller's
// context, hides the client's option structs, and answers what the
// orchestrator asks rather than what the HTTP API returns. NomadClient and
// ConsulClient adapt the official clients; unit tests use in-memory fakes.

// Nomad is what the orchestrator asks of Nomad.
type Nomad interface {
	// Namespace makes sure the Nomad namespace of workspace's jobs
	// (jobs.Namespace) exists, creating it if the client may; a
	// *NamespaceMissingError when it does not and may not.
	Namespace(ctx context.Context, workspace string) error
	// Job returns the job with id, nil when there is none.
	Job(ctx context.Context, id string) (*nomad.Job, error)
	// Plan runs the scheduler on job without changing anything.
	Plan(ctx context.Context, job *nomad.Job, diff bool) (*nomad.JobPlanResponse, error)
	// Register submits job; with modifyIndex > 0 only if the registered
	// job is still at that index (check-and-set). It returns the
	// evaluation's ID.
	Register(ctx context.Context, job *nomad.Job, modifyIndex uint64) (evalID string, err error)
	// Revert registers version of job id again.
	Revert(ctx context.Context, id string, version uint64) (evalID string, err error)
	// Deregister stops job id; purge also forgets it.
	Deregister(ctx context.Context, id string, purge bool) (evalID string, err error)
	// Jobs lists the jobs whose ID starts with prefix, with their meta.
	Jobs(ctx context.Context, prefix string) ([]*nomad.JobListStub, error)
	// Summary counts the allocations of job id by group and status.
	Summary(ctx context.Context, id string) (*nomad.JobSummary, error)
	// JobAllocations lists the allocations of job id; with waitIndex > 0
	// it blocks until they change past that index. It returns the index
	// to wait on next.
	JobAllocations(ctx context.Context, id string, waitIndex uint64) ([]*nomad.AllocationListStub, uint64, error)
	// Allocation reads one allocation.
	Allocation(ctx context.Context, id string) (*nomad.Allocation, error)

	// LatestDeployment is job id's most recent deployment (nil: none).
	LatestDeployment(ctx context.Context, jobID string) (*nomad.Deployment, error)
	// Deployment reads deployment id; with waitIndex > 0 it blocks until
	// it changes past that index. It returns the index to wait on next.
	Deployment(ctx context.Context, id string, waitIndex uint64) (*nomad.Deployment, uint64, error)
	// DeploymentAllocations lists the allocations of deployment id; with
	// waitIndex > 0 it blocks as Deployment does.
	DeploymentAllocations(ctx context.Context, id string, waitIndex uint64) ([]*nomad.AllocationListStub, uint64, error)
	// FailDeployment fails deployment id (auto_revert then restores the
	// job's last stable version).
	FailDeployment(ctx context.Context, id string) error
	// SetAllocHealth gives Nomad the verdict that allocations healthy of
	// deployment id are healthy (as its clients do once their checks
	// pass).
	SetAllocHealth(ctx context.Context, id string, healthy []string) error
	// PromoteDeployment promotes every canary of deployment id.
	PromoteDeployment(ctx context.Context, id string) error
	// Evaluation reads evaluation id, blocking as Deployment does.
	Evaluation(ctx context.Context, id string, waitIndex uint64) (*nomad.Evaluation, uint64, error)

	// ForcePeriodic launches a run of periodic job id now.
	ForcePeriodic(ctx context.Context, id string) (evalID string, err error)
	// Dispatch starts a run of parameterized job id with payload.
	Dispatch(ctx context.Context, id string, meta map[string]string, payload []byte) (jobID, evalID string, err error)
	// ReadFile reads at most limit bytes of a file of alloc's directory.
	ReadFile(ctx context.Context, alloc *nomad.Allocation, path string, limit int64) (io.ReadCloser, error)
	// FollowLogs streams a task's stdout or stderr from its start until
	// ctx ends.
	FollowLogs(ctx context.Context, alloc *nomad.Allocation, task, stream string) (<-chan *nomad.StreamFrame, <-chan error)
}

// Consul is what the orchestrator asks of Consul beyond its Store: where
// a service's instances are, and writes of Traefik's KV configuration.
type Consul interface {
	// Instances lists the instances of service (with tag, if not empty;
	// only those passing their checks, if passing). With waitIndex > 0 it
	// blocks until the list changes past that index. It returns the index
	// to wait on next.
	Instances(ctx context.Context, service, tag string, passing bool, waitIndex uint64) ([]Instance, uint64, error)
	// WriteKV applies ops in one transaction: all or none.
	WriteKV(ctx context.Context, ops []KVOp) error
	// DeleteKVTree deletes every key under prefix.
	DeleteKVTree(ctx context.Context, prefix string) error
}

// Instance is one registered instance of a Consul service.
type Instance struct {
	// ID is the service instance's ID; Nomad puts the allocation ID in it.
	ID      string
	Address string
	Port    int
}

// KVOp sets Key to Value, or deletes it when Delete is true.
type KVOp struct {
	Key    string
	Value  []byte
	Delete bool
	// Session, when set, writes Key held by that session (see Sessions):
	// Consul deletes it when the session ends. A write under a session
	// that has ended fails.
	Session string
}

// Sessions are Consul sessions whose end deletes the keys written under
// them (KVOp.Session). Consul ends a session that is destroyed, or not
// renewed within its TTL, whatever becomes of the caravan server that
// created it.
type Sessions interface {
	// CreateSession starts a session that lapses unless renewed within
	// ttl (Consul's minimum is 10 s; it may take up to twice that).
	CreateSession(ctx context.Context, ttl time.Duration) (string, error)
	// RenewSession restarts session id's TTL.
	RenewSession(ctx context.Context, id string) error
	// DestroySession ends session id, deleting its keys.
	DestroySession(ctx context.Context, id string) error
}

// Proxy is what the orchestrator asks of the proxy's own API (Traefik's),
// to see a traffic split applied instead of waiting a fixed time.
type Proxy interface {
	// RouterService is the service router routes to, as Traefik names it
	// in its configuration ("" when Traefik serves no such router).
	// Router names carry their provider: "web-split@consul".
	RouterService(ctx context.Context, router string) (string, error)
	// Servers lists the URLs of the servers of load-balancer service
	// (nil when Traefik has no such service): "web@consulcatalog".
	Servers(ctx context.Context, service string) ([]string, error)
	// RequestHeader is the value headers middleware sets request header
	// to ("" when Traefik serves no such middleware or it sets none):
	// "web-split@consul", "Caravan-Split".
	RequestHeader(ctx context.Context, middleware, header string) (string, error)
}

// Resolver looks up the TXT records that prove control of a custom domain
// (see VerifyDomain); DNSResolver asks a DNS server.
type Resolver interface {
	// LookupTXT returns the values of name's TXT records; none (and no
	// error) when name has none or does not exist.
	LookupTXT(ctx context.Context, name string) ([]string, error)
}
