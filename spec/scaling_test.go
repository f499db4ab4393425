package spec_test

import (
	"testing"
	"time"

	"github.com/caravanhq/caravan/spec"
)

// webScaleSpec puts attrs, indented, from line 5 of a web function.
func webScaleSpec(attrs string) string {
	return `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    ` + attrs + `
    web {}
  }
}
`
}

func TestScalingDefaults(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		want  spec.Scaling
		autos bool
	}{
		{"nothing set", webScaleSpec(""), spec.Scaling{
			MinContainers: 1, MaxContainers: 1, ScaledownWindow: time.Minute,
			MaxInputs: 1, TargetInputs: 1, QueueMax: 1000, QueueTimeout: time.Minute, DrainTimeout: 20 * time.Second}, false},
		{"scale to zero", webScaleSpec("min_containers = 0"), spec.Scaling{
			MinContainers: 0, MaxContainers: 1, ScaledownWindow: time.Minute,
			MaxInputs: 1, TargetInputs: 1, QueueMax: 1000, QueueTimeout: time.Minute, DrainTimeout: 20 * time.Second}, true},
		{"min only", webScaleSpec("min_containers = 3"), spec.Scaling{
			MinContainers: 3, MaxContainers: 3, ScaledownWindow: time.Minute,
			MaxInputs: 1, TargetInputs: 1, QueueMax: 1000, QueueTimeout: time.Minute, DrainTimeout: 20 * time.Second}, false},
		{"target defaults to max_inputs", webScaleSpec("concurrency {\n      max_inputs = 8\n    }"), spec.Scaling{
			MinContainers: 1, MaxContainers: 1, ScaledownWindow: time.Minute,
			MaxInputs: 8, TargetInputs: 8, QueueMax: 1000, QueueTimeout: time.Minute, DrainTimeout: 20 * time.Second}, false},
		{"everything", webScaleSpec(`min_containers    = 0
    max_containers    = 10
    buffer_containers = 2
    scaledown_window  = "5m"
    drain_timeout     = "45s"
    concurrency {
      max_inputs    = 20
      target_inputs = 15
    }
    queue {
      max_requests = 50
      timeout      = "2m"
    }`), spec.Scaling{
			MinContainers: 0, MaxContainers: 10, BufferContainers: 2, ScaledownWindow: 5 * time.Minute,
			MaxInputs: 20, TargetInputs: 15, QueueMax: 50, QueueTimeout: 2 * time.Minute, DrainTimeout: 45 * time.Second}, true},
		{"a worker gets the defaults", scaleSpec("min_containers = 2\n    max_containers = 4"), spec.Scaling{
			MinContainers: 2, MaxContainers: 4, ScaledownWindow: time.Minute,
			MaxInputs: 1, TargetInputs: 1, QueueMax: 1000, QueueTimeout: time.Minute, DrainTimeout: 20 * time.Second}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, diags := spec.Parse([]byte(tt.src), "test.hcl")
			if diags.HasErrors() {
				t.Fatalf("unexpected errors:\n%s", formatDiags(diags))
			}
			got := app.Functions[0].Scaling
			if got == nil {
				t.Fatal("Scaling is nil")
			}
			if *got != tt.want {
				t.Errorf("Scaling = %+v\nwant      %+v", *got, tt.want)
			}
			if got.Autoscaled() != tt.autos {
				t.Errorf("Autoscaled() = %v, want %v", got.Autoscaled(), tt.autos)
			}
		})
	}
}

func TestScalingOnlyForLongRunning(t *testing.T) {
	app, diags := spec.Parse([]byte(`app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    web {}
  }
  function "sum" {
    command  = "node"
    callable = true
  }
}
`), "test.hcl")
	if len(diags) > 0 {
		t.Fatalf("unexpected diagnostics:\n%s", formatDiags(diags))
	}
	if app.Functions[1].Scaling != nil {
		t.Errorf("callable function has Scaling %+v", *app.Functions[1].Scaling)
	}
}

var scalingBadCases = []badCase{
	{name: "buffer without room", src: webScaleSpec("buffer_containers = 1"), summary: "max_containers needed to scale", line: 5, col: 25, detail: "max_containers is unset"},
	{name: "buffer with max equal to min", src: webScaleSpec("min_containers = 2\n    max_containers = 2\n    buffer_containers = 1"), summary: "max_containers needed to scale", line: 7, col: 25, detail: "max_containers is 2"},
	{name: "scaledown_window without room", src: webScaleSpec(`scaledown_window = "30s"`), summary: "max_containers needed to scale", line: 5, col: 24},
	{name: "buffer negative", src: webScaleSpec("max_containers = 3\n    buffer_containers = -1"), summary: "Invalid buffer_containers", line: 6, col: 25},
	{name: "buffer above max", src: webScaleSpec("max_containers = 3\n    buffer_containers = 4"), summary: "buffer_containers above max_containers", line: 6, col: 25},
	{name: "scaledown_window not a duration", src: webScaleSpec("max_containers = 3\n    scaledown_window = \"soon\""), summary: "Invalid scaledown_window", line: 6, col: 24},
	{name: "scaledown_window too short", src: webScaleSpec("max_containers = 3\n    scaledown_window = \"500ms\""), summary: "Invalid scaledown_window", line: 6, col: 24},
	{name: "drain_timeout without room", src: webScaleSpec(`drain_timeout = "30s"`), summary: "max_containers needed to scale", line: 5, col: 21},
	{name: "drain_timeout not a duration", src: webScaleSpec("max_containers = 3\n    drain_timeout = \"long\""), summary: "Invalid drain_timeout", line: 6, col: 21},
	{name: "drain_timeout too long", src: webScaleSpec("max_containers = 3\n    drain_timeout = \"2h\""), summary: "Invalid drain_timeout", line: 6, col: 21},
	{name: "scaledown_window too long", src: webScaleSpec("max_containers = 3\n    scaledown_window = \"2h\""), summary: "Invalid scaledown_window", line: 6, col: 24},
	{name: "max_inputs zero", src: webScaleSpec("concurrency {\n      max_inputs = 0\n    }"), summary: "Invalid max_inputs", line: 6, col: 20},
	{name: "max_inputs negative", src: webScaleSpec("concurrency {\n      max_inputs = -2\n    }"), summary: "Invalid max_inputs", line: 6, col: 20},
	{name: "target above max_inputs", src: webScaleSpec("concurrency {\n      max_inputs    = 4\n      target_inputs = 5\n    }"), summary: "target_inputs above max_inputs", line: 7, col: 23},
	{name: "target above default max_inputs", src: webScaleSpec("concurrency {\n      target_inputs = 2\n    }"), summary: "target_inputs above max_inputs", line: 6, col: 23, detail: "at most 1 requests"},
	{name: "target zero", src: webScaleSpec("concurrency {\n      target_inputs = 0\n    }"), summary: "Invalid target_inputs", line: 6, col: 23},
	{name: "queue max_requests zero", src: webScaleSpec("queue {\n      max_requests = 0\n    }"), summary: "Invalid max_requests", line: 6, col: 22},
	{name: "queue timeout bad", src: webScaleSpec("queue {\n      timeout = \"0s\"\n    }"), summary: "Invalid timeout", line: 6, col: 17},
	{name: "min above max", src: webScaleSpec("min_containers = 3\n    max_containers = 2"), summary: "max_containers below min_containers", line: 6, col: 22},
	{name: "concurrency on a worker", src: scaleSpec("concurrency {\n      max_inputs = 2\n    }"), summary: "Autoscaling setting on a function without web", line: 5, col: 5},
	{name: "buffer on a worker", src: scaleSpec("max_containers = 3\n    buffer_containers = 1"), summary: "Autoscaling setting on a function without web", line: 6, col: 25},
	{name: "queue on a scheduled function", src: scheduleSpec("schedule = \"0 3 * * *\"\n    queue {}"), summary: "Autoscaling setting on a function without web", line: 6, col: 5},
}

func TestParseBadScaling(t *testing.T) {
	runBad(t, scalingBadCases)
}
