package jobs_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
)

// TestRenderCallableGolden renders every example's callable functions'
// parameterized jobs into testdata/<example>.call.<function>.json.
func TestRenderCallableGolden(t *testing.T) {
	paths, err := filepath.Glob("../examples/*.hcl")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".hcl")
		for _, cj := range render(t, load(t, path)).Callable {
			n++
			b, err := jobs.JSON(cj)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", name+".call."+cj.Meta[jobs.MetaFunction]+".json"), b)
		}
	}
	if n == 0 {
		t.Fatal("no example has a callable function")
	}
}

func callableApp(t *testing.T, args string) *spec.App {
	return callableAppWith(t, args, "")
}

func callableAppWith(t *testing.T, args, extra string) *spec.App {
	t.Helper()
	app, diags := spec.Parse([]byte(`app "calc" {
  workspace = "dev"
  function "web" {
    command = "node"
    web {}
  }
  function "sum" {
    command  = "node"
    args     = [`+args+`]
    callable = true
    `+extra+`
  }
}
`), "calc.hcl")
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return app
}

// TestRenderWorkers: a warm callable is a service job of workers, each
// `caravan worker` around the function's command, min_containers of them,
// max_inputs each, with the signed URL of their NATS credential and no
// credential itself.
func TestRenderWorkers(t *testing.T) {
	app := callableAppWith(t, `"sum.js"`, "min_containers = 3\n    concurrency {\n      max_inputs = 4\n    }")
	cfg := testConfig
	cfg.AgentCommand = "/opt/caravan"
	cfg.Worker = router.Worker{AckWait: 5 * time.Second}
	r, err := jobs.Render(app, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cj := r.Callable[0]
	if *cj.ID != "dev--calc--call--sum" || *cj.Type != "service" || cj.ParameterizedJob != nil || cj.Meta[jobs.MetaWorkers] != "true" {
		t.Fatalf("worker job %s of type %s, meta %v", *cj.ID, *cj.Type, cj.Meta)
	}
	if n := *cj.TaskGroups[0].Count; n != 3 {
		t.Errorf("%d workers, want min_containers 3", n)
	}
	task := cj.TaskGroups[0].Tasks[0]
	want := []string{"worker", "--workspace", "dev", "--app-job", "dev--calc", "--function", "sum", "--max-inputs", "4", "--grace", "8s", "--ack-wait", "5s", "--", "node", "sum.js"}
	if task.Config["command"] != "/opt/caravan" || !slices.Equal(task.Config["args"].([]string), want) {
		t.Errorf("worker runs %v %v", task.Config["command"], task.Config["args"])
	}
	if k := *task.KillTimeout; k <= jobs.WorkerGrace {
		t.Errorf("kill_timeout %s: Nomad would SIGKILL the worker before its %s grace", k, jobs.WorkerGrace)
	}
	agent.Sign([]byte("k"), cj)
	if u := task.Env[agent.EnvNATSURL]; !strings.HasPrefix(u, testConfig.BundleURL+agent.NATSPath+"?job=dev--calc--call--sum&alloc=${NOMAD_ALLOC_ID}&sig=") {
		t.Errorf("worker's NATS URL %q", u)
	}
	for k, v := range task.Env {
		if strings.Contains(strings.ToLower(k), "token") || strings.Contains(v, "nats://") {
			t.Errorf("worker env carries %s=%s", k, v)
		}
	}
	if cj.Meta[jobs.MetaMinWorkers] != "3" || cj.Meta[jobs.MetaMaxWorkers] != "3" || cj.Meta[jobs.MetaWorkerInputs] != "4" || cj.Meta[jobs.MetaScaledownWindow] != "1m0s" {
		t.Errorf("scaling meta %v", cj.Meta)
	}
	// From zero: no worker until the first input.
	zero := callableAppWith(t, `"sum.js"`, "min_containers = 0\n    max_containers = 5\n    scaledown_window = \"10s\"")
	r0, err := jobs.Render(zero, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if z := r0.Callable[0]; *z.TaskGroups[0].Count != 0 || z.Meta[jobs.MetaMaxWorkers] != "5" || z.Meta[jobs.MetaScaledownWindow] != "10s" {
		t.Errorf("from zero: count %d, meta %v", *z.TaskGroups[0].Count, z.Meta)
	}
}

// TestRenderCallable checks the shape of an isolated callable's job:
// parameterized, the payload in $CARAVAN_INPUT, no retries, owned by the
// app, and not a task group of the app's service job.
func TestRenderCallable(t *testing.T) {
	r := render(t, callableAppWith(t, `"sum.js"`, "isolated = true"))
	if len(r.Job.TaskGroups) != 1 || *r.Job.TaskGroups[0].Name != "web" {
		t.Fatalf("the app's job has groups %v, want only web", r.Job.TaskGroups)
	}
	if len(r.Callable) != 1 {
		t.Fatalf("%d callable jobs, want 1", len(r.Callable))
	}
	cj := r.Callable[0]
	if *cj.ID != "dev--calc--call--sum" || *cj.ID != jobs.CallableID(*r.Job.ID, "sum") || *cj.Type != "batch" {
		t.Errorf("callable job %s of type %s", *cj.ID, *cj.Type)
	}
	if p := cj.ParameterizedJob; p == nil || p.Payload != "optional" {
		t.Errorf("parameterized block: %+v", p)
	}
	task := cj.TaskGroups[0].Tasks[0]
	if task.DispatchPayload == nil || task.DispatchPayload.File != jobs.InputFile ||
		task.Env[jobs.EnvInput] != "${NOMAD_TASK_DIR}/"+jobs.InputFile {
		t.Errorf("payload file %+v, env %v", task.DispatchPayload, task.Env)
	}
	if *task.RestartPolicy.Attempts != 0 || *cj.TaskGroups[0].ReschedulePolicy.Attempts != 0 {
		t.Errorf("a failed call is retried")
	}
	if cj.Meta[jobs.MetaApp] != "calc" || cj.Meta[jobs.MetaWorkspace] != "dev" || cj.Meta[jobs.MetaFunction] != "sum" ||
		cj.Meta[jobs.MetaSpecHash] != r.SpecHash {
		t.Errorf("callable meta %v", cj.Meta)
	}

	// Changing only the callable changes the app's hash; the same spec
	// renders the same hash.
	if again := render(t, callableAppWith(t, `"sum.js"`, "isolated = true")); again.SpecHash != r.SpecHash {
		t.Errorf("same spec, hashes %s and %s", r.SpecHash, again.SpecHash)
	}
	if changed := render(t, callableApp(t, `"sum2.js"`)); changed.SpecHash == r.SpecHash {
		t.Error("changing the callable did not change the spec hash")
	}
}

// TestRenderWorkersEnter: with an enter block the worker starts the
// command once (--enter) on a port Nomad picks, which $PORT names.
func TestRenderWorkersEnter(t *testing.T) {
	app := callableAppWith(t, `"serve.js", "${port}"`, "enter {\n      ready_timeout = \"2m\"\n    }")
	cfg := testConfig
	cfg.AgentCommand = "/opt/caravan"
	r, err := jobs.Render(app, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cj := r.Callable[0]
	tg := cj.TaskGroups[0]
	task := tg.Tasks[0]
	want := []string{"worker", "--workspace", "dev", "--app-job", "dev--calc", "--function", "sum", "--max-inputs", "1", "--grace", "8s",
		"--enter", "--port", "${NOMAD_PORT_http}", "--ready-timeout", "2m0s", "--", "node", "serve.js", "${NOMAD_PORT_http}"}
	if !slices.Equal(task.Config["args"].([]string), want) {
		t.Errorf("worker runs %v", task.Config["args"])
	}
	// Nomad's kill waits for the inputs in flight, then the process's
	// own SIGTERM grace.
	if k := *task.KillTimeout; k <= jobs.WorkerGrace+jobs.EnterKillGrace {
		t.Errorf("kill_timeout %s: Nomad would SIGKILL the worker before its %s grace and its process's %s", k, jobs.WorkerGrace, jobs.EnterKillGrace)
	}
	if task.Env["PORT"] != "${NOMAD_PORT_http}" {
		t.Errorf("PORT=%q", task.Env["PORT"])
	}
	if len(tg.Networks) != 1 || len(tg.Networks[0].DynamicPorts) != 1 || tg.Networks[0].DynamicPorts[0].Label != jobs.PortLabel {
		t.Errorf("networks %+v", tg.Networks)
	}
	// Without it: no port.
	plain, err := jobs.Render(callableApp(t, `"sum.js"`), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n := plain.Callable[0].TaskGroups[0].Networks; n != nil {
		t.Errorf("a worker without enter has networks %+v", n)
	}
}
