package proxy

import (
	"container/list"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"
)

// Errors of a request that got no container. Each has its own status; see
// Proxy.ServeHTTP.
var (
	// ErrQueueFull: every container has max_inputs in flight and the
	// queue holds max_requests already (503).
	ErrQueueFull = errors.New("queue full")
	// ErrQueueTimeout: the request waited the function's queue timeout
	// without a container having room (504).
	ErrQueueTimeout = errors.New("waited past the queue timeout")
	// ErrNoFunction: discovery knows no such function (404).
	ErrNoFunction = errors.New("no such function")
)

// instance is one container as the proxy counts it.
type instance struct {
	id, addr string
	// canary: discovery tags it CanaryTag (see set).
	canary   bool
	inFlight int
	// draining: Drain asked; no new requests.
	draining bool
	// gone: discovery no longer lists it; no new requests, and it is
	// forgotten once its last request ends.
	gone bool
	// ejectedUntil: a request to it failed; no new requests until then.
	ejectedUntil time.Time
	// idle is closed when inFlight next reaches 0 (made by waitIdle).
	idle chan struct{}
}

// waiter is a queued request.
type waiter struct {
	// ch gets the container given to it, or nil when the function turned
	// out unknown. Buffered: dispatch never blocks.
	ch chan *instance
	// elem is its place in the queue; nil once it left.
	elem *list.Element
	// set is which containers it may be given, once decided: a request
	// that came before the first snapshot decides (sp) when it comes.
	set     set
	sp      split
	decided bool
}

// pool is one function's containers and queue. Every method is safe for
// concurrent use.
type pool struct {
	name string
	now  func() time.Time
	// ejectFor is how long a container that failed a request gets none.
	ejectFor time.Duration
	// metrics are its handles of the per-request metrics (set by Proxy).
	metrics *fnMetrics
	// onQueue, when set, is called (with mu held) when a request enters
	// an empty queue.
	onQueue func()

	mu       sync.Mutex
	settings Settings
	starting int
	// seen: a snapshot arrived; known: the last one said the function
	// exists. Requests queue until the first, and are 404 while the
	// function is unknown.
	seen, known bool
	// unknownAt is when a snapshot last said the function is unknown.
	unknownAt time.Time
	// used is when a request last came, for Proxy's collection of idle
	// pools.
	used      time.Time
	instances []*instance // in the order discovery first listed them
	queue     list.List   // of *waiter, oldest first
	// next rotates where pick starts, so equal loads share requests.
	next int
	// acc is the running remainder of a split's weight (see turn);
	// facc that of a split to another function (see turnTo).
	acc, facc int
	// wake is set while a timer will dispatch once an ejection ends.
	wake *time.Timer

	// passing are the containers the last snapshot lists as passing;
	// pending those it lists as starting, by ID, with what the proxy's
	// own probes say of them; passed the IDs of listed containers
	// discovery has passed at least once (Consul decides for those).
	passing []Instance
	pending map[string]*candidate
	passed  map[string]bool
	// unlisted is how many starting containers discovery counts but
	// does not list (in Snapshot.Starting only).
	unlisted int
	probing  probing
}

// probing is how a pool probes its starting containers itself.
type probing struct {
	prober Prober // nil: it does not
	every  time.Duration
	limit  time.Duration
	// ctx ends every probe (the pool's watch ended); wg waits for them.
	ctx context.Context
	wg  sync.WaitGroup
}

// candidate is a starting container and its probes' verdict.
type candidate struct {
	Instance
	state  probeState
	cancel context.CancelFunc // ends its probes; nil when none run
}

func newPool(name string, now func() time.Time, ejectFor time.Duration) *pool {
	return &pool{name: name, now: now, ejectFor: ejectFor, settings: Settings{}.withDefaults(),
		pending: map[string]*candidate{}, passed: map[string]bool{}}
}

// usable reports whether in may take one more request now.
func (p *pool) usable(in *instance, now time.Time) bool {
	return !in.draining && !in.gone && !now.Before(in.ejectedUntil) && in.inFlight < p.settings.MaxInputs
}

// pick is the least-loaded usable container of s, or nil. Called with mu
// held.
func (p *pool) pick(s set) *instance {
	n := len(p.instances)
	if n == 0 {
		return nil
	}
	now := p.now()
	var best *instance
	start := p.next % n
	for i := range n {
		in := p.instances[(start+i)%n]
		if s.has(in.addr, in.canary) && p.usable(in, now) && (best == nil || in.inFlight < best.inFlight) {
			best = in
		}
	}
	p.next++
	return best
}

// ready is how many containers are listed and neither draining nor
// ejected. Called with mu held.
func (p *pool) ready() int {
	now := p.now()
	n := 0
	for _, in := range p.instances {
		if !in.draining && !in.gone && !now.Before(in.ejectedUntil) {
			n++
		}
	}
	return n
}

// acquired is a container given to a request, and how it was had.
type acquired struct {
	in *instance
	// waited is how long the request queued (0: it did not).
	waited time.Duration
	queued bool
	// cold: no container was ready when the request arrived.
	cold bool
}

// members counts the containers of s the pool lists or waits for.
// Called with mu held.
func (p *pool) members(s set) int {
	n := 0
	for _, in := range p.instances {
		if !in.gone && s.has(in.addr, in.canary) {
			n++
		}
	}
	for _, c := range p.pending {
		if s.has(c.Addr, c.Canary) {
			n++
		}
	}
	return n
}

// choose is the set of containers a request under sp goes to: the live
// version's without a split; the canaries for the preview (ErrNoFunction
// when there are none: the preview hostname has nothing to answer); under
// a weighted split, the new containers for weight percent of requests and
// the live ones for the rest, or the other side when the chosen one has no
// container at all (as Traefik's failover does on the direct path).
// Called with mu held.
func (p *pool) choose(sp split) (set, error) {
	switch {
	case sp.canary:
		s := set{kind: setCanary}
		if p.members(s) == 0 {
			return s, ErrNoFunction
		}
		return s, nil
	case sp.next == nil:
		return set{kind: setLive}, nil
	}
	chosen, other := set{kind: setNext, next: sp.next}, set{kind: setRest, next: sp.next}
	if !turn(&p.acc, sp.weight) {
		chosen, other = other, chosen
	}
	if p.members(chosen) == 0 && p.members(other) > 0 {
		return other, nil
	}
	return chosen, nil
}

// turnTo reports whether the next request of a split at weight percent
// to another function goes there (see turn).
func (p *pool) turnTo(weight int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return turn(&p.facc, weight)
}

// acquire gives the request a container with room among those sp allows
// (see choose): at once when no request is queued before it and one has
// room, else once no request for the same containers is queued before it
// and one has. It fails with ErrNoFunction, ErrQueueFull, ErrQueueTimeout
// or ctx's error. A request for a function no snapshot has come for yet
// queues until one does.
func (p *pool) acquire(ctx context.Context, sp split) (acquired, error) {
	p.mu.Lock()
	if p.seen && !p.known {
		p.mu.Unlock()
		return acquired{}, ErrNoFunction
	}
	var s set
	if p.seen {
		var err error
		if s, err = p.choose(sp); err != nil {
			p.mu.Unlock()
			return acquired{}, err
		}
	}
	if p.seen && p.queue.Len() == 0 {
		if in := p.pick(s); in != nil {
			in.inFlight++
			p.mu.Unlock()
			return acquired{in: in}, nil
		}
	}
	if p.queue.Len() >= p.settings.QueueMax {
		p.mu.Unlock()
		return acquired{}, ErrQueueFull
	}
	w := &waiter{ch: make(chan *instance, 1), set: s, sp: sp, decided: p.seen}
	w.elem = p.queue.PushBack(w)
	if p.queue.Len() == 1 && p.onQueue != nil {
		p.onQueue() // the queue starts: the autoscaler should know now
	}
	cold := p.ready() == 0
	// Those queued before it may wait for other containers than it.
	p.dispatch()
	timeout := p.settings.QueueTimeout
	start := p.now()
	p.mu.Unlock()

	got := func(in *instance) acquired {
		return acquired{in: in, waited: p.now().Sub(start), queued: true, cold: cold}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case in := <-w.ch:
		if in == nil {
			return acquired{}, ErrNoFunction
		}
		return got(in), nil
	case <-timer.C:
		if in, given := p.leave(w); given {
			if in == nil {
				return acquired{}, ErrNoFunction
			}
			return got(in), nil // given a container as the time ran out
		}
		return acquired{waited: p.now().Sub(start), queued: true, cold: cold}, ErrQueueTimeout
	case <-ctx.Done():
		if in, _ := p.leave(w); in != nil {
			p.release(in, false)
		}
		return acquired{}, ctx.Err()
	}
}

// leave takes w out of the queue, or returns what it was given.
func (p *pool) leave(w *waiter) (in *instance, given bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.elem != nil {
		p.queue.Remove(w.elem)
		w.elem = nil
		return nil, false
	}
	return <-w.ch, true
}

// dispatch gives containers with room to queued requests, oldest first
// among those that may go to the same containers. Called with mu held.
func (p *pool) dispatch() {
	held := false
	for e := p.queue.Front(); e != nil; {
		w := e.Value.(*waiter)
		next := e.Next()
		if !w.decided && p.seen {
			s, err := p.choose(w.sp)
			if err != nil {
				p.queue.Remove(e)
				w.elem = nil
				w.ch <- nil // no such containers: 404
				e = next
				continue
			}
			w.set, w.decided = s, true
		}
		if in := p.pick(w.set); w.decided && in != nil {
			p.queue.Remove(e)
			w.elem = nil
			in.inFlight++
			w.ch <- in
		} else {
			held = true
		}
		e = next
	}
	if held {
		p.armWake()
	}
}

// armWake dispatches again when the first ejection ends, if one holds back
// a queued request. Called with mu held.
func (p *pool) armWake() {
	if p.wake != nil {
		return
	}
	now := p.now()
	var first time.Time
	for _, in := range p.instances {
		if !in.gone && !in.draining && now.Before(in.ejectedUntil) && (first.IsZero() || in.ejectedUntil.Before(first)) {
			first = in.ejectedUntil
		}
	}
	if first.IsZero() {
		return
	}
	p.wake = time.AfterFunc(first.Sub(now), func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.wake = nil
		p.dispatch()
	})
}

// release ends a request on in; failed ejects in for ejectFor.
func (p *pool) release(in *instance, failed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	in.inFlight--
	if failed {
		in.ejectedUntil = p.now().Add(p.ejectFor)
	}
	if in.inFlight == 0 {
		if in.idle != nil {
			close(in.idle)
			in.idle = nil
		}
		if in.gone {
			p.forget(in)
		}
	}
	p.dispatch()
}

// forget drops in from the pool. Called with mu held.
func (p *pool) forget(in *instance) {
	p.instances = slices.DeleteFunc(p.instances, func(x *instance) bool { return x == in })
}

// update applies a discovery snapshot: new containers take queued
// requests at once; containers no longer listed take no new ones and are
// forgotten once idle. Starting containers are probed (see
// containerReady) and take requests once a probe passes.
func (p *pool) update(snap Snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if snap.Settings != nil {
		p.settings = snap.Settings.withDefaults()
	}
	p.unlisted = max(snap.Starting-len(snap.Pending), 0)
	p.seen, p.known = true, snap.Known
	if !snap.Known {
		p.unknownAt = p.now()
		// Nothing to wait for: every queued request is 404.
		for p.queue.Len() > 0 {
			w := p.queue.Remove(p.queue.Front()).(*waiter)
			w.elem = nil
			w.ch <- nil
		}
	}
	p.passing = snap.Instances
	listed := map[string]bool{}
	for _, si := range snap.Instances {
		listed[si.ID] = true
		p.passed[si.ID] = true
	}
	pending := map[string]Instance{}
	for _, si := range snap.Pending {
		if !listed[si.ID] {
			pending[si.ID] = si
			listed[si.ID] = true
		}
	}
	for id := range p.passed {
		if !listed[id] {
			delete(p.passed, id) // a container listed anew starts anew
		}
	}
	for id, c := range p.pending {
		if si, ok := pending[id]; !ok || si != c.Instance {
			c.stop()
			delete(p.pending, id)
		}
	}
	for id, si := range pending {
		if _, ok := p.pending[id]; ok {
			continue
		}
		c := &candidate{Instance: si}
		p.pending[id] = c
		if p.probing.prober != nil && shouldProbe(false, p.passed[id], si.HealthPath, c.state) {
			p.startProbes(c)
		}
	}
	p.apply()
}

// apply lists the containers containerReady passes and dispatches to
// them. Called with mu held.
func (p *pool) apply() {
	ready := slices.Clone(p.passing)
	p.starting = p.unlisted
	for _, si := range p.pendingOrdered() {
		if containerReady(false, p.passed[si.ID], p.pending[si.ID].state) {
			ready = append(ready, si)
		} else {
			p.starting++
		}
	}
	p.list(ready)
	p.dispatch()
}

// pendingOrdered is the pending containers by ID, so that apply lists
// them in a stable order. Called with mu held.
func (p *pool) pendingOrdered() []Instance {
	out := make([]Instance, 0, len(p.pending))
	for _, c := range p.pending {
		out = append(out, c.Instance)
	}
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// list makes the ready containers the ones that take new requests.
// Called with mu held.
func (p *pool) list(ready []Instance) {
	listed := make(map[string]Instance, len(ready))
	for _, si := range ready {
		listed[si.ID] = si
	}
	for _, in := range slices.Clone(p.instances) {
		si, ok := listed[in.id]
		switch {
		case !ok:
			in.gone = true
			if in.inFlight == 0 {
				p.forget(in)
			}
		case si.Addr != in.addr && in.inFlight == 0:
			in.addr, in.gone, in.ejectedUntil = si.Addr, false, time.Time{}
		default:
			in.gone = false
		}
		if ok {
			in.canary = si.Canary // a promotion re-tags it
		}
		delete(listed, in.id)
	}
	// Those left are new, added in the given order.
	for _, si := range ready {
		if _, ok := listed[si.ID]; ok {
			p.instances = append(p.instances, &instance{id: si.ID, addr: si.Addr, canary: si.Canary})
			delete(listed, si.ID)
		}
	}
}

// startProbes probes c every probing.every until its probes stop (it
// passes, leaves, or the watch ends) or probing.limit passes. Called with
// mu held.
func (p *pool) startProbes(c *candidate) {
	ctx, cancel := context.WithTimeout(p.probing.ctx, p.probing.limit)
	c.cancel = cancel
	p.probing.wg.Add(1)
	go func() {
		defer p.probing.wg.Done()
		defer cancel()
		t := time.NewTicker(p.probing.every)
		defer t.Stop()
	probes:
		for {
			ok := p.probing.prober.Probe(ctx, c.Addr, c.HealthPath)
			if ctx.Err() != nil {
				break
			}
			p.probed(c, ok)
			select {
			case <-ctx.Done():
				break probes
			case <-t.C:
			}
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && p.probing.ctx.Err() == nil {
			p.expire(c)
		}
	}()
}

// expire notes that c's probes ran out without Consul passing it: it is
// not ready until Consul passes it.
func (p *pool) expire(c *candidate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending[c.ID] == c {
		c.state = probeExpired
		p.apply()
	}
}

// probed applies a probe's answer for c, if c is still pending.
func (p *pool) probed(c *candidate, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending[c.ID] != c || c.state == probeExpired {
		return
	}
	state := probeFailed
	if ok {
		state = probeOK
	}
	if state != c.state {
		c.state = state
		p.apply()
	}
}

// stop ends c's probes, if any run.
func (c *candidate) stop() {
	if c.cancel != nil {
		c.cancel()
	}
}

// stopProbes waits for every probe to end, once probing.ctx has.
func (p *pool) stopProbes() { p.probing.wg.Wait() }

// setDraining marks the container id draining (or not); false when the
// pool does not know it.
func (p *pool) setDraining(id string, draining bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, in := range p.instances {
		if in.id == id {
			in.draining = draining
			p.dispatch()
			return true
		}
	}
	return false
}

// inFlight is how many requests the container id serves (0: unknown).
func (p *pool) inFlight(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, in := range p.instances {
		if in.id == id {
			return in.inFlight
		}
	}
	return 0
}

// waitIdle waits until the container id has no request in flight (or is
// unknown: forgotten, so idle), or ctx ends; it returns how many are in
// flight then.
func (p *pool) waitIdle(ctx context.Context, id string) int {
	for {
		p.mu.Lock()
		var in *instance
		for _, x := range p.instances {
			if x.id == id {
				in = x
			}
		}
		if in == nil || in.inFlight == 0 {
			p.mu.Unlock()
			return 0
		}
		if in.idle == nil {
			in.idle = make(chan struct{})
		}
		idle, n := in.idle, in.inFlight
		p.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return n
		}
	}
}

// touch marks the pool used now.
func (p *pool) touch() {
	p.mu.Lock()
	p.used = p.now()
	p.mu.Unlock()
}

// unknownBefore reports whether the pool's function was unknown at its
// last snapshot, taken before t, and the pool holds nothing.
func (p *pool) unknownBefore(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen && !p.known && p.unknownAt.Before(t) && len(p.instances) == 0 && p.queue.Len() == 0
}

// idleSince reports whether the pool has no container, request or queue,
// and no request came since before t: Proxy may stop watching it.
func (p *pool) idleSince(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.instances) == 0 && p.queue.Len() == 0 && p.used.Before(t)
}

// load is the pool's state for the load report and the gauges.
func (p *pool) load() FunctionLoad {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	fl := FunctionLoad{Function: p.name, Queued: p.queue.Len(), Starting: p.starting, MaxInputs: p.settings.MaxInputs, Instances: []InstanceLoad{}}
	for _, in := range p.instances {
		fl.InFlight += in.inFlight
		il := InstanceLoad{ID: in.id, Addr: in.addr, InFlight: in.inFlight, Draining: in.draining || in.gone, Ejected: now.Before(in.ejectedUntil)}
		switch {
		case il.Draining:
			fl.Draining++
		case !il.Ejected:
			fl.Ready++
		}
		fl.Instances = append(fl.Instances, il)
	}
	return fl
}
