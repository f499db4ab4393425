// Package autoscaler is the apply stage of autoscaling: the loop in caravan
// server that, every second, reads every caravan proxy's load report, sums
// it per function, feeds one autoscale.Window per function, and scales the
// function's Nomad task group to what autoscale decides, logging each
// decision with its reason. It reaches Consul, Nomad and the proxies
// through Backend (consul.go has the real one); the decisions are package
// autoscale's, pure.
//
// One instance is active across caravan servers (RunLeader holds a Consul
// lock); the others wait to take over. A new leader starts every window
// afresh, so it scales nothing down before it has watched a whole
// scaledown_window.
package autoscaler

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/caravanhq/caravan/autoscale"
	"github.com/caravanhq/caravan/proxy"
	"github.com/hashicorp/go-hclog"
)

// Function is one autoscaled function, from its record.
type Function struct {
	// Service is its Consul service name, as the proxies report it.
	Service string
	Job     string
	Group   string
	Config  autoscale.Config
}

// Backend is what the autoscaler asks of the world.
type Backend interface {
	// Functions lists the autoscaled functions (their records).
	Functions(ctx context.Context) ([]Function, error)
	// Proxies lists the admin base URLs of the proxies that pass their
	// checks.
	Proxies(ctx context.Context) ([]string, error)
	// Load reads one proxy's report; WatchLoad waits (at most wait) for
	// its Index to pass index.
	Load(ctx context.Context, admin string) (proxy.Report, error)
	WatchLoad(ctx context.Context, admin string, index uint64, wait time.Duration) (proxy.Report, error)
	// Count is the count Nomad has for group of job; found is false when
	// the job or group is gone (or stopped).
	Count(ctx context.Context, job, group string) (n int, found bool, err error)
	// Scale sets it, with reason as Nomad's scaling event message; an
	// ErrDeploymentActive when a deployment of the job runs.
	Scale(ctx context.Context, job, group string, n int, reason string) error
	// Settle ends the running deployment of job early when a scale
	// opened it and every container of it passes its checks in Consul
	// (service is the function's): settled says whether it did, why
	// what stood in the way.
	Settle(ctx context.Context, job, service string) (settled bool, why string, err error)
}

// ErrDeploymentActive is Nomad refusing to scale a job while one of its
// deployments runs (a deploy's, or the one a previous scale-up opened).
// The autoscaler decides again at its next tick, and scales then.
var ErrDeploymentActive = errors.New("job scaling blocked due to active deployment")

// ErrJobChanging is a scale held back because a deploy is registering the
// job (its new version's deployment has not started, or the job changed
// since the autoscaler read it). The autoscaler decides again next tick,
// by when Nomad's deployment refuses the scale for as long as it runs.
var ErrJobChanging = errors.New("the job is being registered")

// Queues are the functions that answer from a queue (warm callables),
// whose load is their queue's depth rather than a proxy's report.
type Queues interface {
	// Functions lists them (Service names each one's queue).
	Functions(ctx context.Context) ([]Function, error)
	// Depth is how many inputs of fn wait or run.
	Depth(ctx context.Context, fn Function) (int, error)
}

// Scaler decides and scales; Tick is one round, Run the loop.
type Scaler struct {
	Backend Backend
	// Queues, when set, adds the warm callables, scaled on their
	// queues' depth (each input in a queue counts as a request in
	// flight).
	Queues Queues
	Log    hclog.Logger
	// Interval between rounds (default 1 s); a cold start at a proxy
	// starts one at once.
	Interval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time

	windows map[string]*autoscale.Window
	last    map[string]string // the last reason logged per function
	// again asks Run for another round soon: a deployment was settled,
	// and Nomad takes the next scale once it has ended it.
	again bool
	// wakeCh wakes Run for a round at once (Wake, the proxies' queue
	// watchers); made on first use (wakes, under wakeMu).
	wakeMu sync.Mutex
	wakeCh chan struct{}
}

// wakes is the channel that wakes Run.
func (s *Scaler) wakes() chan struct{} {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	if s.wakeCh == nil {
		s.wakeCh = make(chan struct{}, 1)
	}
	return s.wakeCh
}

// fresh is a Scaler with s's configuration and wake channel, and no state
// of its rounds (RunLeader's, for each time it becomes the leader).
func (s *Scaler) fresh() *Scaler {
	return &Scaler{Backend: s.Backend, Queues: s.Queues, Log: s.Log, Interval: s.Interval, Now: s.Now, wakeCh: s.wakes()}
}

// Wake asks Run for a round now rather than at the next tick: caravan
// server calls it when it queues a warm call, so a callable at zero starts
// its workers at once, as a proxy's queue starting does for a web
// function. It never blocks; on a server whose autoscaler is not the
// active one it does nothing but an early round later.
func (s *Scaler) Wake() {
	select {
	case s.wakes() <- struct{}{}:
	default:
	}
}

// AgainAfter is how soon Run decides again after settling a deployment.
const AgainAfter = 100 * time.Millisecond

// LoadTimeout bounds the read of one proxy's report in a round.
const LoadTimeout = 800 * time.Millisecond

// Tick runs one round: it returns the decisions that changed a count
// (for tests), keyed by service.
func (s *Scaler) Tick(ctx context.Context) (map[string]autoscale.Decision, error) {
	now := s.now()
	fns, err := s.Backend.Functions(ctx)
	if err != nil {
		return nil, err
	}
	if s.windows == nil {
		s.windows, s.last = map[string]*autoscale.Window{}, map[string]string{}
	}
	samples, reported := s.sample(ctx, now)
	queued := map[string]bool{}
	if s.Queues != nil {
		qfns, err := s.Queues.Functions(ctx)
		if err != nil {
			s.log().Warn("listing the queued functions", "error", err)
		}
		for _, fn := range qfns {
			n, err := s.Queues.Depth(ctx, fn)
			if err != nil {
				s.log().Debug("reading a queue's depth", "function", fn.Service, "error", err)
				continue
			}
			if samples == nil {
				samples = map[string]autoscale.Sample{}
			}
			samples[fn.Service] = autoscale.Sample{At: now, InFlight: n}
			queued[fn.Service] = true
			fns = append(fns, fn)
		}
	}
	changed := map[string]autoscale.Decision{}
	seen := map[string]bool{}
	for _, fn := range fns {
		seen[fn.Service] = true
		w := s.windows[fn.Service]
		if w == nil {
			w = &autoscale.Window{}
			s.windows[fn.Service] = w
		}
		if reported || queued[fn.Service] {
			// A proxy that knows nothing of the function reports no load
			// for it: zero, which is what it holds.
			smp := samples[fn.Service]
			smp.At = now
			w.Observe(smp)
		}
		cur, found, err := s.Backend.Count(ctx, fn.Job, fn.Group)
		if err != nil {
			s.log().Warn("reading the count", "function", fn.Service, "error", err)
			continue
		}
		if !found {
			continue
		}
		d := w.Decide(fn.Config, cur, now)
		if !d.Changed(cur) {
			if s.last[fn.Service] != d.Reason {
				s.log().Debug("holding", "function", fn.Service, "count", cur, "reason", d.Reason)
				s.last[fn.Service] = d.Reason
			}
			continue
		}
		err = s.Backend.Scale(ctx, fn.Job, fn.Group, d.Desired, d.Reason)
		if errors.Is(err, ErrDeploymentActive) {
			// A scale's own deployment, done but for Nomad's verdict:
			// give it, and scale as soon as Nomad has ended it.
			settled, why, serr := s.Backend.Settle(ctx, fn.Job, fn.Service)
			switch {
			case serr != nil:
				s.log().Warn("settling a scale's deployment", "function", fn.Service, "error", serr)
			case settled:
				s.log().Debug("settled a scale's deployment", "function", fn.Service, "because", why)
				s.again = true
				err = s.Backend.Scale(ctx, fn.Job, fn.Group, d.Desired, d.Reason)
			default:
				s.log().Debug("not settling the deployment", "function", fn.Service, "because", why)
			}
		}
		switch {
		case errors.Is(err, ErrJobChanging):
			s.log().Debug("scaling held: a deploy registers the job; deciding again next round", "function", fn.Service, "from", cur, "to", d.Desired, "reason", d.Reason, "why", err)
		case errors.Is(err, ErrDeploymentActive):
			s.log().Debug("scaling blocked by an active deployment; deciding again next round", "function", fn.Service, "from", cur, "to", d.Desired, "reason", d.Reason)
		case err != nil:
			s.log().Warn("scaling failed", "function", fn.Service, "from", cur, "to", d.Desired, "reason", d.Reason, "error", err)
		default:
			s.log().Info("scaled", "function", fn.Service, "job", fn.Job, "group", fn.Group, "from", cur, "to", d.Desired, "reason", d.Reason)
			s.last[fn.Service] = d.Reason
			changed[fn.Service] = d
		}
	}
	for svc := range s.windows {
		if !seen[svc] {
			delete(s.windows, svc)
			delete(s.last, svc)
		}
	}
	return changed, nil
}

// sample sums the reports of every proxy per function; reported is false
// when none answered (the load is unknown, not zero).
func (s *Scaler) sample(ctx context.Context, now time.Time) (map[string]autoscale.Sample, bool) {
	admins, err := s.Backend.Proxies(ctx)
	if err != nil {
		s.log().Warn("listing the proxies", "error", err)
		return nil, false
	}
	reports := make([]*proxy.Report, len(admins))
	var wg sync.WaitGroup
	for i, a := range admins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lctx, cancel := context.WithTimeout(ctx, LoadTimeout)
			defer cancel()
			r, err := s.Backend.Load(lctx, a)
			if err != nil {
				s.log().Debug("reading a proxy's load", "proxy", a, "error", err)
				return
			}
			reports[i] = &r
		}()
	}
	wg.Wait()
	out := map[string]autoscale.Sample{}
	reported := false
	for _, r := range reports {
		if r == nil {
			continue
		}
		reported = true
		for _, f := range r.Functions {
			out[f.Function] = autoscale.Sum(out[f.Function], autoscale.Sample{At: now, InFlight: f.InFlight, Queued: f.Queued})
		}
	}
	return out, reported
}

// Run ticks every Interval, and at once when a proxy reports a queue
// that started (a request at zero: its cold start), until ctx ends.
func (s *Scaler) Run(ctx context.Context) {
	interval := s.Interval
	if interval <= 0 {
		interval = time.Second
	}
	wake := s.wakes()
	watchers := map[string]context.CancelFunc{}
	defer func() {
		for _, cancel := range watchers {
			cancel()
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.watch(ctx, watchers, wake)
		s.again = false
		if _, err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.log().Warn("autoscaler round", "error", err)
		}
		var soon <-chan time.Time
		if s.again {
			soon = time.After(AgainAfter)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		case <-soon:
		}
	}
}

// watch keeps one long poll of each proxy's load report (WatchLoad) that
// wakes the loop when its queue index moves.
func (s *Scaler) watch(ctx context.Context, watchers map[string]context.CancelFunc, wake chan<- struct{}) {
	admins, err := s.Backend.Proxies(ctx)
	if err != nil {
		return
	}
	keep := map[string]bool{}
	for _, a := range admins {
		keep[a] = true
		if watchers[a] != nil {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		watchers[a] = cancel
		go func() {
			// From index 0: a proxy whose queues never started holds
			// the first poll until one does, and that start (the first
			// cold start it sees) wakes the loop like any later one. A
			// proxy whose index is past 0 answers at once: one round
			// early, which is harmless.
			var index uint64
			for wctx.Err() == nil {
				r, err := s.Backend.WatchLoad(wctx, a, index, 30*time.Second)
				if err != nil {
					select {
					case <-wctx.Done():
					case <-time.After(time.Second):
					}
					continue
				}
				if r.Index > index {
					select {
					case wake <- struct{}{}:
					default:
					}
				}
				index = r.Index
			}
		}()
	}
	for a, cancel := range watchers {
		if !keep[a] {
			cancel()
			delete(watchers, a)
		}
	}
}

func (s *Scaler) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Scaler) log() hclog.Logger {
	if s.Log == nil {
		return hclog.NewNullLogger()
	}
	return s.Log
}
