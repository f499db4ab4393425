// Package spec owns the first stage of caravan's pipeline: it loads an HCL app
// spec and validates it, returning hcl.Diagnostics that point at file:line:col.
//
// The doc comments on the types below are the spec reference; README.md repeats
// them for readers who never open Go code.
package spec

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Drivers caravan can run a function with.
const (
	DriverRawExec = "raw_exec"
	DriverExec    = "exec"
	DriverDocker  = "docker"
)

// Deploy strategies.
const (
	StrategyRolling   = "rolling"
	StrategyRecreate  = "recreate"
	StrategyCanary    = "canary"
	StrategyBlueGreen = "blue-green"
)

// PortPlaceholder is what the HCL variable `port` evaluates to. Nomad replaces it
// with the function's listen port when it starts the process, so
// `args = ["--listen", "127.0.0.1:${port}"]` works for every driver.
const PortPlaceholder = "${NOMAD_PORT_http}"

// HostPlaceholder is what the HCL variable `host` evaluates to: the HOST
// environment variable caravan gives a web function (the address to bind),
// which Nomad substitutes in command, args and env when it starts the process.
const HostPlaceholder = "${HOST}"

// App is one `app "<name>" { ... }` block: the unit of deployment. Every
// function in it is deployed, updated, rolled back and stopped together.
type App struct {
	// Name of the app (label). Lower-case letters, digits and single hyphens,
	// at most 63 characters.
	Name      string    `hcl:"name,label"`
	NameRange hcl.Range `hcl:"name,label_range"`

	// Workspace the app belongs to (required); the first part of every URL.
	// Optional to HCL so that validate, not gohcl, reports it missing.
	Workspace      string    `hcl:"workspace,optional"`
	WorkspaceRange hcl.Range `hcl:"workspace,attr_value_range"`

	// Environment (optional) adds a suffix to the workspace part of URLs:
	// `<workspace>-<environment>--<app>-<function>`. Empty is the default
	// environment, which has no suffix. The app's Nomad job and records
	// join it with a dot (`<workspace>.<environment>--<app>`), so they never
	// collide with another workspace's (workspace acme with environment
	// prod and workspace acme-prod); their hostnames would, and the second
	// to deploy is refused as taking a hostname another app serves.
	Environment      string    `hcl:"environment,optional"`
	EnvironmentRange hcl.Range `hcl:"environment,attr_value_range"`

	// Deploy (optional block) chooses how a new version replaces the old one.
	Deploy *Deploy `hcl:"deploy,block"`

	// Files (optional block) chooses the files every function's bundle
	// holds (see Files); a function's own block replaces it.
	Files *Files `hcl:"files,block"`

	// Functions (one or more `function "<name>"` blocks).
	Functions []*Function `hcl:"function,block"`

	DefRange hcl.Range `hcl:",def_range"`

	// Serve marks the ephemeral copy `caravan serve` runs: its own job and
	// `-dev` hostnames, apart from the deployed app. Not part of the HCL.
	Serve bool
}

// Deploy is the `deploy { ... }` block.
type Deploy struct {
	// Strategy is one of "rolling" (default), "recreate", "canary" or
	// "blue-green".
	//
	// canary starts Canaries new containers of each changed web function
	// beside the old ones and sends them Traffic percent of its requests;
	// `caravan app promote` (or PromoteAfter) moves all traffic to the new
	// version and retires the old containers, `caravan app abort` sends all
	// traffic back and removes the canaries. Canaries also answer on their
	// own preview hostname, `<workspace>--<app>-<function>--canary.<domain>`.
	//
	// blue-green starts a full new set of containers beside the old; once
	// every one is healthy, traffic switches to the new set in one step and
	// the old set drains and stops.
	Strategy      string    `hcl:"strategy,optional"`
	StrategyRange hcl.Range `hcl:"strategy,attr_value_range"`

	// Canaries is how many containers of each changed function a canary
	// version starts with (strategy "canary"; default 1).
	Canaries      *int      `hcl:"canaries,optional"`
	CanariesRange hcl.Range `hcl:"canaries,attr_value_range"`
	// Traffic is the percentage of requests the canaries receive while the
	// old version keeps the rest (strategy "canary"; 1 to 99, default 10).
	Traffic      *int      `hcl:"traffic,optional"`
	TrafficRange hcl.Range `hcl:"traffic,attr_value_range"`
	// PromoteAfter promotes a canary automatically once it has served that
	// long ("30m") without failing; empty waits for `caravan app promote`.
	PromoteAfter      string    `hcl:"promote_after,optional"`
	PromoteAfterRange hcl.Range `hcl:"promote_after,attr_value_range"`

	DefRange hcl.Range `hcl:",def_range"`
}

// Function is one `function "<name>" { ... }` block: a command or image that
// runs in min_containers containers, optionally serving web traffic.
type Function struct {
	// Name of the function (label); same rules as the app name.
	Name      string    `hcl:"name,label"`
	NameRange hcl.Range `hcl:"name,label_range"`

	// Driver is the Nomad task driver: "raw_exec", "exec" or "docker".
	// Default: "docker" when image is set, "raw_exec" otherwise.
	Driver      string    `hcl:"driver,optional"`
	DriverRange hcl.Range `hcl:"driver,attr_value_range"`

	// Command and Args run the function (raw_exec and exec). `${port}` in
	// either is replaced by the port the function must listen on.
	Command      string    `hcl:"command,optional"`
	CommandRange hcl.Range `hcl:"command,attr_value_range"`
	Args         []string  `hcl:"args,optional"`

	// Image is the container image (docker). Args, if set, are its arguments.
	Image      string    `hcl:"image,optional"`
	ImageRange hcl.Range `hcl:"image,attr_value_range"`

	// Env is extra environment for the process. PORT is always set to the
	// listen port of a web function and cannot be overridden.
	Env      map[string]string `hcl:"env,optional"`
	EnvRange hcl.Range         `hcl:"env,attr_value_range"`

	// Resources (optional block): CPU, memory and GPUs per container.
	Resources *Resources `hcl:"resources,block"`

	// MinContainers is how many containers run at all times (default 1;
	// Modal's default is 0). 0 means scale to zero: a web function's
	// containers all stop once it has been idle for scaledown_window, and
	// its next request starts one. Until caravan's proxy is in the request
	// path, 0 runs one container, with a warning.
	MinContainers      *int      `hcl:"min_containers,optional"`
	MinContainersRange hcl.Range `hcl:"min_containers,attr_value_range"`
	// MaxContainers caps autoscaling (default: min_containers, at least 1):
	// past max_containers × max_inputs requests in flight, requests queue
	// (see Queue).
	MaxContainers      *int      `hcl:"max_containers,optional"`
	MaxContainersRange hcl.Range `hcl:"max_containers,attr_value_range"`
	// BufferContainers is how many idle containers a web function keeps
	// beside those its load needs while it has any load, so a burst does
	// not wait for a cold start (default 0; never past max_containers).
	// It needs room to scale: max_containers above min_containers.
	BufferContainers      *int      `hcl:"buffer_containers,optional"`
	BufferContainersRange hcl.Range `hcl:"buffer_containers,attr_value_range"`
	// ScaledownWindow is how long a web function's load must stay lower
	// before its containers scale down, and how long it must be idle
	// before it scales to zero: a duration from "1s" to "1h" (default
	// "60s", as Modal's). Scaling up is immediate.
	ScaledownWindow      string    `hcl:"scaledown_window,optional"`
	ScaledownWindowRange hcl.Range `hcl:"scaledown_window,attr_value_range"`
	// DrainTimeout bounds how long a container of an autoscaled web
	// function that is stopping (scaled down, or replaced by a deploy)
	// keeps serving the requests it has, after caravan's proxies stop
	// giving it new ones: a duration from "1s" to "1h" (default "20s").
	// Its process gets the stop signal once they are done, or when this
	// passes. Nomad gives the process 10 s more to exit (the task's
	// kill_timeout is drain_timeout + 10s), capped by the Nomad client's
	// max_kill_timeout (default 30s): raise that past 30s of drain.
	DrainTimeout      string    `hcl:"drain_timeout,optional"`
	DrainTimeoutRange hcl.Range `hcl:"drain_timeout,attr_value_range"`

	// Concurrency (optional block) lets one container of a web function
	// take several requests at once (Modal's @modal.concurrent).
	Concurrency *Concurrency `hcl:"concurrency,block"`
	// Queue (optional block) bounds the requests a web function holds
	// while no container has room.
	Queue *Queue `hcl:"queue,block"`

	// Scaling is how the function scales, with every default applied;
	// Load fills it for a long-running function. Not part of the HCL.
	Scaling *Scaling

	// Schedule (cron, five fields) or Period (a duration such as "5m") makes
	// the function a scheduled one. A scheduled function has no web block.
	Schedule      string    `hcl:"schedule,optional"`
	ScheduleRange hcl.Range `hcl:"schedule,attr_value_range"`
	Period        string    `hcl:"period,optional"`
	PeriodRange   hcl.Range `hcl:"period,attr_value_range"`

	// Web (optional block) makes the function a web endpoint.
	Web *Web `hcl:"web,block"`

	// Callable makes the function one that answers calls
	// (`caravan call APP FUNCTION --data JSON`, POST
	// /v1/apps/{app}/functions/{fn}/call) instead of serving traffic. It
	// is deployed as a group of warm workers (min_containers of them,
	// default 1) that take inputs from the function's NATS JetStream
	// queue, max_inputs at a time each (concurrency block), and run the
	// command once per input: the process reads its input, a JSON
	// document (`null` when the call sends none), from the file named by
	// $CARAVAN_INPUT; what it prints on stdout is the call's output, its
	// exit code the call's. A callable function has no web block, schedule
	// or period. Default false: a function without web, schedule or
	// callable is a long-running worker.
	Callable bool `hcl:"callable,optional"`
	// Isolated (with callable) runs each call in a container of its own,
	// a Nomad parameterized job dispatched per call, as before the
	// queue: a second or so per call and at most 16 KiB of input (Nomad's
	// dispatch payload limit). docker callables are always isolated.
	Isolated      bool      `hcl:"isolated,optional"`
	IsolatedRange hcl.Range `hcl:"isolated,attr_value_range"`
	CallableRange hcl.Range `hcl:"callable,attr_value_range"`
	// Enter (optional block, warm callables only) makes the command a
	// long-running process, started once per worker, that answers every
	// input of that worker, as Modal's @enter loads a model once per
	// container. See Enter.
	Enter *Enter `hcl:"enter,block"`

	// Files (optional block) chooses the files of this function's bundle,
	// in place of the app's block. A docker function has a bundle only
	// with a files block of its own: its image carries its code.
	Files *Files `hcl:"files,block"`

	DefRange hcl.Range `hcl:",def_range"`

	// Bundle is the ID of the bundle the function runs with (the SHA-256
	// of its tar stream), set by whoever deploys it (the CLI packs it, the
	// orchestrator checks it is stored); empty: none. Not part of the HCL.
	Bundle string
}

// Files is a `files { ... }` block: which files of the spec's directory
// travel with each deploy as the function's bundle. Without one, a
// raw_exec or exec function's bundle is the whole directory, minus .git
// and what .gitignore and .caravanignore files exclude (as git reads
// them, in every subdirectory). Nomad unpacks the bundle into the task's
// directory, and `${spec_dir}` names it there.
type Files struct {
	// Include lists the files to take, in .gitignore's pattern syntax
	// ("src/**", "*.py", "requirements.txt"); a pattern naming a directory
	// takes everything in it. Unset takes every file; [] takes none, and
	// the function has no bundle.
	Include      []string  `hcl:"include,optional"`
	IncludeRange hcl.Range `hcl:"include,attr_value_range"`
	// Exclude lists patterns to leave out, after the ignore files.
	Exclude      []string  `hcl:"exclude,optional"`
	ExcludeRange hcl.Range `hcl:"exclude,attr_value_range"`

	DefRange hcl.Range `hcl:",def_range"`
}

// FilesOf returns the files block that chooses fn's bundle (the
// function's, else the app's; an empty block for the whole directory),
// and whether fn has a bundle at all: not a docker function without a
// block of its own, nor one whose include is [].
func (a *App) FilesOf(fn *Function) (*Files, bool) {
	f := fn.Files
	if f == nil {
		if fn.TaskDriver() == DriverDocker {
			return nil, false
		}
		f = a.Files
	}
	if f == nil {
		return &Files{DefRange: a.DefRange}, true
	}
	if f.Include != nil && len(f.Include) == 0 {
		return f, false
	}
	return f, true
}

// SpecDirPlaceholder is what the HCL variable `spec_dir` evaluates to.
// The renderer replaces it in command, args and env: with the directory
// Nomad unpacks the function's bundle into, or, for a function deployed
// without one, with the spec's directory on the deploying machine.
const SpecDirPlaceholder = "${spec_dir}"

// Resources is the `resources { ... }` block of a function.
type Resources struct {
	// CPU in MHz (default 100).
	CPU      *int      `hcl:"cpu,optional"`
	CPURange hcl.Range `hcl:"cpu,attr_value_range"`
	// Memory in MiB (default 128, at least 10).
	Memory      *int      `hcl:"memory,optional"`
	MemoryRange hcl.Range `hcl:"memory,attr_value_range"`
	// GPU takes Modal's forms: "any", "H100", "H100:2" (model and count), or
	// a list of models tried in order, such as ["H100", "A100"]. Every entry
	// of a list must ask for the same count.
	GPU hcl.Expression `hcl:"gpu,optional"`

	// GPURequest is GPU, decoded and checked by Load.
	GPURequest *GPURequest

	DefRange hcl.Range `hcl:",def_range"`
}

// Web is the `web { ... }` block of a function.
type Web struct {
	// Port the process listens on inside its container. With docker it is
	// the container port Nomad maps; with raw_exec and exec it is left unset
	// and Nomad picks a free port, passed as PORT and `${port}`.
	Port      *int      `hcl:"port,optional"`
	PortRange hcl.Range `hcl:"port,attr_value_range"`

	// Label replaces `<app>-<function>` in the URL.
	Label      string    `hcl:"label,optional"`
	LabelRange hcl.Range `hcl:"label,attr_value_range"`

	// CustomDomains are extra hostnames routed to the function.
	CustomDomains      []string  `hcl:"custom_domains,optional"`
	CustomDomainsRange hcl.Range `hcl:"custom_domains,attr_value_range"`

	// RequiresProxyAuth asks for a workspace token on every request.
	RequiresProxyAuth bool `hcl:"requires_proxy_auth,optional"`

	// RateLimit is how many requests a second the endpoint takes, across all
	// clients (default 200; 0 turns the limit off). Past it, clients get 429
	// with Retry-After.
	RateLimit      *int      `hcl:"rate_limit,optional"`
	RateLimitRange hcl.Range `hcl:"rate_limit,attr_value_range"`
	// Burst is how many requests may arrive at once above the rate
	// (default 5 × rate_limit).
	Burst      *int      `hcl:"burst,optional"`
	BurstRange hcl.Range `hcl:"burst,attr_value_range"`

	// MaxBodySize caps request bodies, e.g. "10MB" or "4GiB" (default
	// "4GiB"); larger requests get 413 before they reach the function.
	MaxBodySize      string    `hcl:"max_body_size,optional"`
	MaxBodySizeRange hcl.Range `hcl:"max_body_size,attr_value_range"`

	// HealthPath is the HTTP path Consul checks (default "/"); a container
	// gets traffic only while it answers 2xx there. It is an origin-form
	// path on the function's own host: it starts with / (not //), may have
	// a query, and has no scheme, host, fragment, backslash or space.
	HealthPath      string    `hcl:"health_path,optional"`
	HealthPathRange hcl.Range `hcl:"health_path,attr_value_range"`

	DefRange hcl.Range `hcl:",def_range"`
}

// Enter is the `enter { ... }` block of a warm callable function: its
// command then starts once per worker, not once per input, and answers
// inputs over HTTP. The process gets $PORT (and `${port}` in command,
// args and env is replaced by it) and must listen on 127.0.0.1:$PORT; the
// worker waits until it accepts a connection (at most ready_timeout),
// then POSTs each input to it: `POST /` with the input JSON as the body
// (`null` when the call sends none) and the call's ID in the
// Caravan-Call-Id header, at most max_inputs at once (concurrency block).
// The response body is the call's output; its exit code is the
// Caravan-Exit-Code response header when set, else 0 for a 2xx status
// and 1 for any other (with the status as the call's error). What the
// process prints goes to the worker's log, not to a call's stderr. If the
// process exits, the worker starts it again, and the inputs it held are
// delivered again (at most max attempts in all, as when a worker dies
// mid-input). A process that exits before it listens, or does not listen
// within ready_timeout, fails the calls waiting for it with that reason.
// A cancelled call's request is closed. When the worker stops, the
// process gets SIGTERM once its inputs are done, and SIGKILL 5 s later.
type Enter struct {
	// ReadyTimeout bounds how long the process may take to listen after
	// it starts (loading a model, say): a duration from "1s" to "1h"
	// (default "60s").
	ReadyTimeout      string    `hcl:"ready_timeout,optional"`
	ReadyTimeoutRange hcl.Range `hcl:"ready_timeout,attr_value_range"`
	// Ready is ReadyTimeout parsed, with its default; Load fills it.
	// Not part of the HCL.
	Ready time.Duration

	DefRange hcl.Range `hcl:",def_range"`
}

// DefaultReadyTimeout is an enter block's default ready_timeout.
const DefaultReadyTimeout = 60 * time.Second

// Concurrency is the `concurrency { ... }` block of a web function, Modal's
// @modal.concurrent: how many requests one container takes at once. On a
// callable function only max_inputs applies: how many inputs one worker
// runs at once.
type Concurrency struct {
	// MaxInputs is the most requests one container is given at once
	// (default 1, at most 1000); a WebSocket counts as one for as long as
	// it is open. More wait in the function's queue.
	MaxInputs      *int      `hcl:"max_inputs,optional"`
	MaxInputsRange hcl.Range `hcl:"max_inputs,attr_value_range"`
	// TargetInputs is the load per container the autoscaler aims for
	// (default max_inputs, at most max_inputs): below max_inputs, new
	// containers start before the running ones are full, and a burst
	// finds room in those while they start.
	TargetInputs      *int      `hcl:"target_inputs,optional"`
	TargetInputsRange hcl.Range `hcl:"target_inputs,attr_value_range"`

	DefRange hcl.Range `hcl:",def_range"`
}

// Queue is the `queue { ... }` block of a web function: the requests held
// while every container has max_inputs in flight (at max_containers, at
// zero, while a container starts). Requests leave it in arrival order.
type Queue struct {
	// MaxRequests is how many requests may wait at once (default 1000, 1
	// to 100000); one more is answered 503 with Retry-After.
	MaxRequests      *int      `hcl:"max_requests,optional"`
	MaxRequestsRange hcl.Range `hcl:"max_requests,attr_value_range"`
	// Timeout is how long a request may wait for a container, a duration
	// from "1s" to "1h" (default "60s": a cold start, not a model's
	// first download; raise it for those). Past it the request is
	// answered 504.
	Timeout      string    `hcl:"timeout,optional"`
	TimeoutRange hcl.Range `hcl:"timeout,attr_value_range"`

	DefRange hcl.Range `hcl:",def_range"`
}

// Scaling is a long-running function's scaling settings with every default
// applied (see Function for what each means).
type Scaling struct {
	// MinContainers may be 0 (scale to zero); MaxContainers is at least
	// 1 and at least MinContainers.
	MinContainers    int
	MaxContainers    int
	BufferContainers int
	ScaledownWindow  time.Duration
	MaxInputs        int
	TargetInputs     int
	QueueMax         int
	QueueTimeout     time.Duration
	DrainTimeout     time.Duration
}

// Autoscaled reports whether the function's container count may change
// with its load: max_containers above min_containers.
func (s *Scaling) Autoscaled() bool { return s.MaxContainers > s.MinContainers }

// Scaling defaults, Modal's where Modal has one.
const (
	DefaultScaledownWindow = 60 * time.Second
	DefaultMaxInputs       = 1
	DefaultQueueMax        = 1000
	DefaultQueueTimeout    = 60 * time.Second
	// DefaultDrainTimeout with the 10 s a process gets to exit fits
	// Nomad's default max_kill_timeout (30 s).
	DefaultDrainTimeout = 20 * time.Second
)

// GPURequest is a decoded `gpu` attribute.
type GPURequest struct {
	// Models in order of preference; empty means any model.
	Models []string
	// Count of devices per container.
	Count int
}

// DeployStrategy returns the app's strategy, defaulting to rolling.
func (a *App) DeployStrategy() string {
	if a.Deploy == nil || a.Deploy.Strategy == "" {
		return StrategyRolling
	}
	return a.Deploy.Strategy
}

// Default canary settings.
const (
	DefaultCanaries = 1
	DefaultTraffic  = 10
)

// CanarySettings returns the canary container count, traffic percentage
// and automatic promotion delay (0: manual) with defaults applied.
func (a *App) CanarySettings() (canaries, traffic int, promoteAfter time.Duration) {
	canaries, traffic = DefaultCanaries, DefaultTraffic
	if d := a.Deploy; d != nil {
		if d.Canaries != nil {
			canaries = *d.Canaries
		}
		if d.Traffic != nil {
			traffic = *d.Traffic
		}
		promoteAfter, _ = time.ParseDuration(d.PromoteAfter)
	}
	return canaries, traffic, promoteAfter
}

// TaskDriver returns the function's driver with its default applied.
func (f *Function) TaskDriver() string {
	switch {
	case f.Driver != "":
		return f.Driver
	case f.Image != "":
		return DriverDocker
	default:
		return DriverRawExec
	}
}

// Scheduled reports whether the function runs on a schedule.
func (f *Function) Scheduled() bool { return f.Schedule != "" || f.Period != "" }

// LongRunning reports whether the function runs all the time, in the app's
// service job: it is neither scheduled nor callable.
func (f *Function) LongRunning() bool { return !f.Scheduled() && !f.Callable }

// Warm says whether a callable function is served by warm workers from
// the queue rather than a container per call.
func (f *Function) Warm() bool { return f.Callable && !f.Isolated && f.TaskDriver() != DriverDocker }

// Workers is how a warm callable function's workers scale: from
// min_containers (default 1; 0 scales from zero on its first input) to
// max_containers (default min_containers, at least 1) on its queue's
// depth, maxInputs each at once (concurrency { max_inputs }, default 1),
// down after scaledown_window (default 1m) with less to do.
func (f *Function) Workers() (minCount, maxCount, maxInputs int, window time.Duration) {
	minCount, maxInputs, window = 1, 1, DefaultScaledownWindow
	if f.MinContainers != nil && *f.MinContainers >= 0 {
		minCount = *f.MinContainers
	}
	maxCount = max(minCount, 1)
	if f.MaxContainers != nil && *f.MaxContainers > maxCount {
		maxCount = *f.MaxContainers
	}
	if c := f.Concurrency; c != nil && c.MaxInputs != nil && *c.MaxInputs > 0 {
		maxInputs = *c.MaxInputs
	}
	if d, err := time.ParseDuration(f.ScaledownWindow); err == nil && d >= MinScalingDuration && d <= MaxScalingDuration {
		window = d
	}
	return minCount, maxCount, maxInputs, window
}

// Count is the number of containers to run now: min_containers, at least 1.
func (f *Function) Count() int {
	if f.MinContainers == nil || *f.MinContainers < 1 {
		return 1
	}
	return *f.MinContainers
}

// DefaultRateLimit is the requests a second an endpoint takes by default.
const DefaultRateLimit = 200

// Limits returns the rate limit and burst with defaults applied; a zero
// rate means no limit.
func (w *Web) Limits() (rate, burst int) {
	rate = DefaultRateLimit
	if w.RateLimit != nil {
		rate = *w.RateLimit
	}
	burst = 5 * rate
	if w.Burst != nil {
		burst = *w.Burst
	}
	return rate, burst
}

// DefaultMaxBodySize is the request body limit of an endpoint: 4 GiB.
const DefaultMaxBodySize int64 = 4 << 30

// BodyLimit returns the request body limit in bytes with its default
// applied (the spec was validated, so the size parses).
func (w *Web) BodyLimit() int64 {
	if w.MaxBodySize == "" {
		return DefaultMaxBodySize
	}
	n, _ := ParseSize(w.MaxBodySize)
	return n
}

// HealthCheckPath returns the web health path with its default applied.
func (w *Web) HealthCheckPath() string {
	if w.HealthPath == "" {
		return "/"
	}
	return w.HealthPath
}
