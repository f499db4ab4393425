package leader

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// fakeKey is one lock key every server contends for, as Consul's: one
// holder at a time. An invalidated hold (revoke: the session expired)
// frees the key only at the holder's Unlock, as Consul's lock-delay
// keeps it from the others for 15 s, longer than any work takes to stop.
type fakeKey struct {
	mu      sync.Mutex
	holder  *fakeLock
	changed chan struct{} // closed and replaced whenever the holder changes
}

func newFakeKey() *fakeKey { return &fakeKey{changed: make(chan struct{})} }

type fakeLock struct {
	key    *fakeKey
	server string
	lost   chan struct{}
}

func (k *fakeKey) lock(server string) func() (Lock, error) {
	return func() (Lock, error) { return &fakeLock{key: k, server: server}, nil }
}

func (l *fakeLock) Lock(stop <-chan struct{}) (<-chan struct{}, error) {
	k := l.key
	for {
		k.mu.Lock()
		if k.holder == nil {
			k.holder, l.lost = l, make(chan struct{})
			close(k.changed)
			k.changed = make(chan struct{})
			k.mu.Unlock()
			return l.lost, nil
		}
		changed := k.changed
		k.mu.Unlock()
		select {
		case <-stop:
			return nil, nil
		case <-changed:
		}
	}
}

func (l *fakeLock) Unlock() error {
	k := l.key
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.holder != l {
		return errors.New("not held")
	}
	k.holder = nil
	close(k.changed)
	k.changed = make(chan struct{})
	return nil
}

// revoke ends the current hold, as Consul does when its session expires.
func (k *fakeKey) revoke() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.holder != nil {
		select {
		case <-k.holder.lost:
		default:
			close(k.holder.lost)
		}
	}
}

// tracker is the background work of several servers: it records who runs
// it and the most that ever ran at once.
type tracker struct {
	mu     sync.Mutex
	active map[string]bool
	most   int
	starts map[string]int
}

func newTracker() *tracker { return &tracker{active: map[string]bool{}, starts: map[string]int{}} }

func (tr *tracker) work(server string) func(context.Context) {
	return func(ctx context.Context) {
		tr.mu.Lock()
		tr.active[server] = true
		tr.starts[server]++
		tr.most = max(tr.most, len(tr.active))
		tr.mu.Unlock()
		<-ctx.Done()
		tr.mu.Lock()
		delete(tr.active, server)
		tr.mu.Unlock()
	}
}

// running is the one server running the work, or an error.
func (tr *tracker) running() (string, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.active) != 1 {
		return "", fmt.Errorf("%d servers run the work: %v", len(tr.active), tr.active)
	}
	for s := range tr.active {
		return s, nil
	}
	return "", nil
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunOneServerAtATime: three servers run the same background work
// under one key. It runs on exactly one of them; when that server stops,
// another takes over; when a hold is lost (its session expired) the work
// stops there and runs again on one server. Never on two at once.
func TestRunOneServerAtATime(t *testing.T) {
	key, tr := newFakeKey(), newTracker()
	stops := map[string]context.CancelFunc{}
	done := map[string]chan struct{}{}
	for _, s := range []string{"a", "b", "c"} {
		ctx, cancel := context.WithCancel(context.Background())
		d := make(chan struct{})
		stops[s], done[s] = cancel, d
		go func() {
			defer close(d)
			Run(ctx, key.lock(s), tr.work(s), hclog.NewNullLogger())
		}()
	}
	t.Cleanup(func() {
		for s, stop := range stops {
			stop()
			<-done[s]
		}
	})

	var first string
	eventually(t, "one server runs the work", func() (err error) { first, err = tr.running(); return err })

	// The holder stops (its server shuts down): Run returns, and another
	// server runs the work.
	stops[first]()
	<-done[first]
	var second string
	eventually(t, "another server takes over", func() error {
		s, err := tr.running()
		if err == nil && s == first {
			err = fmt.Errorf("%s, stopped, still runs it", s)
		}
		second = s
		return err
	})

	// The hold is lost: the work stops on that server, and one server
	// (either left) takes the key and runs it again.
	key.revoke()
	eventually(t, "the work runs again after the lost hold", func() error {
		if _, err := tr.running(); err != nil {
			return err
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if n := tr.starts["a"] + tr.starts["b"] + tr.starts["c"]; n != 3 {
			return fmt.Errorf("%d starts, want 3", n)
		}
		return nil
	})
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.most != 1 {
		t.Errorf("the work ran on %d servers at once, want 1 (starts %v)", tr.most, tr.starts)
	}
	if tr.starts[first] != 1 {
		t.Errorf("%s, stopped, started the work %d times, want 1", first, tr.starts[first])
	}
	t.Logf("first %s, then %s, then after the lost hold %v", first, second, tr.active)
}

// TestRunRetriesAFailedLock: a lock that cannot be made (Consul
// unreachable) is tried again, and the work runs once it can.
func TestRunRetriesAFailedLock(t *testing.T) {
	key, tr := newFakeKey(), newTracker()
	var mu sync.Mutex
	fails := 1
	newLock := func() (Lock, error) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return nil, errors.New("consul unreachable")
		}
		return key.lock("a")()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Run(ctx, newLock, tr.work("a"), hclog.NewNullLogger()) }()
	eventually(t, "the work runs after the failed attempt", func() error { _, err := tr.running(); return err })
	cancel()
	<-done
	key.mu.Lock()
	defer key.mu.Unlock()
	if key.holder != nil {
		t.Error("the lock is still held after Run returned")
	}
}
