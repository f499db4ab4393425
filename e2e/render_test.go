package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/devstack"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	api "github.com/hashicorp/nomad/api"
)

// TestRenderedJobsPassNomadValidate feeds every job `caravan render` prints
// for each example (the app's, its scheduled functions' periodic jobs and
// its callable functions' parameterized ones) to the real
// `nomad job validate -json`.
func TestRenderedJobsPassNomadValidate(t *testing.T) {
	examples, _ := filepath.Glob("../examples/*.hcl")
	if len(examples) < 3 {
		t.Fatalf("examples: %v", examples)
	}
	// The examples must hold each kind of job, or this test checks less
	// than it says.
	var periodic, callable int
	defer func() {
		if periodic == 0 || callable == 0 {
			t.Errorf("validated %d periodic and %d callable jobs: the examples need at least one of each", periodic, callable)
		}
	}()
	for _, ex := range examples {
		t.Run(filepath.Base(ex), func(t *testing.T) {
			app, _, diags := spec.LoadFile(ex)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			r, err := jobs.Render(app, router.DefaultConfig)
			if err != nil {
				t.Fatal(err)
			}
			// Nomad validates a job's namespace too.
			ensureNamespace(t, app.Workspace)
			periodic += len(r.Periodic)
			callable += len(r.Callable)
			for _, job := range append(append([]*api.Job{r.Job}, r.Periodic...), r.Callable...) {
				b, err := jobs.JSON(job)
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(t.TempDir(), "job.json")
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(devstack.Nomad.BinPath(), "job", "validate", "-json", path)
				cmd.Env = append(os.Environ(), "NOMAD_ADDR="+env.stack.NomadAddr())
				out, err := cmd.CombinedOutput()
				if err != nil || !strings.Contains(string(out), "Job validation successful") {
					t.Fatalf("nomad job validate -json %s: %v\n%s", *job.ID, err, out)
				}
			}
		})
	}
}
