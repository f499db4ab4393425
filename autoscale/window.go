package autoscale

import "time"

// Window keeps one function's recent samples for Decide: those of the last
// scaledown_window, and when it began watching. It is not safe for
// concurrent use; the autoscaler's loop owns one per function.
type Window struct {
	samples []Sample
	since   time.Time
}

// Observe adds a sample. The first one starts the watch.
func (w *Window) Observe(s Sample) {
	if w.since.IsZero() {
		w.since = s.At
	}
	w.samples = append(w.samples, s)
}

// Decide decides for cfg at now from the samples observed, and forgets
// those that have left the window.
func (w *Window) Decide(cfg Config, current int, now time.Time) Decision {
	from := now.Add(-cfg.ScaledownWindow)
	keep := w.samples[:0]
	for _, s := range w.samples {
		if s.At.After(from) {
			keep = append(keep, s)
		}
	}
	clear(w.samples[len(keep):])
	w.samples = keep
	since := w.since
	if since.IsZero() {
		since = now
	}
	return Decide(Input{Config: cfg, Current: current, Samples: w.samples, Since: since, Now: now})
}

// Len is how many samples the window holds.
func (w *Window) Len() int { return len(w.samples) }
