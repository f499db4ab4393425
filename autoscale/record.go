package autoscale

import (
	"fmt"
	"time"

	"github.com/caravanhq/caravan/spec"
)

// Record is one autoscaled function as caravan publishes it at deploy, in
// Consul KV under proxy.SettingsKVPrefix + its service name, and removes
// at stop: the proxy reads its request-path settings (the first three
// fields, which also tell it that a function at zero exists), the
// autoscaler the rest (which Nomad group to scale, and how).
type Record struct {
	MaxInputs    int    `json:"max_inputs"`
	QueueMax     int    `json:"queue_max"`
	QueueTimeout string `json:"queue_timeout"`

	// Job and Group are the Nomad job and task group the function runs
	// as.
	Job   string `json:"job"`
	Group string `json:"group"`

	MinContainers    int    `json:"min_containers"`
	MaxContainers    int    `json:"max_containers"`
	BufferContainers int    `json:"buffer_containers"`
	TargetInputs     int    `json:"target_inputs"`
	ScaledownWindow  string `json:"scaledown_window"`
}

// NewRecord is the record of group of job, scaled by s (validated).
func NewRecord(job, group string, s *spec.Scaling) Record {
	return Record{
		MaxInputs: s.MaxInputs, QueueMax: s.QueueMax, QueueTimeout: s.QueueTimeout.String(),
		Job: job, Group: group,
		MinContainers: s.MinContainers, MaxContainers: s.MaxContainers, BufferContainers: s.BufferContainers,
		TargetInputs: s.TargetInputs, ScaledownWindow: s.ScaledownWindow.String(),
	}
}

// Config is the record's scaling Config; an error says the record cannot
// be scaled by (written by something else than caravan, or damaged).
func (r Record) Config() (Config, error) {
	w, err := time.ParseDuration(r.ScaledownWindow)
	switch {
	case r.Job == "" || r.Group == "":
		return Config{}, fmt.Errorf("no job or group")
	case err != nil:
		return Config{}, fmt.Errorf("scaledown_window: %w", err)
	case r.MinContainers < 0 || r.MaxContainers < 1 || r.MaxContainers < r.MinContainers:
		return Config{}, fmt.Errorf("containers [%d, %d]", r.MinContainers, r.MaxContainers)
	}
	return Config{MinContainers: r.MinContainers, MaxContainers: r.MaxContainers, BufferContainers: r.BufferContainers,
		TargetInputs: r.TargetInputs, ScaledownWindow: w}, nil
}
