package e2ekit

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Load sends GETs to a URL through Traefik at a steady rate until its
// stop channel is closed (or 10 minutes or its most requests pass), and
// counts the failures: any transport error or non-200 answer.
type Load struct {
	// Sent counts the requests begun, Finished those ended (answered or
	// failed), Failed those that failed: Sent - Finished are in flight.
	Sent, Finished, Failed atomic.Int64
	// Done is closed once every request has finished.
	Done chan struct{}

	mu          sync.Mutex
	firstErrors []string
	failedAt    []time.Time
}

// RunLoad starts a Load of perSecond GETs of url with c, by 8 workers; a
// tick that finds them all busy counts as a failure, not queued.
func RunLoad(ctx context.Context, c *http.Client, url string, perSecond int, most int64, stop <-chan struct{}) *Load {
	l := &Load{Done: make(chan struct{})}
	const workers = 8
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	work := make(chan struct{}, perSecond)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				l.one(ctx, c, url)
			}
		}()
	}
	go func() {
		defer cancel()
		defer tick.Stop()
		defer func() { close(work); wg.Wait(); close(l.Done) }()
		for l.Sent.Load() < most {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				select {
				case work <- struct{}{}:
				default: // workers saturated: count it, do not queue
					l.Sent.Add(1)
					l.fail("generator: all workers busy")
					l.Finished.Add(1)
				}
			}
		}
	}()
	return l
}

func (l *Load) one(ctx context.Context, c *http.Client, url string) {
	l.Sent.Add(1)
	defer l.Finished.Add(1)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
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

func (l *Load) fail(msg string) {
	l.Failed.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failedAt = append(l.failedAt, time.Now())
	if len(l.firstErrors) < 5 {
		l.firstErrors = append(l.firstErrors, msg)
	}
}

// FirstErrors are the first five failures' messages.
func (l *Load) FirstErrors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.firstErrors...)
}

// LastFailure is when the latest request failed (zero: none did).
func (l *Load) LastFailure() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failedAt) == 0 {
		return time.Time{}
	}
	return l.failedAt[len(l.failedAt)-1]
}

// Around brackets f (a fault, such as a kill) and returns how many of l's
// requests were in flight at some moment while it ran: those begun by
// its end less those ended before its start. A request outside that
// count either ended before f began or began after f returned.
func (l *Load) Around(f func() error) (inFlight int64, err error) {
	endedBefore := l.Finished.Load()
	err = f()
	return l.Sent.Load() - endedBefore, err
}
