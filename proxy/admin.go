package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Paths of the admin side (AdminHandler). It is served on an address of
// its own, never the data plane's: a function's callers must not drain
// its containers.
const (
	// LoadPath answers GET with a Report (JSON); with ?index=N&wait=D
	// (D at most 5 minutes, default 1 minute) it answers once the
	// report's Index is past N, or after D.
	LoadPath = "/v1/load"
	// DrainPath: POST ?function=F&instance=ID[&wait=30s] marks the
	// container draining and waits (at most wait, default 30 s, at most
	// 10 minutes) until it serves no request here, answering a
	// DrainResult; DELETE with the same query gives it requests again.
	// An unknown function or container is 404.
	DrainPath = "/v1/drain"
	// MetricsPath serves the Prometheus metrics.
	MetricsPath = "/metrics"
	// HealthPath answers 200 while the proxy runs, for Traefik's health
	// check of the proxies.
	HealthPath = "/healthz"
)

// AdminHandler serves the load report, drains, metrics and health.
func (p *Proxy) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+LoadPath, p.serveLoad)
	mux.HandleFunc("POST "+DrainPath, p.serveDrain)
	mux.HandleFunc("DELETE "+DrainPath, func(w http.ResponseWriter, r *http.Request) {
		fn, id := r.URL.Query().Get("function"), r.URL.Query().Get("instance")
		if err := p.Undrain(fn, id); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	var gatherer prometheus.Gatherer = prometheus.DefaultGatherer
	if p.registry != nil {
		gatherer = p.registry
	}
	mux.Handle("GET "+MetricsPath, promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET "+HealthPath, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

func (p *Proxy) serveLoad(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !q.Has("index") {
		writeJSON(w, http.StatusOK, p.Load())
		return
	}
	index, err := strconv.ParseUint(q.Get("index"), 10, 64)
	if err != nil {
		http.Error(w, "index is a whole number", http.StatusBadRequest)
		return
	}
	wait := time.Minute
	if s := q.Get("wait"); s != "" {
		if wait, err = time.ParseDuration(s); err != nil || wait < 0 || wait > 5*time.Minute {
			http.Error(w, "wait is a duration from 0s to 5m", http.StatusBadRequest)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	writeJSON(w, http.StatusOK, p.WaitLoad(ctx, index))
}

func (p *Proxy) serveDrain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fn, id := q.Get("function"), q.Get("instance")
	wait := 30 * time.Second
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > 10*time.Minute {
			http.Error(w, "wait is a duration from 0s to 10m", http.StatusBadRequest)
			return
		}
		wait = d
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	n, err := p.Drain(ctx, fn, id)
	if errors.Is(err, ErrUnknown) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, DrainResult{Function: fn, Instance: id, InFlight: n, Drained: n == 0})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
