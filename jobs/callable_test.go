package jobs_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/jobs"
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
  }
}
`), "calc.hcl")
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return app
}

// TestRenderCallable checks the shape of a callable's job: parameterized,
// the payload in $CARAVAN_INPUT, no retries, owned by the app, and not a
// task group of the app's service job.
func TestRenderCallable(t *testing.T) {
	r := render(t, callableApp(t, `"sum.js"`))
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
	if again := render(t, callableApp(t, `"sum.js"`)); again.SpecHash != r.SpecHash {
		t.Errorf("same spec, hashes %s and %s", r.SpecHash, again.SpecHash)
	}
	if changed := render(t, callableApp(t, `"sum2.js"`)); changed.SpecHash == r.SpecHash {
		t.Error("changing the callable did not change the spec hash")
	}
}
