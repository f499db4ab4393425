// Package autoscale owns the autoscaler's decisions: from a function's recent
// load (requests in flight and queued, as caravan's proxies report it), how
// many containers it should run, and why. It is pure: no clock, no I/O. The
// loop that samples the proxies every second and scales through Nomad
// calls it and logs each decision's Reason.
//
// The rules, Knative's stable window with Modal's settings:
//
//   - A sample needs ceil((in flight + queued) / target_inputs) containers,
//     plus buffer_containers while it has any load, within
//     [min_containers, max_containers].
//   - The function wants the most any sample of the last scaledown_window
//     needed. A higher need therefore counts at once (scale up is
//     immediate), and a lower one only once every higher sample has left
//     the window (scale down after scaledown_window of lower load; to zero
//     after scaledown_window idle).
//   - Nothing scales down before the autoscaler has watched the function
//     for a whole window (a restarted server does not take a window it
//     never saw for an idle one), nor while no sample is in the window (the
//     proxies are not reporting: the count stays as it is).
//   - At zero, load asks for one container first: every request that
//     arrives while the function has none shares that one scale-up, and
//     the next decision, from one container, scales on the load as usual.
//
// There is no separate panic mode: Knative needs one because its stable
// window averages, so a burst moves the average slowly; here the window's
// maximum already follows a burst in the next decision.
package autoscale

import (
	"fmt"
	"github.com/caravanhq/caravan/spec"
	"time"
)

// Config is one function's scaling settings (spec.Scaling's, defaults
// applied).
type Config struct {
	MinContainers    int
	MaxContainers    int
	BufferContainers int
	// TargetInputs is the load per container to aim for; below 1 counts
	// as 1.
	TargetInputs    int
	ScaledownWindow time.Duration
}

// Sample is a function's load at one moment, summed over every proxy.
type Sample struct {
	At       time.Time
	InFlight int
	Queued   int
}

// Load is the requests a sample counts.
func (s Sample) Load() int { return s.InFlight + s.Queued }

// Sum adds the loads of one moment reported by several proxies; At is
// the latest of theirs.
func Sum(samples ...Sample) Sample {
	var out Sample
	for _, s := range samples {
		out.InFlight += s.InFlight
		out.Queued += s.Queued
		if s.At.After(out.At) {
			out.At = s.At
		}
	}
	return out
}

// Input is what a decision is made from.
type Input struct {
	Config Config
	// Current is the container count last asked of Nomad.
	Current int
	// Samples are the function's recent samples, in any order; those
	// older than the window (or later than Now) are ignored.
	Samples []Sample
	// Since is when the autoscaler began watching the function: its first
	// sample, or when it took over.
	Since time.Time
	Now   time.Time
}

// Decision is how many containers a function should run.
type Decision struct {
	Desired int
	// Reason says why, for the log.
	Reason string
}

// Changed reports whether d asks for another count than current.
func (d Decision) Changed(current int) bool { return d.Desired != current }

// Need is how many containers load requests need under cfg: a container
// per target_inputs, plus the buffer while there is any load, within
// [min, max].
func Need(cfg Config, load int) int {
	target := max(cfg.TargetInputs, 1)
	n := 0
	if load > 0 {
		n = (load+target-1)/target + cfg.BufferContainers
	}
	return clamp(cfg, n)
}

func clamp(cfg Config, n int) int {
	return max(min(n, cfg.MaxContainers), cfg.MinContainers)
}

// Decide is the count in.Config wants now; see the package doc.
func Decide(in Input) Decision {
	cfg, cur := in.Config, in.Current
	switch {
	case cur < cfg.MinContainers:
		return Decision{cfg.MinContainers, fmt.Sprintf("%d running, below min_containers %d", cur, cfg.MinContainers)}
	case cur > cfg.MaxContainers:
		return Decision{cfg.MaxContainers, fmt.Sprintf("%d running, above max_containers %d", cur, cfg.MaxContainers)}
	}

	from := in.Now.Add(-cfg.ScaledownWindow)
	var peak Sample
	peakNeed, seen := -1, false
	for _, s := range in.Samples {
		if !s.At.After(from) || s.At.After(in.Now) {
			continue
		}
		if n := Need(cfg, s.Load()); n > peakNeed || (n == peakNeed && s.At.After(peak.At)) {
			peak, peakNeed = s, n
		}
		seen = true
	}
	if !seen {
		return Decision{cur, fmt.Sprintf("no load reported in the last %s: keeping %d", cfg.ScaledownWindow, cur)}
	}

	if cur == 0 && peakNeed > 0 {
		return Decision{1, fmt.Sprintf("cold start: %s at zero", describe(peak))}
	}
	switch {
	case peakNeed > cur:
		return Decision{peakNeed, fmt.Sprintf("up: %s needs %s", describe(peak), needText(cfg, peakNeed))}
	case peakNeed == cur:
		return Decision{cur, fmt.Sprintf("steady: the peak of the last %s, %s, needs %d", cfg.ScaledownWindow, describe(peak), cur)}
	case in.Now.Sub(in.Since) < cfg.ScaledownWindow:
		return Decision{cur, fmt.Sprintf("holding %d: watched for %s, less than scaledown_window %s", cur, in.Now.Sub(in.Since).Round(time.Millisecond), cfg.ScaledownWindow)}
	case peakNeed == 0:
		return Decision{0, fmt.Sprintf("to zero: idle for %s", cfg.ScaledownWindow)}
	default:
		return Decision{peakNeed, fmt.Sprintf("down: the peak of the last %s, %s, needs %s", cfg.ScaledownWindow, describe(peak), needText(cfg, peakNeed))}
	}
}

func describe(s Sample) string {
	return fmt.Sprintf("%d in flight + %d queued", s.InFlight, s.Queued)
}

// needText says how n follows from cfg: the buffer and bounds that shaped it.
func needText(cfg Config, n int) string {
	t := fmt.Sprintf("%d (target_inputs %d", n, max(cfg.TargetInputs, 1))
	if cfg.BufferContainers > 0 {
		t += fmt.Sprintf(", buffer_containers %d", cfg.BufferContainers)
	}
	switch n {
	case cfg.MaxContainers:
		t += ", at max_containers"
	case cfg.MinContainers:
		t += ", at min_containers"
	}
	return t + ")"
}

// FromSpec is the Config of a function's validated scaling settings.
func FromSpec(s *spec.Scaling) Config {
	return Config{
		MinContainers: s.MinContainers, MaxContainers: s.MaxContainers, BufferContainers: s.BufferContainers,
		TargetInputs: s.TargetInputs, ScaledownWindow: s.ScaledownWindow,
	}
}
