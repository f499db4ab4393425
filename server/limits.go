package server

import (
	"fmt"
	"net/http"
	"time"

	"github.com/caravanhq/caravan/api"
)

// Limits bound what clients may hold of the server: how long they may
// take to send a request, to read an answer and to keep an idle
// connection, and how many requests are served at once. A request past
// the concurrency bound is answered 503 unavailable at once, not queued.
//
// The timeouts are for requests that answer in seconds. Those that
// legitimately take minutes extend their own deadlines: a deploy, a
// rollover, rollback, promote, abort, stop, run or call holds its
// connection for its timeout plus LongMargin (a rollout may first wait
// for another to release the app's lock), and a log stream pushes its
// write deadline WriteTimeout past every write, so it lasts as long as
// the client reads it.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the
	// end of its answer.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a kept-alive connection waits for its
	// next request.
	IdleTimeout time.Duration
	// MaxConcurrent is how many requests are served at once (/v1/health
	// is not counted).
	MaxConcurrent int
	// LongMargin is added to a long request's own timeout.
	LongMargin time.Duration
}

// DefaultLimits are what a zero Limits field takes.
var DefaultLimits = Limits{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       30 * time.Second,
	WriteTimeout:      60 * time.Second,
	IdleTimeout:       2 * time.Minute,
	MaxConcurrent:     256,
	LongMargin:        5 * time.Minute,
}

// withDefaults fills every zero field from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	pick := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	pick(&l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	pick(&l.ReadTimeout, d.ReadTimeout)
	pick(&l.WriteTimeout, d.WriteTimeout)
	pick(&l.IdleTimeout, d.IdleTimeout)
	pick(&l.LongMargin, d.LongMargin)
	if l.MaxConcurrent <= 0 {
		l.MaxConcurrent = d.MaxConcurrent
	}
	return l
}

// Apply sets l's timeouts on s; the handler NewHandler returns for the same
// Limits enforces the rest.
func (l Limits) Apply(s *http.Server) {
	l = l.withDefaults()
	s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.IdleTimeout = l.ReadHeaderTimeout, l.ReadTimeout, l.WriteTimeout, l.IdleTimeout
}

// bounded serves at most n requests of next at once, and answers the
// others 503 unavailable with Retry-After.
func (h *handler) bounded(n int, next http.Handler) http.Handler {
	slots := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/health" {
			next.ServeHTTP(w, r)
			return
		}
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			next.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			h.fail(w, api.Errorf(api.CodeUnavailable, "the server is serving %d requests, as many as it takes at once: retry shortly", n))
		}
	})
}

// holdFor lets a request that legitimately takes long hold its connection
// for d (its own timeout, or def without one) plus the margin, past the
// server's read and write timeouts. The read deadline matters too: when
// it passes, net/http cancels the request's context.
func (h *handler) holdFor(w http.ResponseWriter, d, def time.Duration) {
	if d <= 0 {
		d = def
	}
	deadline := time.Now().Add(d + h.limits.LongMargin)
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(deadline); err != nil {
		h.log.Debug("cannot extend a read deadline", "error", err)
	}
	if err := rc.SetWriteDeadline(deadline); err != nil {
		h.log.Debug("cannot extend a write deadline", "error", err)
	}
}

// streamWriter is a log stream's writer: it sends every write to the
// client at once, each with WriteTimeout to reach it, so the stream lasts
// as long as the client reads it and no longer.
type streamWriter struct {
	rc      *http.ResponseController
	w       http.ResponseWriter
	timeout time.Duration
	wrote   bool
}

func (s *streamWriter) Write(p []byte) (int, error) {
	s.wrote = true
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil {
		return 0, fmt.Errorf("extending the stream's deadline: %w", err)
	}
	return s.w.Write(p)
}

func (s *streamWriter) Flush() { _ = s.rc.Flush() }
