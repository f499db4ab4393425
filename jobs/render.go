// Package jobs owns the render stage: it turns a validated app spec into the
// one Nomad service job that runs it. Rendering is pure (no I/O, no clock):
// the same spec and router configuration give the same job, byte for byte,
// which is what makes no-op deploys and golden tests cheap.
package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/nomad/api"
)

// Meta keys caravan stamps on what it owns.
const (
	MetaWorkspace   = "caravan.workspace"
	MetaApp         = "caravan.app"
	MetaEnvironment = "caravan.environment"
	// The spec hash, version and rollover count of the app: on the
	// periodic and callable jobs only (see Render).
	MetaSpecHash = "caravan.spec_hash"
	MetaVersion  = "caravan.version"
	MetaRollover = "caravan.rollover"
	MetaServe    = "caravan.serve"
	MetaFunction = "caravan.function"
	// MetaGroupHash identifies a function's task group, to tell which
	// functions a deploy changes.
	MetaGroupHash = "caravan.group_hash"
	// MetaFunctionHash identifies the periodic or callable job of a
	// function, likewise.
	MetaFunctionHash = "caravan.function_hash"
)

// Service meta keys: Consul allows only [A-Za-z0-9_-] in them, so these
// spell the job meta keys with underscores.
const (
	ServiceMetaWorkspace = "caravan_workspace"
	ServiceMetaApp       = "caravan_app"
	ServiceMetaFunction  = "caravan_function"
	// An autoscaled function's settings beyond the proxy's.
	ServiceMetaBufferContainers = "caravan_buffer_containers"
	ServiceMetaTargetInputs     = "caravan_target_inputs"
	ServiceMetaScaledownWindow  = "caravan_scaledown_window"
)

// PortLabel is the label of every web function's port.
const PortLabel = "http"

// CheckInterval is how often Consul checks a web container's health: Nomad's
// minimum. Consul runs a new check's first probe at a random moment within
// one interval, so the interval bounds how long a container that already
// listens waits to take traffic.
const CheckInterval = time.Second

// GPUDevice is the Nomad device every gpu request asks for.
const GPUDevice = "nvidia/gpu"

// Defaults for resources a spec leaves unset.
const (
	DefaultCPU    = 100
	DefaultMemory = 128
)

// JobID is the Nomad job ID caravan owns for an app, which also keys its
// records in Consul KV: `<workspace>[.<environment>]--<app>`. Names hold
// only lower-case letters, digits and single hyphens, so the "." keeps
// workspace acme with environment prod (acme.prod--app) apart from
// workspace acme-prod (acme-prod--app), and "--" ends the workspace part.
// Hostnames join the environment with "-" (see router.HostLabel), so those
// two apps would share theirs: the hostname claim refuses the second.
func JobID(workspace, environment, app string) string {
	ws := workspace
	if environment != "" {
		ws += EnvironmentSeparator + environment
	}
	return ws + "--" + app
}

// EnvironmentSeparator joins a workspace and an environment in job IDs; no
// name can hold it.
const EnvironmentSeparator = "."

// ServeSuffix ends the job ID of a `caravan serve` copy. App names cannot
// hold "--", so no deployed app's job can end in it.
const ServeSuffix = "--dev"

// AppJobID is JobID for app, with ServeSuffix for a serve copy.
func AppJobID(app *spec.App) string {
	id := JobID(app.Workspace, app.Environment, app.Name)
	if app.Serve {
		id += ServeSuffix
	}
	return id
}

// CronSeparator joins an app's job ID and a scheduled function's name in the
// ID of that function's periodic job. Names cannot hold "--", so no other
// job of caravan's ends this way.
const CronSeparator = "--cron--"

// PeriodicID is the job ID of a scheduled function's periodic job.
func PeriodicID(appJobID, function string) string { return appJobID + CronSeparator + function }

// Rendered is an app rendered for Nomad.
type Rendered struct {
	// Job runs the long-running functions; it carries the app's meta.
	Job *api.Job
	// Periodic are the scheduled functions' batch periodic jobs.
	Periodic []*api.Job
	// Callable are the callable functions' parameterized batch jobs.
	Callable []*api.Job
	Routes   []router.Route
	// SpecHash identifies Job (without its hash and version meta), for
	// the history; whether a deploy changes anything is decided per
	// function (FunctionHashes), not by it.
	SpecHash string
}

// Render turns a validated app into its Nomad job. It fails only on a bug or
// an app that did not pass spec validation.
func Render(app *spec.App, cfg router.Config) (*Rendered, error) {
	id := AppJobID(app)
	job := &api.Job{
		ID:          ptr(id),
		Name:        ptr(id),
		Namespace:   ptr(Namespace(app.Workspace)),
		Type:        ptr(api.JobTypeService),
		Datacenters: []string{"*"},
		Meta: map[string]string{
			MetaWorkspace: app.Workspace,
			MetaApp:       app.Name,
		},
	}
	if app.Environment != "" {
		job.Meta[MetaEnvironment] = app.Environment
	}
	if app.Serve {
		job.Meta[MetaServe] = "true"
	}

	routes := router.Routes(app, cfg)
	byFunction := map[string]router.Route{}
	for _, r := range routes {
		byFunction[r.Function] = r
	}
	var periodic, callable []*api.Job
	for _, fn := range app.Functions {
		if fn.Callable {
			cj, err := callableJob(app, fn, id, cfg)
			if err != nil {
				return nil, err
			}
			callable = append(callable, cj)
			continue
		}
		if fn.Scheduled() {
			pj, err := periodicJob(app, fn, id, cfg)
			if err != nil {
				return nil, err
			}
			periodic = append(periodic, pj)
			continue
		}
		tg, err := group(app, fn, byFunction, id, cfg)
		if err != nil {
			return nil, err
		}
		shutdownDelay(app, fn, tg, cfg)
		job.TaskGroups = append(job.TaskGroups, tg)
	}

	// The app's job carries no meta that changes with other functions: Nomad
	// counts job meta as every task's, and would replace every container
	// of the app whenever one function changed. The spec hash covers the
	// job and the hashes of the periodic and callable jobs.
	h := sha256.New()
	jh, err := Hash(job)
	if err != nil {
		return nil, err
	}
	h.Write([]byte(jh))
	for _, oj := range append(slices.Clone(periodic), callable...) {
		h.Write([]byte(*oj.ID + "=" + oj.Meta[MetaFunctionHash]))
	}
	hash := hex.EncodeToString(h.Sum(nil))[:16]
	for _, oj := range append(slices.Clone(periodic), callable...) {
		oj.Meta[MetaSpecHash] = hash
	}
	return &Rendered{Job: job, Periodic: periodic, Callable: callable, Routes: routes, SpecHash: hash}, nil
}

// shutdownDelay sets the shutdown_delay of web function fn's group tg.
func shutdownDelay(app *spec.App, fn *spec.Function, tg *api.TaskGroup, cfg router.Config) {
	if fn.Web == nil {
		return
	}
	// Traefik stops routing to a container before it stops. A
	// supervised container drains at the proxies on the kill signal
	// instead, without waiting for deregistration to be seen: no delay.
	tg.ShutdownDelay = ptr(cfg.Drain())
	if supervised(app, fn, cfg) {
		tg.ShutdownDelay = ptr(time.Duration(0))
	}
}

// CanarySuffix ends the ID of the job a canary version's autoscaled
// functions run in when the version was deployed while they were at zero
// (see RenderCanary). App names cannot hold "--", so no app's own job,
// nor a periodic or callable one, ends so.
const CanarySuffix = "--canary"

// CanaryJobID is the ID of app job appJobID's canary job.
func CanaryJobID(appJobID string) string { return appJobID + CanarySuffix }

// MetaCanary marks a canary job (RenderCanary).
const MetaCanary = "caravan.canary"

// RenderCanary renders the named functions of app, a canary version of
// autoscaled web functions (router.Proxied) deployed while they run no
// container, as a job of their own (CanaryJobID) beside the app's: each
// function is its own Consul service, named as its preview hostname
// (router.PreviewName), so caravan's proxies and autoscaler treat it as
// one more function at zero, scaled from zero by the requests its preview
// hostname and the traffic split send it, while the app's job keeps the
// live version. Its groups roll out as rolling ones (they start at zero,
// and nothing waits for a promotion of them: promoting the version
// registers the app's job). It fails for a function that is not an
// autoscaled web function of app.
func RenderCanary(app *spec.App, cfg router.Config, functions []string) (*api.Job, error) {
	d := spec.Deploy{}
	if app.Deploy != nil {
		d = *app.Deploy
	}
	d.Strategy = spec.StrategyRolling
	rolling := *app
	rolling.Deploy = &d
	id := CanaryJobID(AppJobID(app))
	job := &api.Job{
		ID:          ptr(id),
		Name:        ptr(id),
		Namespace:   ptr(Namespace(app.Workspace)),
		Type:        ptr(api.JobTypeService),
		Datacenters: []string{"*"},
		Meta:        map[string]string{MetaWorkspace: app.Workspace, MetaApp: app.Name, MetaCanary: "true"},
	}
	if app.Environment != "" {
		job.Meta[MetaEnvironment] = app.Environment
	}
	byFunction := map[string]router.Route{}
	for _, r := range router.Routes(&rolling, cfg) {
		byFunction[r.Function] = r
	}
	for _, name := range functions {
		var fn *spec.Function
		for _, f := range app.Functions {
			if f.Name == name {
				fn = f
			}
		}
		r, ok := byFunction[name]
		if fn == nil || !ok || !r.Proxied {
			return nil, fmt.Errorf("function %q is not an autoscaled web function of app %s", name, app.Name)
		}
		r.Name = router.PreviewName(app, fn)
		byFunction[name] = r
		tg, err := group(&rolling, fn, byFunction, id, cfg)
		if err != nil {
			return nil, err
		}
		shutdownDelay(&rolling, fn, tg, cfg)
		job.TaskGroups = append(job.TaskGroups, tg)
	}
	return job, nil
}

// FunctionHashes maps each function of r to what identifies its rendering:
// a long-running function's group hash, or the hash of a scheduled or
// callable function's own job.
func (r *Rendered) FunctionHashes() map[string]string {
	return FunctionHashes(r.Job, append(slices.Clone(r.Periodic), r.Callable...))
}

// FunctionHashes maps each function of an app's job and owned (periodic
// and callable) jobs to its hash; see Rendered.FunctionHashes.
func FunctionHashes(job *api.Job, owned []*api.Job) map[string]string {
	out := map[string]string{}
	if job != nil {
		for _, tg := range job.TaskGroups {
			out[*tg.Name] = tg.Meta[MetaGroupHash]
		}
	}
	for _, oj := range owned {
		out[oj.Meta[MetaFunction]] = oj.Meta[MetaFunctionHash]
	}
	return out
}

// periodicJob renders a scheduled function as a batch job Nomad launches on
// its schedule (in UTC), one run at a time; a run that fails is not retried
// (the next one comes on schedule).
func periodicJob(app *spec.App, fn *spec.Function, appJobID string, cfg router.Config) (*api.Job, error) {
	job := runOnceJob(app, fn, PeriodicID(appJobID, fn.Name), cfg)
	job.Periodic = &api.PeriodicConfig{
		Enabled:         ptr(true),
		Spec:            ptr(fn.CronSpec()),
		SpecType:        ptr(api.PeriodicSpecCron),
		ProhibitOverlap: ptr(true),
		TimeZone:        ptr("UTC"),
	}
	return withHash(job)
}

// runOnceJob is a batch job id of one task, fn's, which a function of app
// owns: each run is neither restarted nor rescheduled.
func runOnceJob(app *spec.App, fn *spec.Function, id string, cfg router.Config) *api.Job {
	t := task(fn, id, cfg)
	t.RestartPolicy = &api.RestartPolicy{Attempts: ptr(0), Mode: ptr("fail")}
	return &api.Job{
		ID:          ptr(id),
		Name:        ptr(id),
		Namespace:   ptr(Namespace(app.Workspace)),
		Type:        ptr(api.JobTypeBatch),
		Datacenters: []string{"*"},
		Meta:        ownerMeta(app, fn),
		TaskGroups: []*api.TaskGroup{{
			Name:             ptr(fn.Name),
			Count:            ptr(1),
			ReschedulePolicy: &api.ReschedulePolicy{Attempts: ptr(0), Unlimited: ptr(false)},
			Tasks:            []*api.Task{t},
		}},
	}
}

// withHash stamps job's meta with its own hash (MetaFunctionHash), which
// says whether the function changed; MetaSpecHash, the app's, follows.
func withHash(job *api.Job) (*api.Job, error) {
	h, err := Hash(job)
	if err != nil {
		return nil, err
	}
	job.Meta[MetaFunctionHash] = h
	return job, nil
}

// Hash is the spec hash of job: a SHA-256 of its JSON, cut to 16 hex
// digits, leaving out what does not change what runs: the caravan.spec_hash,
// caravan.version and caravan.rollover meta, and how a strategy rolls out
// (update blocks and the canaries' tags). Hash does not modify job.
func Hash(job *api.Job) (string, error) {
	c := *job
	c.Meta = map[string]string{}
	for k, v := range job.Meta {
		if k != MetaSpecHash && k != MetaVersion && k != MetaRollover && k != MetaFunctionHash {
			c.Meta[k] = v
		}
	}
	c.Update = nil
	c.TaskGroups = make([]*api.TaskGroup, len(job.TaskGroups))
	for i, tg := range job.TaskGroups {
		c.TaskGroups[i] = withoutRollout(tg)
	}
	b, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("hashing job: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16], nil
}

// withoutRollout copies tg without what says how a version rolls out
// rather than what runs: its update block and its services' canary tags.
func withoutRollout(tg *api.TaskGroup) *api.TaskGroup {
	g := *tg
	g.Update = nil
	if len(tg.Services) == 0 {
		return &g
	}
	g.Services = make([]*api.Service, len(tg.Services))
	for i, s := range tg.Services {
		c := *s
		c.CanaryTags = nil
		g.Services[i] = &c
	}
	return &g
}

func group(app *spec.App, fn *spec.Function, routes map[string]router.Route, jobID string, cfg router.Config) (*api.TaskGroup, error) {
	count := fn.Count()
	if r, ok := routes[fn.Name]; ok && r.Proxied {
		// The autoscaler sets the count from here on (0: none until the
		// first request); a deploy carries it over (see orchestrator).
		count = fn.Scaling.MinContainers
	}
	tg := &api.TaskGroup{
		Name:   ptr(fn.Name),
		Count:  ptr(count),
		Meta:   map[string]string{MetaFunction: fn.Name},
		Update: update(app, count),
	}
	if fn.MaxContainers != nil {
		min := int64(count)
		if fn.MinContainers != nil {
			min = int64(*fn.MinContainers)
		}
		tg.Scaling = &api.ScalingPolicy{Min: ptr(min), Max: ptr(int64(*fn.MaxContainers))}
	}

	t := task(fn, jobID, cfg)
	if fn.Web != nil {
		r, ok := routes[fn.Name]
		if !ok {
			return nil, fmt.Errorf("function %q has a web block but no route", fn.Name)
		}
		if supervised(app, fn, cfg) {
			supervise(t, fn.Scaling.DrainTimeout, jobID, cfg)
		}
		port := api.Port{Label: PortLabel}
		if fn.Web.Port != nil {
			if fn.TaskDriver() == spec.DriverDocker {
				port.To = *fn.Web.Port
			} else {
				port.Value = *fn.Web.Port
			}
		}
		net := &api.NetworkResource{}
		if port.Value != 0 {
			net.ReservedPorts = []api.Port{port}
		} else {
			net.DynamicPorts = []api.Port{port}
		}
		tg.Networks = []*api.NetworkResource{net}

		svc, err := service(app, fn, r)
		if err != nil {
			return nil, err
		}
		tg.Services = []*api.Service{svc}
		t.Env["PORT"] = spec.PortPlaceholder
		if fn.TaskDriver() == spec.DriverDocker {
			t.Env["HOST"] = "0.0.0.0"
			t.Config["ports"] = []string{PortLabel}
		} else {
			t.Env["HOST"] = "${NOMAD_IP_" + PortLabel + "}"
		}
	}
	tg.Tasks = []*api.Task{t}
	b, err := json.Marshal(withoutRollout(tg))
	if err != nil {
		return nil, fmt.Errorf("hashing group %s: %w", fn.Name, err)
	}
	sum := sha256.Sum256(b)
	tg.Meta[MetaGroupHash] = hex.EncodeToString(sum[:])[:16]
	return tg, nil
}

// task renders fn as the task of job jobID: its command or image, its
// environment, resources, and the artifact block of its bundle.
func task(fn *spec.Function, jobID string, cfg router.Config) *api.Task {
	driver := fn.TaskDriver()
	t := &api.Task{
		Name:        fn.Name,
		Driver:      driver,
		Config:      map[string]any{},
		Env:         map[string]string{},
		KillTimeout: ptr(10 * time.Second),
		// A crashing process is retried twice, 5s apart, before its
		// container counts as failed (Nomad's default waits 15s).
		RestartPolicy: &api.RestartPolicy{
			Attempts: ptr(2),
			Delay:    ptr(5 * time.Second),
			Interval: ptr(5 * time.Minute),
			Mode:     ptr("fail"),
		},
		Resources: &api.Resources{
			CPU:      ptr(DefaultCPU),
			MemoryMB: ptr(DefaultMemory),
		},
	}
	// ${spec_dir} is where the bundle is unpacked, or without one the
	// spec's directory on the deploying machine (as before bundles).
	dir := filepath.Dir(fn.DefRange.Filename)
	if fn.Bundle != "" {
		dir = BundleDir
		t.Artifacts = []*api.TaskArtifact{bundleArtifact(fn.Bundle, jobID, cfg)}
	}
	specDir := func(s string) string { return strings.ReplaceAll(s, spec.SpecDirPlaceholder, dir) }
	switch driver {
	case spec.DriverDocker:
		t.Config["image"] = fn.Image
	default:
		t.Config["command"] = specDir(fn.Command)
	}
	if len(fn.Args) > 0 {
		args := make([]string, len(fn.Args))
		for i, a := range fn.Args {
			args[i] = specDir(a)
		}
		t.Config["args"] = args
	}
	for k, v := range fn.Env {
		t.Env[k] = specDir(v)
	}
	if r := fn.Resources; r != nil {
		if r.CPU != nil {
			t.Resources.CPU = ptr(*r.CPU)
		}
		if r.Memory != nil {
			t.Resources.MemoryMB = ptr(*r.Memory)
		}
		if g := r.GPURequest; g != nil {
			t.Resources.Devices = []*api.RequestedDevice{gpuDevice(g)}
		}
	}
	return t
}

// supervised reports whether fn's task runs under caravan's drain
// supervisor (agent.Supervisor): a web function served through caravan's
// proxies (router.Proxied), on a driver that runs a host binary in the
// task (raw_exec, exec). A docker image's own entrypoint is unknown to
// the render, so a docker function keeps the fixed shutdown_delay.
func supervised(app *spec.App, fn *spec.Function, cfg router.Config) bool {
	return fn.Web != nil && fn.TaskDriver() != spec.DriverDocker && router.Proxied(app, fn, cfg)
}

// ChildKillTimeout is how long a supervised task's process has to exit
// once the drain is done: the task's kill_timeout is the drain's grace
// plus this.
const ChildKillTimeout = 10 * time.Second

// supervise makes `caravan task` (cfg.AgentCommand, or fetched as an
// artifact: package agent) the entrypoint of t: on the kill signal it drains the allocation at
// every proxy, at most grace, then passes the signal on to t's command.
func supervise(t *api.Task, grace time.Duration, jobID string, cfg router.Config) {
	command, _ := t.Config["command"].(string)
	args, _ := t.Config["args"].([]string)
	t.Config["command"] = agentEntrypoint(t, jobID, cfg)
	t.Config["args"] = append([]string{"task", "--grace", grace.String(), "--fallback", cfg.Drain().String(), "--", command}, args...)
	t.Env[agent.EnvDrainURL] = agent.DrainURL(cfg.BundleURL, jobID)
	t.KillTimeout = ptr(grace + ChildKillTimeout)
}

// agentEntrypoint is the caravan binary t starts as: cfg.AgentCommand, a
// path on Nomad's clients, or else the one caravan server serves, which
// it adds to t's artifacts (package agent).
func agentEntrypoint(t *api.Task, jobID string, cfg router.Config) string {
	if cfg.AgentCommand != "" {
		return cfg.AgentCommand
	}
	t.Artifacts = append(t.Artifacts, agent.Artifact(cfg.BundleURL, jobID))
	return agent.Binary
}

// gpuDevice asks Nomad for g.Count GPUs of one of g.Models. A model matches
// when it stands as a word in the device's model name, so "H100" matches
// "NVIDIA H100 80GB HBM3". Earlier models in a fallback list are preferred
// through affinities of falling weight.
func gpuDevice(g *spec.GPURequest) *api.RequestedDevice {
	d := &api.RequestedDevice{Name: GPUDevice, Count: ptr(uint64(g.Count))}
	if len(g.Models) == 0 {
		return d
	}
	d.Constraints = []*api.Constraint{{
		LTarget: "${device.model}",
		Operand: "regexp",
		RTarget: modelRegexp(g.Models),
	}}
	if len(g.Models) > 1 {
		for i, m := range g.Models {
			weight := int8(100 - i*100/len(g.Models))
			d.Affinities = append(d.Affinities, &api.Affinity{
				LTarget: "${device.model}",
				Operand: "regexp",
				RTarget: modelRegexp([]string{m}),
				Weight:  ptr(weight),
			})
		}
	}
	return d
}

func modelRegexp(models []string) string {
	quoted := make([]string, len(models))
	for i, m := range models {
		quoted[i] = regexp.QuoteMeta(m)
	}
	return `(?i)(^|[^a-z0-9])(` + strings.Join(quoted, "|") + `)([^a-z0-9]|$)`
}

func service(app *spec.App, fn *spec.Function, r router.Route) (*api.Service, error) {
	tags, err := r.Tags()
	if err != nil {
		return nil, err
	}
	// Canaries register with the preview route's tags instead: they answer
	// on their own hostname, and the main one reaches them only through
	// the traffic split caravan publishes (see router.Split).
	var canaryTags []string
	if r.Preview != nil {
		if canaryTags, err = r.Preview.Tags(); err != nil {
			return nil, err
		}
		canaryTags = append(canaryTags, CanaryTag)
	}
	meta := map[string]string{
		ServiceMetaWorkspace: app.Workspace,
		ServiceMetaApp:       app.Name,
		ServiceMetaFunction:  fn.Name,
	}
	if r.Proxied {
		// Traefik reaches these containers through caravan's proxies
		// only (the route is in Traefik's KV, see router.Proxied): no
		// routing tags. The proxy reads the request path's settings here.
		// Canaries (canary and blue-green: r.Preview) carry CanaryTag
		// alone, by which the proxy keeps the live version's requests
		// from them (see router.HeaderSplit).
		tags, canaryTags = nil, nil
		if r.Preview != nil {
			canaryTags = []string{CanaryTag}
		}
		sc := fn.Scaling
		maps.Copy(meta, proxy.Settings{MaxInputs: sc.MaxInputs, QueueMax: sc.QueueMax, QueueTimeout: sc.QueueTimeout, HealthPath: fn.Web.HealthCheckPath()}.Meta())
		// The autoscaler reads these from the function's record (see
		// orchestrator), not here: they are rendered so that a deploy
		// changing only them is a change of the function, which rewrites
		// the record, not a no-op.
		meta[ServiceMetaBufferContainers] = strconv.Itoa(sc.BufferContainers)
		meta[ServiceMetaTargetInputs] = strconv.Itoa(sc.TargetInputs)
		meta[ServiceMetaScaledownWindow] = sc.ScaledownWindow.String()
	}
	return &api.Service{
		Name:       r.Name,
		PortLabel:  PortLabel,
		Provider:   api.ServiceProviderConsul,
		Tags:       tags,
		CanaryTags: canaryTags,
		Meta:       meta,
		Checks: []api.ServiceCheck{{
			Name:     "http " + fn.Web.HealthCheckPath(),
			Type:     "http",
			Path:     fn.Web.HealthCheckPath(),
			Interval: CheckInterval,
			Timeout:  time.Second,
		}},
	}, nil
}

// CanaryTag marks the Consul registrations of canary containers.
const CanaryTag = proxy.CanaryTag

// update renders a deploy strategy as a group's update block.
//
// rolling starts a full set of new containers beside the old ones (canaries
// that carry the same tags, so each takes traffic as soon as its health check
// passes), promotes them automatically once all are healthy, and only then
// stops the old ones; a version that never becomes healthy is reverted.
// recreate stops the old containers first and starts the new ones together.
// canary starts the spec's number of canaries and blue-green a full set;
// both carry the preview route's tags and wait for caravan to promote them
// (after it has moved traffic to them; see orchestrator).
//
// progress_deadline is 0 so the first unhealthy container fails the
// deployment at once (and auto_revert restores the previous version) rather
// than Nomad rescheduling it until a deadline passes: a deploy that crashes
// is reported in seconds. It also lets healthy canaries wait for promotion
// as long as they must.
//
// min_healthy_time is 0: a container is healthy once its task runs and its
// checks pass, and no timer holds a rollout after that. What a stable
// window would guard (old containers still routed) caravan observes in
// Consul and Traefik instead.
func update(app *spec.App, count int) *api.UpdateStrategy {
	u := &api.UpdateStrategy{
		HealthCheck:      ptr("checks"),
		MinHealthyTime:   ptr(time.Duration(0)),
		HealthyDeadline:  ptr(2 * time.Minute),
		ProgressDeadline: ptr(time.Duration(0)),
		AutoRevert:       ptr(true),
		MaxParallel:      ptr(max(count, 1)),
	}
	switch app.DeployStrategy() {
	case spec.StrategyRecreate:
	case spec.StrategyCanary:
		// Nomad places at most count containers in one evaluation.
		canaries, _, _ := app.CanarySettings()
		u.Canary = ptr(min(canaries, count))
		u.AutoPromote = ptr(false)
	case spec.StrategyBlueGreen:
		u.Canary = ptr(count)
		u.AutoPromote = ptr(false)
	default:
		u.Canary = ptr(count)
		// Nomad refuses auto_promote without canaries: a group at zero
		// (autoscaled) has none to start.
		u.AutoPromote = ptr(count > 0)
	}
	return u
}

// BundleDir is where a task's bundle is unpacked (Nomad interpolates
// NOMAD_TASK_DIR: the task's local/ directory, /local inside docker and
// exec's chroot), and what ${spec_dir} becomes for a function with one.
const BundleDir = "${NOMAD_TASK_DIR}/bundle"

// BundlePath is where caravan server serves bundle id as a tar stream, to
// Nomad's clients.
func BundlePath(id string) string { return "/v1/bundles/" + id + ".tar" }

// AllocPlaceholder is the query parameter Nomad fills with the fetching
// allocation's ID: caravan server serves a bundle only to a live
// allocation of the job the URL was signed for.
const AllocPlaceholder = "${NOMAD_ALLOC_ID}"

// bundleArtifact fetches bundle id for job jobID from caravan server,
// verified against its ID (go-getter's checksum) and unpacked into
// BundleDir. The URL is not signed yet: the orchestrator adds the
// signature (SignBundles) after the hashes are taken, so the key is in
// no hash and no golden file.
func bundleArtifact(id, jobID string, cfg router.Config) *api.TaskArtifact {
	q := url.Values{"job": {jobID}}
	src := strings.TrimSuffix(cfg.BundleURL, "/") + BundlePath(id) + "?" + q.Encode() + "&alloc=" + AllocPlaceholder
	return &api.TaskArtifact{
		GetterSource:  ptr(src),
		GetterOptions: map[string]string{"checksum": "sha256:" + id, "archive": "tar"},
		RelativeDest:  ptr("local/bundle"),
	}
}

func ptr[T any](v T) *T { return &v }
