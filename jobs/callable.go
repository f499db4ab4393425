package jobs

import (
	"github.com/caravanhq/caravan/agent"
	"strconv"
	"time"

	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/nomad/api"
)

// CallSeparator joins an app's job ID and a callable function's name in the
// ID of that function's parameterized job. Names cannot hold "--", so no
// other job of caravan's ends this way.
const CallSeparator = "--call--"

// CallableID is the job ID of a callable function's parameterized job.
func CallableID(appJobID, function string) string { return appJobID + CallSeparator + function }

// MetaCaller is the dispatch meta naming the token that made a call.
const MetaCaller = "caravan.caller"

// InputFile is where Nomad writes a call's input, in the task's local
// directory; EnvInput names its path for the process.
const (
	InputFile = "input.json"
	EnvInput  = "CARAVAN_INPUT"
)

// PayloadLimit is the largest call input Nomad dispatches: its
// DispatchPayloadSizeLimit (16 KiB, uncompressed).
const PayloadLimit = 16 * 1024

// callableJob renders a callable function: a warm one (spec.Function.Warm)
// as workers (workerJob), an isolated one as a parameterized job
// (isolatedJob).
func callableJob(app *spec.App, fn *spec.Function, appJobID string, cfg router.Config) (*api.Job, error) {
	if fn.Warm() {
		return workerJob(app, fn, appJobID, cfg)
	}
	return isolatedJob(app, fn, appJobID, cfg)
}

// How long a stopped worker's task takes at most, which its kill_timeout
// covers so that Nomad's SIGKILL never cuts it short: WorkerGrace for the
// inputs in flight to finish (`caravan worker --grace`), then, with an
// enter block, EnterKillGrace for the process after its SIGTERM (the
// worker's queue.Process default), and workerExitMargin for the worker's
// own exit. Within Nomad's default max_kill_timeout (30 s).
const (
	WorkerGrace      = 8 * time.Second
	EnterKillGrace   = 5 * time.Second
	workerExitMargin = 2 * time.Second
)

// workerJob renders a warm callable function as a service job of workers
// (min_containers of them): each runs `caravan worker`, which takes the
// function's inputs from its queue, max_inputs at a time, and runs the
// function's command once per input (or, with an enter block, passes
// each input to the command it starts once). The job's ID is the same
// CallableID an isolated function's has, so switching between them
// replaces one with the other.
func workerJob(app *spec.App, fn *spec.Function, appJobID string, cfg router.Config) (*api.Job, error) {
	id := CallableID(appJobID, fn.Name)
	t := task(fn, id, cfg)
	count, most, maxInputs, window := fn.Workers()
	w := cfg.Worker
	bin := agentEntrypoint(t, id, cfg)
	args := []string{"worker", "--workspace", app.Workspace, "--app-job", appJobID, "--function", fn.Name,
		"--max-inputs", strconv.Itoa(maxInputs), "--grace", WorkerGrace.String()}
	t.KillTimeout = ptr(WorkerGrace + workerExitMargin)
	if w.AckWait > 0 {
		args = append(args, "--ack-wait", w.AckWait.String())
	}
	if w.MaxAttempts > 0 {
		args = append(args, "--max-attempts", strconv.Itoa(w.MaxAttempts))
	}
	var networks []*api.NetworkResource
	if e := fn.Enter; e != nil {
		// The process listens on a port Nomad picks, so workers sharing
		// a client do not collide; ${port} names it as in a web function.
		args = append(args, "--enter", "--port", spec.PortPlaceholder, "--ready-timeout", e.Ready.String())
		// Its process gets SIGTERM once the inputs in flight are done,
		// then EnterKillGrace before SIGKILL: all before Nomad's own kill.
		t.KillTimeout = ptr(WorkerGrace + EnterKillGrace + workerExitMargin)
		networks = []*api.NetworkResource{{DynamicPorts: []api.Port{{Label: PortLabel}}}}
		t.Env["PORT"] = spec.PortPlaceholder
	}
	args = append(args, "--", t.Config["command"].(string))
	if a, ok := t.Config["args"].([]string); ok {
		args = append(args, a...)
	}
	t.Config["command"] = bin
	t.Config["args"] = args
	// No NATS credential in the job: the worker asks caravan server for
	// one, minted for this function and its allocation, at its start.
	t.Env[agent.EnvNATSURL] = agent.NATSURL(cfg.BundleURL, id)
	job := &api.Job{
		ID:          ptr(id),
		Name:        ptr(id),
		Type:        ptr(api.JobTypeService),
		Datacenters: []string{"*"},
		Meta:        ownerMeta(app, fn),
		TaskGroups: []*api.TaskGroup{{
			Name:     ptr(fn.Name),
			Count:    ptr(count),
			Tasks:    []*api.Task{t},
			Networks: networks,
			// A worker is healthy once its task runs: a deployment (a
			// deploy's, or the one an autoscaler's scale-up opens, which
			// blocks the next scale) ends as soon as the workers start.
			Update: &api.UpdateStrategy{
				HealthCheck:      ptr("task_states"),
				MinHealthyTime:   ptr(time.Duration(0)),
				HealthyDeadline:  ptr(2 * time.Minute),
				ProgressDeadline: ptr(time.Duration(0)),
				MaxParallel:      ptr(max(count, 1)),
			},
		}},
	}
	job.Meta[MetaWorkers] = "true"
	// How the autoscaler scales the workers on the queue's depth (it
	// reads them from the job: no other record).
	job.Meta[MetaMinWorkers] = strconv.Itoa(count)
	job.Meta[MetaMaxWorkers] = strconv.Itoa(most)
	job.Meta[MetaWorkerInputs] = strconv.Itoa(maxInputs)
	job.Meta[MetaScaledownWindow] = window.String()
	return withHash(job)
}

// MetaWorkers marks the job of a warm callable function's workers; the
// others of its meta say how they scale (spec.Function.Workers).
const (
	MetaWorkers         = "caravan.workers"
	MetaMinWorkers      = "caravan.min_containers"
	MetaMaxWorkers      = "caravan.max_containers"
	MetaWorkerInputs    = "caravan.max_inputs"
	MetaScaledownWindow = "caravan.scaledown_window"
)

// isolatedJob renders a callable function as a parameterized batch job: it
// stays registered with the app and runs only when dispatched, once per
// call, with the input as payload in $CARAVAN_INPUT. A call that fails is
// neither restarted nor rescheduled: its exit code is the answer. Its meta
// carries the hash of the job until the app's hash replaces it.
func isolatedJob(app *spec.App, fn *spec.Function, appJobID string, cfg router.Config) (*api.Job, error) {
	job := runOnceJob(app, fn, CallableID(appJobID, fn.Name), cfg)
	t := job.TaskGroups[0].Tasks[0]
	t.DispatchPayload = &api.DispatchPayloadConfig{File: InputFile}
	t.Env[EnvInput] = "${NOMAD_TASK_DIR}/" + InputFile
	job.ParameterizedJob = &api.ParameterizedJobConfig{
		Payload:      "optional",
		MetaOptional: []string{MetaCaller},
	}
	return withHash(job)
}

// ownerMeta is the meta of a job a function of app owns.
func ownerMeta(app *spec.App, fn *spec.Function) map[string]string {
	m := map[string]string{
		MetaWorkspace: app.Workspace,
		MetaApp:       app.Name,
		MetaFunction:  fn.Name,
	}
	if app.Environment != "" {
		m[MetaEnvironment] = app.Environment
	}
	return m
}
