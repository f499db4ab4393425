package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caravanhq/caravan/router"
)

// probeKey is the Caravan-Key of a server's own deploy probes; a route's
// probe router matches it (see router.ProbeKey).
const probeKey = router.ProbeKey

// The deploy probe's credential is bound to the one hostname it probes,
// for a few minutes: its secret is the time it was made (Unix seconds), a
// dot, and an HMAC-SHA256 of the hostname and that time under the
// cluster's probe key (sharedProbeKey). /v1/auth/proxy checks it against
// X-Forwarded-Host, which Traefik's forwardAuth sets from the request's own
// Host (it trusts no client's X-Forwarded-Host unless configured to). So a
// probe credential that leaked (a function cannot see it: every route
// strips the headers) opens the route it was made for and nothing else, no
// other hostname, no other workspace, and only until probeLifetime has
// passed: the key is every server's and lasts, a credential does not.

// probeLifetime is how long a probe credential passes after it was made,
// and how far ahead of a server's clock it may be (servers' clocks differ
// a little). A probe makes a new one for every request.
const probeLifetime = 5 * time.Minute

// probeSecret is the probe's secret for host under key, made at unix.
func probeSecret(key, host string, unix int64) string {
	m := hmac.New(sha256.New, []byte(key))
	// No hostname holds a newline: the message reads one way only.
	fmt.Fprintf(m, "%s\n%d", canonicalHost(host), unix)
	return strconv.FormatInt(unix, 10) + "." + hex.EncodeToString(m.Sum(nil))
}

// ProbeHeader is the header of a deploy probe of host, made now, for the
// cluster whose probe key is key.
func ProbeHeader(key, host string) http.Header { return probeHeaderAt(key, host, time.Now()) }

func probeHeaderAt(key, host string, at time.Time) http.Header {
	return http.Header{router.HeaderKey: {probeKey}, router.HeaderSecret: {probeSecret(key, host, at.Unix())}}
}

// validProbe reports whether r carries, at now, a probe credential of the
// host it was sent to (X-Forwarded-Host).
func validProbe(key string, r *http.Request, now time.Time) bool {
	host := r.Header.Get("X-Forwarded-Host")
	if key == "" || host == "" || r.Header.Get(router.HeaderKey) != probeKey {
		return false
	}
	secret := r.Header.Get(router.HeaderSecret)
	at, _, ok := strings.Cut(secret, ".")
	unix, err := strconv.ParseInt(at, 10, 64)
	if !ok || err != nil {
		return false
	}
	if d := now.Sub(time.Unix(unix, 0)); d > probeLifetime || d < -probeLifetime {
		return false
	}
	return hmac.Equal([]byte(secret), []byte(probeSecret(key, host, unix)))
}

// canonicalHost is host as a route names it: lower case, without a port
// or a trailing dot.
func canonicalHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}
