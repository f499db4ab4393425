package autoscale_test

import (
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/autoscale"
	"github.com/caravanhq/caravan/spec"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// at is a sample sec seconds after t0.
func at(sec float64, inFlight, queued int) autoscale.Sample {
	return autoscale.Sample{At: t0.Add(time.Duration(sec * float64(time.Second))), InFlight: inFlight, Queued: queued}
}

func TestNeed(t *testing.T) {
	tests := []struct {
		name string
		cfg  autoscale.Config
		load int
		want int
	}{
		{"idle at min 0", autoscale.Config{MaxContainers: 5, TargetInputs: 1}, 0, 0},
		{"idle at min 2", autoscale.Config{MinContainers: 2, MaxContainers: 5, TargetInputs: 1}, 0, 2},
		{"one request", autoscale.Config{MaxContainers: 5, TargetInputs: 1}, 1, 1},
		{"rounds up", autoscale.Config{MaxContainers: 5, TargetInputs: 4}, 5, 2},
		{"exact multiple", autoscale.Config{MaxContainers: 5, TargetInputs: 4}, 8, 2},
		{"capped at max", autoscale.Config{MaxContainers: 5, TargetInputs: 1}, 100, 5},
		{"buffer under load", autoscale.Config{MaxContainers: 5, TargetInputs: 2, BufferContainers: 2}, 3, 4},
		{"no buffer when idle", autoscale.Config{MaxContainers: 5, TargetInputs: 2, BufferContainers: 2}, 0, 0},
		{"buffer capped at max", autoscale.Config{MaxContainers: 5, TargetInputs: 1, BufferContainers: 2}, 4, 5},
		{"target 0 counts as 1", autoscale.Config{MaxContainers: 5}, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := autoscale.Need(tt.cfg, tt.load); got != tt.want {
				t.Errorf("Need(%+v, %d) = %d, want %d", tt.cfg, tt.load, got, tt.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	// Scale to zero, up to 10, one request per container, a 60 s window.
	zero := autoscale.Config{MinContainers: 0, MaxContainers: 10, TargetInputs: 1, ScaledownWindow: time.Minute}
	conc := autoscale.Config{MinContainers: 1, MaxContainers: 10, TargetInputs: 4, ScaledownWindow: time.Minute}
	buf := autoscale.Config{MinContainers: 0, MaxContainers: 10, TargetInputs: 2, BufferContainers: 1, ScaledownWindow: time.Minute}
	tests := []struct {
		name    string
		cfg     autoscale.Config
		current int
		samples []autoscale.Sample
		since   float64 // seconds after t0
		now     float64
		want    int
		reason  string // a substring of the reason
	}{
		{"idle at zero stays", zero, 0, []autoscale.Sample{at(99, 0, 0)}, 0, 100, 0, "steady"},
		{"concurrent requests at zero: one scale-up", zero, 0, []autoscale.Sample{at(99, 0, 7)}, 0, 100, 1, "cold start: 0 in flight + 7 queued at zero"},
		{"at zero right after watching starts", zero, 0, []autoscale.Sample{at(0, 0, 3)}, 0, 0, 1, "cold start"},
		{"from one, the load's count", zero, 1, []autoscale.Sample{at(99, 1, 6)}, 0, 100, 7, "up: 1 in flight + 6 queued needs 7"},
		{"up at once, to max", zero, 2, []autoscale.Sample{at(99, 2, 40)}, 0, 100, 10, "at max_containers"},
		{"up at once, ignoring the window", zero, 2, []autoscale.Sample{at(50, 1, 0), at(99.9, 5, 0)}, 99, 100, 5, "up"},
		{"steady", conc, 3, []autoscale.Sample{at(90, 12, 0), at(99, 9, 0)}, 0, 100, 3, "steady"},
		{"lower load within the window holds", zero, 5, []autoscale.Sample{at(50, 5, 0), at(99, 1, 0)}, 0, 100, 5, "steady"},
		{"lower load for the whole window: down", zero, 5, []autoscale.Sample{at(39, 5, 0), at(41, 2, 0), at(99, 1, 0)}, 0, 100, 2, "down: the peak of the last 1m0s, 2 in flight + 0 queued, needs 2"},
		{"a sample exactly a window old is out", zero, 5, []autoscale.Sample{at(40, 5, 0), at(99, 1, 0)}, 0, 100, 1, "down"},
		{"idle for the window: to zero", zero, 3, []autoscale.Sample{at(40.5, 0, 0), at(70, 0, 0), at(99, 0, 0)}, 0, 100, 0, "to zero: idle for 1m0s"},
		{"idle, but watched less than a window: hold", zero, 3, []autoscale.Sample{at(90, 0, 0), at(99, 0, 0)}, 80, 100, 3, "holding 3: watched for 20s"},
		{"down to min, not below", conc, 4, []autoscale.Sample{at(99, 0, 0)}, 0, 100, 1, "at min_containers"},
		{"no samples: keep", zero, 4, nil, 0, 100, 4, "no load reported"},
		{"only stale samples: keep", zero, 4, []autoscale.Sample{at(10, 9, 9)}, 0, 100, 4, "no load reported"},
		{"samples from the future are ignored", zero, 4, []autoscale.Sample{at(101, 9, 9)}, 0, 100, 4, "no load reported"},
		{"below min: to min at once", conc, 0, nil, 0, 100, 1, "below min_containers 1"},
		{"above max: to max at once", zero, 12, []autoscale.Sample{at(99, 12, 0)}, 0, 100, 10, "above max_containers 10"},
		{"buffer while loaded", buf, 1, []autoscale.Sample{at(99, 3, 0)}, 0, 100, 3, "buffer_containers 1"},
		{"buffer goes when idle for the window", buf, 3, []autoscale.Sample{at(99, 0, 0)}, 0, 100, 0, "to zero"},
		{"concurrency divides the load", conc, 1, []autoscale.Sample{at(99, 4, 5)}, 0, 100, 3, "target_inputs 4"},
		{"min equals max never moves", autoscale.Config{MinContainers: 2, MaxContainers: 2, TargetInputs: 1, ScaledownWindow: time.Minute}, 2, []autoscale.Sample{at(99, 50, 50)}, 0, 100, 2, "steady"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := autoscale.Decide(autoscale.Input{
				Config: tt.cfg, Current: tt.current, Samples: tt.samples,
				Since: t0.Add(time.Duration(tt.since * float64(time.Second))),
				Now:   t0.Add(time.Duration(tt.now * float64(time.Second))),
			})
			if d.Desired != tt.want {
				t.Errorf("Desired = %d, want %d (reason %q)", d.Desired, tt.want, d.Reason)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to contain %q", d.Reason, tt.reason)
			}
			if d.Changed(tt.current) != (tt.want != tt.current) {
				t.Errorf("Changed(%d) = %v", tt.current, d.Changed(tt.current))
			}
		})
	}
}

func TestSum(t *testing.T) {
	got := autoscale.Sum(at(1, 2, 3), at(2, 4, 0), at(1.5, 0, 1))
	if want := at(2, 6, 4); got != want {
		t.Errorf("Sum = %+v, want %+v", got, want)
	}
	if got := autoscale.Sum(); got != (autoscale.Sample{}) {
		t.Errorf("Sum() = %+v, want zero", got)
	}
}

// TestWindowRamp drives a Window through a ramp 0 → 6 → 0 one sample a
// second, applying each decision as the new count, and checks the count
// at each step: up at once (after one cold start), down a window after the
// load fell, to zero a window after the last request.
func TestWindowRamp(t *testing.T) {
	cfg := autoscale.Config{MinContainers: 0, MaxContainers: 5, TargetInputs: 2, ScaledownWindow: 10 * time.Second}
	type step struct {
		sec      int
		inFlight int
		queued   int
		want     int
	}
	steps := []step{
		{0, 0, 0, 0},
		{1, 0, 0, 0},
		{2, 0, 6, 1}, // cold start: one container, whatever the queue
		{3, 0, 6, 3}, // then the load's count
		{4, 6, 0, 3},
		{5, 10, 4, 5}, // capped at max
		{6, 10, 0, 5},
		{7, 2, 0, 5},  // lower load: hold for the window
		{15, 2, 0, 5}, // the peak at 6 s is 9 s old: still in the window
		{16, 2, 0, 1}, // now out: down to what 2 in flight need
		{17, 0, 0, 1},
		{25, 0, 0, 1}, // the last load (16 s) is still in the window
		{26, 0, 0, 0}, // 16 s is a window ago: idle for the window, to zero
		{27, 0, 0, 0},
		{28, 0, 0, 0},
		{29, 1, 0, 1}, // the next request: a cold start
	}
	var w autoscale.Window
	current := 0
	for _, s := range steps {
		now := t0.Add(time.Duration(s.sec) * time.Second)
		w.Observe(autoscale.Sample{At: now, InFlight: s.inFlight, Queued: s.queued})
		d := w.Decide(cfg, current, now)
		if d.Desired != s.want {
			t.Fatalf("at %ds (%d in flight, %d queued, %d running): Desired = %d, want %d (%s)", s.sec, s.inFlight, s.queued, current, d.Desired, s.want, d.Reason)
		}
		current = d.Desired
	}
	if w.Len() > 10 {
		t.Errorf("window holds %d samples, want at most the window's 10", w.Len())
	}
}

// TestWindowHoldsAfterRestart: a new Window (a restarted autoscaler) does
// not scale an idle function down before it has watched a whole window.
func TestWindowHoldsAfterRestart(t *testing.T) {
	cfg := autoscale.Config{MinContainers: 0, MaxContainers: 5, TargetInputs: 1, ScaledownWindow: 10 * time.Second}
	var w autoscale.Window
	for sec := 100; sec < 110; sec++ {
		now := t0.Add(time.Duration(sec) * time.Second)
		w.Observe(autoscale.Sample{At: now})
		if d := w.Decide(cfg, 3, now); d.Desired != 3 {
			t.Fatalf("at %ds after the restart: Desired = %d, want 3 (%s)", sec-100, d.Desired, d.Reason)
		}
	}
	now := t0.Add(110 * time.Second)
	w.Observe(autoscale.Sample{At: now})
	if d := w.Decide(cfg, 3, now); d.Desired != 0 {
		t.Fatalf("a window after the restart: Desired = %d, want 0 (%s)", d.Desired, d.Reason)
	}
}

func TestWindowEmpty(t *testing.T) {
	var w autoscale.Window
	cfg := autoscale.Config{MinContainers: 0, MaxContainers: 5, TargetInputs: 1, ScaledownWindow: 10 * time.Second}
	if d := w.Decide(cfg, 2, t0); d.Desired != 2 || !strings.Contains(d.Reason, "no load reported") {
		t.Errorf("empty window: %+v, want 2, no load reported", d)
	}
}

func TestFromSpec(t *testing.T) {
	got := autoscale.FromSpec(&spec.Scaling{MinContainers: 0, MaxContainers: 4, BufferContainers: 1, ScaledownWindow: time.Minute, MaxInputs: 8, TargetInputs: 6})
	want := autoscale.Config{MinContainers: 0, MaxContainers: 4, BufferContainers: 1, TargetInputs: 6, ScaledownWindow: time.Minute}
	if got != want {
		t.Errorf("FromSpec = %+v, want %+v", got, want)
	}
}
