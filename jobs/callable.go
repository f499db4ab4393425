package jobs

import (
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

// callableJob renders a callable function as a parameterized batch job: it
// stays registered with the app and runs only when dispatched, once per
// call, with the input as payload in $CARAVAN_INPUT. A call that fails is
// neither restarted nor rescheduled: its exit code is the answer. Its meta
// carries the hash of the job until the app's hash replaces it.
func callableJob(app *spec.App, fn *spec.Function, appJobID string, cfg router.Config) (*api.Job, error) {
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
