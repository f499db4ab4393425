// Package bodylimit is a Traefik middleware plugin (run by Traefik's Yaegi
// interpreter from plugins-local/) that caps request bodies: a declared
// Content-Length over the limit is answered 413 at once, before anything
// reaches the function; a chunked body is cut off where it passes the limit.
// Unlike Traefik's buffering middleware it buffers nothing, so uploads and
// streamed responses pass through as they arrive.
package bodylimit

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
)

// Config is the plugin's configuration.
type Config struct {
	// MaxBytes is the largest request body accepted, in bytes.
	MaxBytes string `json:"maxBytes,omitempty"`
}

// CreateConfig returns the default configuration: 4 GiB.
func CreateConfig() *Config {
	return &Config{MaxBytes: "4294967296"}
}

type limiter struct {
	next http.Handler
	max  int64
	name string
}

// New builds the middleware.
func New(_ context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	max, err := strconv.ParseInt(config.MaxBytes, 10, 64)
	if err != nil || max < 1 {
		return nil, fmt.Errorf("bodylimit %s: maxBytes %q is not a positive number of bytes", name, config.MaxBytes)
	}
	return &limiter{next: next, max: max, name: name}, nil
}

func (l *limiter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > l.max {
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		fmt.Fprintf(w, "request body of %d bytes is over this endpoint's limit of %d bytes\n", r.ContentLength, l.max)
		return
	}
	if r.ContentLength < 0 && r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, l.max)
	}
	l.next.ServeHTTP(w, r)
}
