package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// load sends GETs to url through Traefik at a steady rate until stop is
// closed (or 10 minutes and 100,000 requests pass), and counts the
// failures: any transport error or non-200 answer.
type load struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	firstErrors  []string
	// failedAt are the times of failures, for the faults' timelines.
	failedAt []time.Time
	done     chan struct{}
}

func runLoad(ctx context.Context, url string, perSecond int, stop <-chan struct{}) *load {
	l := &load{done: make(chan struct{})}
	const workers = 8
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	jobs := make(chan struct{}, perSecond)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				l.one(ctx, url)
			}
		}()
	}
	go func() {
		defer cancel()
		defer tick.Stop()
		defer func() { close(jobs); wg.Wait(); close(l.done) }()
		for l.sent.Load() < 100_000 {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				select {
				case jobs <- struct{}{}:
				default:
					l.fail("generator: all workers busy")
					l.sent.Add(1)
				}
			}
		}
	}()
	return l
}

func (l *load) one(ctx context.Context, url string) {
	l.sent.Add(1)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	resp, err := env.https.Do(req)
	if err != nil {
		l.fail(err.Error())
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		l.fail(fmt.Sprintf("status %d", resp.StatusCode))
	}
}

func (l *load) fail(msg string) {
	l.failed.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failedAt = append(l.failedAt, time.Now())
	if len(l.firstErrors) < 5 {
		l.firstErrors = append(l.firstErrors, msg)
	}
}

// lastFailure is when the latest request failed (zero: none did).
func (l *load) lastFailure() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failedAt) == 0 {
		return time.Time{}
	}
	return l.failedAt[len(l.failedAt)-1]
}
