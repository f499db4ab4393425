package queue

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Credential is a worker's NATS credential as fetched: its token, and
// how long it is valid from when its fetch began (zero: it does not
// expire, an external NATS's operator-given token).
type Credential struct {
	Token    string
	ValidFor time.Duration
}

// Renewer holds a worker's current credential and fetches a fresh one
// before it expires (Run): at half its life, then again and again, more
// slowly, while the fetch fails. The connection takes its token from
// Token at each (re)connect (Config.TokenFunc), and Renewed reconnects it
// with the fresh one (Queue.Reconnect).
type Renewer struct {
	// Fetch gets a fresh credential (the agent endpoint's).
	Fetch func(ctx context.Context) (Credential, error)
	// Renewed, when set, is called after each renewal.
	Renewed func()
	// Log hears renewals and failures, never a token.
	Log hclog.Logger

	mu      sync.Mutex
	cur     Credential
	fetched time.Time
}

// NewRenewer holds c, whose fetch began at fetched, and renews it with
// fetch.
func NewRenewer(c Credential, fetched time.Time, fetch func(ctx context.Context) (Credential, error)) *Renewer {
	return &Renewer{Fetch: fetch, cur: c, fetched: fetched}
}

// Token is the current credential's token.
func (r *Renewer) Token() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur.Token
}

// Expires is when the current credential expires (zero: never).
func (r *Renewer) Expires() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur.ValidFor <= 0 {
		return time.Time{}
	}
	return r.fetched.Add(r.cur.ValidFor)
}

// Run renews the credential until ctx ends (at once when it never
// expires).
func (r *Renewer) Run(ctx context.Context) {
	log := r.Log
	if log == nil {
		log = hclog.NewNullLogger()
	}
	r.mu.Lock()
	validFor, fetched := r.cur.ValidFor, r.fetched
	r.mu.Unlock()
	failures := 0
	wait := renewDelay(validFor, 0) - time.Since(fetched)
	for validFor > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		start := time.Now()
		c, err := r.Fetch(ctx)
		if err == nil && c.Token == "" {
			err = errNoToken
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			wait = renewDelay(validFor, failures)
			// err says what the endpoint answered, never a token.
			log.Warn("renewing the NATS credential failed; trying again", "error", err, "expires_in", time.Until(fetched.Add(validFor)).Round(time.Millisecond), "retry_in", wait)
			continue
		}
		r.mu.Lock()
		r.cur, r.fetched = c, start
		r.mu.Unlock()
		validFor, fetched, failures = c.ValidFor, start, 0
		wait = renewDelay(validFor, 0)
		log.Debug("NATS credential renewed", "valid_for", validFor)
		if r.Renewed != nil {
			r.Renewed()
		}
	}
}

// errNoToken is a fetch that gave no token.
var errNoToken = errors.New("queue: the fresh credential has no token")

// renewDelay is how long to wait before fetching a fresh credential
// valid for validFor: half its life from its fetch; after failures failed
// fetches, 1 s doubling up to 30 s, and at most an eighth of its life
// (at least 100 ms), so that a short-lived credential gets several tries.
func renewDelay(validFor time.Duration, failures int) time.Duration {
	if failures <= 0 {
		return validFor / 2
	}
	d := time.Second << min(failures-1, 5)
	return max(min(d, 30*time.Second, validFor/8), 100*time.Millisecond)
}
