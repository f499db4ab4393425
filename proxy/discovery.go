package proxy

import (
	"context"
	"strconv"
	"time"
)

// Instance is one healthy container of a function, as discovery lists it.
type Instance struct {
	// ID names the container across snapshots (Consul's service ID).
	ID string
	// Addr is where it listens, host:port.
	Addr string
	// HealthPath is the path its health check GETs (MetaHealthPath), for
	// the proxy's own probes of a container whose checks do not pass yet;
	// "" when discovery does not know it (then the proxy waits for
	// discovery).
	HealthPath string
	// Canary: it is a canary of a version not yet promoted (Consul tags
	// it CanaryTag); only a split or the preview sends it requests.
	Canary bool
}

// Settings are a function's request-path settings (spec.Scaling's
// max_inputs and queue); zero fields take the defaults below.
type Settings struct {
	MaxInputs    int
	QueueMax     int
	QueueTimeout time.Duration
	// HealthPath is the path the containers' health check GETs (the
	// spec's health_path); "" leaves it out of Meta.
	HealthPath string
}

// Defaults of Settings, the spec's (spec.DefaultMaxInputs and the queue's).
const (
	DefaultMaxInputs    = 1
	DefaultQueueMax     = 1000
	DefaultQueueTimeout = 60 * time.Second
)

// withDefaults fills s's zero fields.
func (s Settings) withDefaults() Settings {
	if s.MaxInputs < 1 {
		s.MaxInputs = DefaultMaxInputs
	}
	if s.QueueMax < 1 {
		s.QueueMax = DefaultQueueMax
	}
	if s.QueueTimeout <= 0 {
		s.QueueTimeout = DefaultQueueTimeout
	}
	return s
}

// Service meta keys a function's containers carry their Settings in
// (Consul allows only [A-Za-z0-9_-] in meta keys). Render does not stamp
// them yet: the session that puts the proxy in the request path will.
const (
	MetaMaxInputs    = "caravan_max_inputs"
	MetaQueueMax     = "caravan_queue_max"
	MetaQueueTimeout = "caravan_queue_timeout"
	// MetaHealthPath is the path the container's health check GETs: the
	// proxy probes it itself while Consul's checks do not pass yet, so a
	// cold start does not wait for Consul's first interval (issue 13).
	MetaHealthPath = "caravan_health_path"
)

// SettingsFromMeta reads Settings from service meta; what is missing or
// does not parse is left zero (the default). ok is false when meta holds
// none of the keys.
func SettingsFromMeta(meta map[string]string) (s Settings, ok bool) {
	if v, found := meta[MetaMaxInputs]; found {
		s.MaxInputs, _ = strconv.Atoi(v)
		ok = true
	}
	if v, found := meta[MetaQueueMax]; found {
		s.QueueMax, _ = strconv.Atoi(v)
		ok = true
	}
	if v, found := meta[MetaQueueTimeout]; found {
		s.QueueTimeout, _ = time.ParseDuration(v)
		ok = true
	}
	if v, found := meta[MetaHealthPath]; found {
		s.HealthPath = v
		ok = true
	}
	return s, ok
}

// Meta is SettingsFromMeta's inverse, for the renderer.
func (s Settings) Meta() map[string]string {
	s = s.withDefaults()
	m := map[string]string{
		MetaMaxInputs:    strconv.Itoa(s.MaxInputs),
		MetaQueueMax:     strconv.Itoa(s.QueueMax),
		MetaQueueTimeout: s.QueueTimeout.String(),
	}
	if s.HealthPath != "" {
		m[MetaHealthPath] = s.HealthPath
	}
	return m
}

// Snapshot is what discovery knows of a function at one index.
type Snapshot struct {
	// Known says the function exists: it has containers, or a record
	// of its settings (at zero). The proxy answers 404 for one that is
	// not, at once, rather than queueing for it.
	Known bool
	// Instances are its healthy containers, in any order.
	Instances []Instance
	// Starting is how many more it has whose checks do not pass yet.
	Starting int
	// Pending are those starting containers, when discovery can say
	// which (Consul does): the proxy probes their HealthPath itself and
	// gives one requests on its first 2xx, until discovery says passing.
	Pending []Instance
	// Settings are its settings; nil when discovery does not know them
	// (no container says, say, at zero): the proxy keeps what it had.
	Settings *Settings
}

// Discovery tells the proxy the containers of a function. It is the
// proxy's one seam to Consul: a fake drives the unit tests, Consul
// (consul.go) the real thing.
type Discovery interface {
	// Watch returns the function's snapshot once its index is past
	// index (at once for index 0), blocking until then or until ctx
	// ends: a Consul blocking query. The index returned is passed to the
	// next call.
	Watch(ctx context.Context, function string, index uint64) (Snapshot, uint64, error)
}
