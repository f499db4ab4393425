package orchestrator

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// A caravan server admits its rollouts to Nomad a bounded number of
// containers at a time. Nomad starts every container a rollout asks for
// at once, and each deployment's healthy_deadline (2 min) runs from the
// moment its containers are placed: 100 new apps registered together on
// two clients of 2 cores had 100 processes, with their executors and
// log collectors, start at once, and a quarter of them were not running
// by their deadline. A version waiting for its turn is recorded (pending,
// with a "queued" event in its history) but nothing of it is in Nomad
// yet, so no deadline of Nomad's runs while it waits.

// DefaultMaxStarting is how many containers one caravan server's rollouts
// start in Nomad at once unless Config.MaxStarting says otherwise.
const DefaultMaxStarting = 8

// rolloutStarts is how many containers a rollout of fns starts: those of
// every function it creates or updates (Nomad replaces all of a
// function's containers at once: its max_parallel is its count), at least
// one (the job's evaluation itself).
func rolloutStarts(fns []FunctionResult) int {
	n := 0
	for _, f := range fns {
		if f.Change == Created || f.Change == Updated {
			n += f.Containers
		}
	}
	return max(n, 1)
}

// admits decides whether a rollout starting n containers goes to Nomad
// now, when admitted rollouts are starting `starting` containers and
// `ahead` rollouts queued before it: always without a limit (limit ≤ 0);
// otherwise in its turn (none ahead), and when it fits beside those
// starting or nothing is starting (a rollout larger than the limit goes
// alone). A rollout with a free slot never waits.
func admits(limit, starting, ahead, n int) bool {
	switch {
	case limit <= 0:
		return true
	case ahead > 0:
		return false
	case starting == 0:
		return true
	}
	return starting+n <= limit
}

// rolloutQueue admits rollouts by admits, first come first served.
type rolloutQueue struct {
	limit int

	mu       sync.Mutex
	starting int
	waiting  []*queuedRollout
}

// queuedRollout is a rollout waiting in a rolloutQueue; ready is closed
// when it is admitted.
type queuedRollout struct {
	n     int
	ready chan struct{}
}

// queueWait says why a rollout waits: how many containers admitted
// rollouts are starting, of how many at once, and how many rollouts wait
// before it.
type queueWait struct {
	Starting, Limit, Ahead int
}

func (w queueWait) String() string {
	return fmt.Sprintf("queued: this caravan server's rollouts are starting %d containers (%d at once) and %d rollouts wait before this one; nothing of it is in Nomad yet",
		w.Starting, w.Limit, w.Ahead)
}

// enter admits a rollout starting n containers, at once if admits says so;
// otherwise it calls queued (which must not block long) and waits for its
// turn or for ctx. It returns how long it waited and the function that
// gives the containers' place back, to call when the rollout ends.
func (q *rolloutQueue) enter(ctx context.Context, n int, queued func(queueWait)) (release func(), waited time.Duration, err error) {
	q.mu.Lock()
	if admits(q.limit, q.starting, len(q.waiting), n) {
		q.starting += n
		q.mu.Unlock()
		return q.leave(n), 0, nil
	}
	r := &queuedRollout{n: n, ready: make(chan struct{})}
	w := queueWait{Starting: q.starting, Limit: q.limit, Ahead: len(q.waiting)}
	q.waiting = append(q.waiting, r)
	q.mu.Unlock()

	began := time.Now()
	if queued != nil {
		queued(w)
	}
	select {
	case <-r.ready:
		return q.leave(n), time.Since(began), nil
	case <-ctx.Done():
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-r.ready:
		// Admitted as ctx ended: give the place back.
		q.starting -= n
	default:
		for i, x := range q.waiting {
			if x == r {
				q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
				break
			}
		}
	}
	q.admitWaiting()
	return nil, time.Since(began), ctx.Err()
}

// leave is the release of an admitted rollout of n containers.
func (q *rolloutQueue) leave(n int) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			q.starting -= n
			q.admitWaiting()
		})
	}
}

// admitWaiting admits the rollouts at the head of the queue that admits
// lets through; q.mu is held.
func (q *rolloutQueue) admitWaiting() {
	for len(q.waiting) > 0 && admits(q.limit, q.starting, 0, q.waiting[0].n) {
		r := q.waiting[0]
		q.waiting = q.waiting[1:]
		q.starting += r.n
		close(r.ready)
	}
}
