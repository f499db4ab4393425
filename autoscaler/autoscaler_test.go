package autoscaler

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/autoscale"
	"github.com/caravanhq/caravan/proxy"
)

type fake struct {
	mu      sync.Mutex
	fns     []Function
	proxies map[string]*proxy.Report // nil report: the proxy does not answer
	counts  map[string]int
	blocked bool
	scales  []int
	// settles ends the blocking deployment when Settle is asked.
	settles bool
	settled int
}

func (f *fake) Settle(context.Context, string, string) (bool, string, error) {
	if !f.settles || !f.blocked {
		return false, "a deploy's deployment", nil
	}
	f.blocked = false
	f.settled++
	return true, "settled", nil
}

func (f *fake) Functions(context.Context) ([]Function, error) { return f.fns, nil }
func (f *fake) Proxies(context.Context) ([]string, error) {
	var out []string
	for a := range f.proxies {
		out = append(out, a)
	}
	return out, nil
}
func (f *fake) Load(_ context.Context, a string) (proxy.Report, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.proxies[a]; r != nil {
		return *r, nil
	}
	return proxy.Report{}, errors.New("down")
}
func (f *fake) WatchLoad(ctx context.Context, a string, _ uint64, _ time.Duration) (proxy.Report, error) {
	<-ctx.Done()
	return proxy.Report{}, ctx.Err()
}
func (f *fake) Count(_ context.Context, job, group string) (int, bool, error) {
	n, ok := f.counts[job+"/"+group]
	return n, ok, nil
}
func (f *fake) Scale(_ context.Context, job, group string, n int, _ string) error {
	if f.blocked {
		return ErrDeploymentActive
	}
	f.counts[job+"/"+group] = n
	f.scales = append(f.scales, n)
	return nil
}

func load(fn string, inFlight, queued int) *proxy.Report {
	return &proxy.Report{Functions: []proxy.FunctionLoad{{Function: fn, InFlight: inFlight, Queued: queued}}}
}

func TestTick(t *testing.T) {
	cfg := autoscale.Config{MinContainers: 0, MaxContainers: 4, TargetInputs: 1, ScaledownWindow: 10 * time.Second}
	f := &fake{
		fns:     []Function{{Service: "svc", Job: "job", Group: "web", Config: cfg}},
		proxies: map[string]*proxy.Report{"a": load("svc", 0, 1), "b": load("other", 0, 0)},
		counts:  map[string]int{"job/web": 0},
	}
	now := time.Unix(1000, 0)
	s := &Scaler{Backend: f, Now: func() time.Time { return now }}
	ctx := context.Background()
	step := func(want int) {
		t.Helper()
		if _, err := s.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if got := f.counts["job/web"]; got != want {
			t.Fatalf("at %s: count %d, want %d (scales %v)", now.Sub(time.Unix(1000, 0)), got, want, f.scales)
		}
		now = now.Add(time.Second)
	}
	step(1) // cold start: one container first
	f.proxies["a"] = load("svc", 1, 2)
	f.proxies["b"] = load("svc", 0, 0)
	step(3) // 1 + 2 queued, summed over both proxies
	f.blocked = true
	f.proxies["a"] = load("svc", 4, 2)
	step(3) // Nomad refuses while a deployment runs ...
	f.blocked = false
	step(4) // ... and the next round scales, within max_containers
	f.proxies["a"], f.proxies["b"] = nil, nil
	for range 5 {
		step(4) // no proxy answers: the load is unknown, the count stays
	}
	f.proxies["a"] = load("svc", 0, 0)
	for range 4 {
		step(4) // idle, but the peak of the window (at 3s) still needs 4
	}
	step(0) // the peak is a window old: to zero
}

func TestTickForgetsGoneFunctions(t *testing.T) {
	f := &fake{fns: []Function{{Service: "svc", Job: "job", Group: "web", Config: autoscale.Config{MaxContainers: 1, ScaledownWindow: time.Second}}},
		proxies: map[string]*proxy.Report{"a": load("svc", 1, 0)}, counts: map[string]int{}}
	s := &Scaler{Backend: f}
	if _, err := s.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.scales) != 0 {
		t.Errorf("scaled a job Nomad does not have: %v", f.scales)
	}
	f.fns = nil
	if _, err := s.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(s.windows) != 0 {
		t.Errorf("kept the window of a function without a record")
	}
}

type fakeQueues struct {
	fns   []Function
	depth map[string]int
}

func (q *fakeQueues) Functions(context.Context) ([]Function, error) { return q.fns, nil }
func (q *fakeQueues) Depth(_ context.Context, fn Function) (int, error) {
	return q.depth[fn.Service], nil
}

// TestQueueDepth: a warm callable scales on its queue's depth, from zero
// at its first input, with or without proxies reporting, and back to
// zero after its scaledown window idle.
func TestQueueDepth(t *testing.T) {
	now := time.Unix(1000, 0)
	fn := Function{Service: "dev--calc--call--sum", Job: "dev--calc--call--sum", Group: "sum",
		Config: autoscale.Config{MinContainers: 0, MaxContainers: 3, TargetInputs: 2, ScaledownWindow: 5 * time.Second}}
	f := &fake{counts: map[string]int{fn.Job + "/" + fn.Group: 0}, proxies: map[string]*proxy.Report{}}
	q := &fakeQueues{fns: []Function{fn}, depth: map[string]int{}}
	s := &Scaler{Backend: f, Queues: q, Now: func() time.Time { return now }}
	tick := func(depth int) int {
		t.Helper()
		q.depth[fn.Service] = depth
		if _, err := s.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
		return f.counts[fn.Job+"/"+fn.Group]
	}
	if n := tick(0); n != 0 {
		t.Fatalf("idle at zero: %d workers", n)
	}
	if n := tick(1); n != 1 {
		t.Fatalf("a first input: %d workers, want 1 (its cold start)", n)
	}
	if n := tick(5); n != 3 {
		t.Fatalf("5 inputs at 2 a worker: %d workers, want the max 3", n)
	}
	for i := range 4 {
		if n := tick(0); n != 3 {
			t.Fatalf("idle %ds, inside the window: %d workers", i+1, n)
		}
	}
	if n := tick(0); n != 0 {
		t.Fatalf("idle past the window: %d workers, want 0", n)
	}
}

// demandFake is fake whose one proxy's load report long-polls as a real
// proxy's does (WatchLoad holds while its index is the proxy's), and
// whose scales are sent on scaled.
type demandFake struct {
	*fake
	// demand takes the report a held poll answers, which becomes the
	// proxy's.
	demand chan *proxy.Report
	scaled chan int
}

func (f *demandFake) WatchLoad(ctx context.Context, a string, index uint64, _ time.Duration) (proxy.Report, error) {
	f.mu.Lock()
	cur := f.proxies[a].Index
	f.mu.Unlock()
	if cur == index {
		select {
		case r := <-f.demand:
			f.mu.Lock()
			f.proxies[a] = r
			f.mu.Unlock()
			cur = r.Index
		case <-ctx.Done():
			return proxy.Report{}, ctx.Err()
		}
	}
	return proxy.Report{Index: cur}, nil
}

func (f *demandFake) Proxies(context.Context) ([]string, error) { return []string{"a"}, nil }

func (f *demandFake) Scale(_ context.Context, job, group string, n int, _ string) error {
	f.mu.Lock()
	f.counts[job+"/"+group] = n
	f.mu.Unlock()
	f.scaled <- n
	return nil
}

func (f *demandFake) Count(_ context.Context, job, group string) (int, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.counts[job+"/"+group]
	return n, ok, nil
}

// TestRunWakesOnTheFirstQueue: the first queue a proxy starts after the
// autoscaler began watching it (the first cold start since caravan server
// started) scales at once, not at the next round.
func TestRunWakesOnTheFirstQueue(t *testing.T) {
	cfg := autoscale.Config{MinContainers: 0, MaxContainers: 4, TargetInputs: 1, ScaledownWindow: time.Hour}
	f := &demandFake{
		fake: &fake{
			fns:     []Function{{Service: "svc", Job: "job", Group: "web", Config: cfg}},
			proxies: map[string]*proxy.Report{"a": load("svc", 0, 0)},
			counts:  map[string]int{"job/web": 0},
		},
		demand: make(chan *proxy.Report),
		scaled: make(chan int, 10),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &Scaler{Backend: f, Interval: time.Hour} // no round but the first, unless woken
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	// A request queues at the proxy (its index moves from 0 to 1) while
	// the watcher's first poll waits.
	select {
	case f.demand <- &proxy.Report{Index: 1, Functions: []proxy.FunctionLoad{{Function: "svc", Queued: 1}}}:
	case <-time.After(10 * time.Second):
		t.Fatal("the autoscaler never polled the proxy's load")
	}
	select {
	case n := <-f.scaled:
		if n != 1 {
			t.Errorf("scaled to %d, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first queue at the proxy did not wake the autoscaler")
	}
	cancel()
	<-done
}

// lockedQueues is fakeQueues safe for Run's goroutine.
type lockedQueues struct {
	mu sync.Mutex
	fakeQueues
	// read gets a value at each Depth (buffered; dropped when full).
	read chan struct{}
}

func (q *lockedQueues) Functions(ctx context.Context) ([]Function, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.fakeQueues.Functions(ctx)
}

func (q *lockedQueues) Depth(ctx context.Context, fn Function) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case q.read <- struct{}{}:
	default:
	}
	return q.fakeQueues.Depth(ctx, fn)
}

// TestWakeScalesAQueueAtOnce: a call queued for a callable at zero
// (Wake) scales it at once, not at the next round.
func TestWakeScalesAQueueAtOnce(t *testing.T) {
	fn := Function{Service: "dev--calc--call--sum", Job: "dev--calc--call--sum", Group: "sum",
		Config: autoscale.Config{MinContainers: 0, MaxContainers: 3, TargetInputs: 1, ScaledownWindow: time.Hour}}
	f := &demandFake{
		fake:   &fake{counts: map[string]int{fn.Job + "/" + fn.Group: 0}, proxies: map[string]*proxy.Report{"a": load(fn.Service, 0, 0)}},
		demand: make(chan *proxy.Report),
		scaled: make(chan int, 10),
	}
	q := &lockedQueues{fakeQueues: fakeQueues{fns: []Function{fn}, depth: map[string]int{}}, read: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &Scaler{Backend: f, Queues: q, Interval: time.Hour} // no round but the first, unless woken
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	<-q.read // the first round read an empty queue
	q.mu.Lock()
	q.depth[fn.Service] = 1
	q.mu.Unlock()
	s.Wake()
	select {
	case n := <-f.scaled:
		if n != 1 {
			t.Errorf("scaled to %d, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a queued call did not wake the autoscaler")
	}
	cancel()
	<-done
}
