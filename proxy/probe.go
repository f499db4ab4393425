package proxy

import (
	"context"
	"io"
	"net/http"
	"time"
)

// Prober asks a starting container whether it is up: the proxy's own
// health probe, so that a cold start does not wait for Consul, whose
// first probe of a new check comes at a random moment within its 1 s
// interval (and one before the app listens costs a whole interval). It is
// the proxy's one seam to the containers' health endpoints: unit tests
// use a fake or httptest servers.
type Prober interface {
	// Probe reports whether the container at addr answers a GET of
	// path with a 2xx before ctx ends.
	Probe(ctx context.Context, addr, path string) bool
}

// HTTPProber is Prober over HTTP, each probe bounded by Timeout (default
// 1 s, as the containers' Consul check).
type HTTPProber struct {
	Client  *http.Client
	Timeout time.Duration
}

var _ Prober = (*HTTPProber)(nil)

// Probe is Prober.Probe: GET http://addr+path.
func (h *HTTPProber) Probe(ctx context.Context, addr, path string) bool {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "caravan-proxy-probe")
	client := h.Client
	if client == nil {
		client = probeClient
	}
	res, err := client.Do(req)
	if err != nil {
		return false
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	return res.StatusCode >= 200 && res.StatusCode < 300
}

// probeClient follows no redirects (Consul's HTTP check does, but a
// redirect is not an answer of the health path itself) and keeps no
// connection to a container it may never probe again.
var probeClient = &http.Client{
	Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// probeState is what the proxy's own probes say of a starting container.
type probeState int

const (
	// probeNone: no probe has answered yet.
	probeNone probeState = iota
	// probeOK: the last probe got a 2xx.
	probeOK
	// probeFailed: the last probe did not.
	probeFailed
	// probeExpired: the probes ran ProbeFor without Consul passing the
	// container; they stopped and only Consul decides from then on.
	probeExpired
)

// containerReady decides whether a container discovery lists takes
// requests. Consul passing it always makes it ready. Until Consul has
// passed it once, the proxy's own last probe decides (a 2xx: ready; a
// failure after one: not ready again). Once Consul has passed it, Consul
// alone decides: a container it reports critical after that is not ready,
// and is not probed again, so a flapping container takes requests only
// while Consul passes it.
func containerReady(consulPassing, consulPassedBefore bool, probe probeState) bool {
	switch {
	case consulPassing:
		return true
	case consulPassedBefore:
		return false
	default:
		return probe == probeOK
	}
}

// shouldProbe decides whether the proxy probes a container itself: only
// one Consul has never passed, whose health path it knows, whose probes
// have not run out.
func shouldProbe(consulPassing, consulPassedBefore bool, healthPath string, probe probeState) bool {
	return !consulPassing && !consulPassedBefore && healthPath != "" && probe != probeExpired
}
