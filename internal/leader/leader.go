// Package leader runs a caravan server's background work (the
// autoscaler, the canary watcher) on one server of the cluster at a time:
// the work runs while this server holds a lock every server contends for
// (a Consul lock, in production), stops as soon as the hold is lost, and
// another server takes the lock and starts its own. The lock is reached
// through Lock, which *consul.Lock satisfies, so the tests drive Run with
// a fake.
package leader

import (
	"context"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
)

// Lock is one attempt to hold a cluster-wide lock (consul.Lock).
type Lock interface {
	// Lock blocks until the lock is held, stop is closed (nil, nil) or it
	// fails. Held, it returns a channel closed when the hold is lost (the
	// session expired or was invalidated, the key changed hands).
	Lock(stop <-chan struct{}) (<-chan struct{}, error)
	// Unlock gives up a held lock.
	Unlock() error
}

var _ Lock = (*consul.Lock)(nil)

// Retry is how long Run waits after a failed attempt to take the lock.
const Retry = time.Second

// Run runs work while this server holds the lock newLock makes, until ctx
// ends. It takes the lock whenever it is free, runs work with a context
// that ends when the hold is lost (or ctx ends), and once work returns
// gives the lock up and contends again. Every server's Run contends for
// the same key, so work runs on at most one of them at a time, and on
// another within the lock's session TTL when the holder stops. work must
// return soon after its context ends: the next holder's work may start
// once the session is gone, whatever this one still does.
func Run(ctx context.Context, newLock func() (Lock, error), work func(context.Context), log hclog.Logger) {
	for ctx.Err() == nil {
		lock, err := newLock()
		if err == nil {
			var lost <-chan struct{}
			if lost, err = lock.Lock(ctx.Done()); err == nil && lost != nil {
				log.Info("active: holding the lock")
				wctx, cancel := context.WithCancel(ctx)
				go func() {
					select {
					case <-lost:
					case <-wctx.Done():
					}
					cancel()
				}()
				work(wctx)
				cancel()
				_ = lock.Unlock()
				if ctx.Err() == nil {
					log.Warn("lost the lock; waiting to take it again")
				}
				continue
			}
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("taking the lock", "error", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(Retry):
		}
	}
}

// LockDelay is how long after a dead holder's session expires Consul
// keeps its lock from the next holder. Consul's default, 15 s, guards
// holders that cannot tell they lost a lock; Run's work ends as soon as
// the lock's watch fails or sees the key change hands, so a second is
// enough, and the background work moves to another server 11-21 s after
// its holder dies (a 10 s session) instead of 25-35 s.
const LockDelay = time.Second

// ConsulLock makes the Lock of key in Consul, with a session of ttl named
// name, for Run.
func ConsulLock(cc *consul.Client, key, name, ttl string) func() (Lock, error) {
	return func() (Lock, error) {
		l, err := cc.LockOpts(&consul.LockOptions{Key: key, SessionName: name, SessionTTL: ttl, LockDelay: LockDelay, LockWaitTime: 15 * time.Second})
		if err != nil {
			return nil, err
		}
		return l, nil
	}
}
