package server

import (
	"testing"
	"time"

	"github.com/caravanhq/caravan/jobs"
)

// TestWorkerFunction: the autoscaler scales a workers' job by its meta,
// and only one whose count can change.
func TestWorkerFunction(t *testing.T) {
	meta := func(lo, hi string) map[string]string {
		return map[string]string{jobs.MetaWorkers: "true", jobs.MetaFunction: "sum", jobs.MetaMinWorkers: lo, jobs.MetaMaxWorkers: hi,
			jobs.MetaWorkerInputs: "4", jobs.MetaScaledownWindow: "30s"}
	}
	fn, ok := workerFunction("dev--calc--call--sum", meta("0", "3"))
	if !ok || fn.Job != "dev--calc--call--sum" || fn.Group != "sum" || fn.Config.MinContainers != 0 || fn.Config.MaxContainers != 3 ||
		fn.Config.TargetInputs != 4 || fn.Config.ScaledownWindow != 30*time.Second {
		t.Fatalf("0 to 3 workers: %+v %v", fn, ok)
	}
	for _, tt := range []struct {
		name string
		id   string
		meta map[string]string
	}{
		{"fixed count", "dev--calc--call--sum", meta("2", "2")},
		{"not its function's job", "dev--calc--call--other", meta("0", "3")},
		{"damaged meta", "dev--calc--call--sum", meta("zero", "3")},
	} {
		if fn, ok := workerFunction(tt.id, tt.meta); ok {
			t.Errorf("%s: scaled as %+v", tt.name, fn)
		}
	}
}
