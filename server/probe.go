package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"strings"

	"github.com/caravanhq/caravan/router"
)

// probeKey is the Caravan-Key of a server's own deploy probes; a route's
// probe router matches it (see router.ProbeKey).
const probeKey = router.ProbeKey

// The deploy probe's credential is bound to the one hostname it probes:
// its secret is an HMAC-SHA256 of the hostname under a key the server holds
// only in memory. /v1/auth/proxy checks it against X-Forwarded-Host, which
// Traefik's forwardAuth sets from the request's own Host (it trusts no
// client's X-Forwarded-Host unless configured to). So a probe credential
// that leaked (a function cannot see it: every route strips the headers)
// opens the route it was made for and nothing else: no other hostname, no
// other workspace.

// probeSecret is the probe's secret for host under key.
func probeSecret(key, host string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(canonicalHost(host)))
	return hex.EncodeToString(m.Sum(nil))
}

// ProbeHeader is the header of a deploy probe of host, for the server whose
// probe key is key.
func ProbeHeader(key, host string) http.Header {
	return http.Header{router.HeaderKey: {probeKey}, router.HeaderSecret: {probeSecret(key, host)}}
}

// validProbe reports whether r carries the probe credential of the host it
// was sent to (X-Forwarded-Host).
func validProbe(key string, r *http.Request) bool {
	host := r.Header.Get("X-Forwarded-Host")
	if key == "" || host == "" || r.Header.Get(router.HeaderKey) != probeKey {
		return false
	}
	return hmac.Equal([]byte(r.Header.Get(router.HeaderSecret)), []byte(probeSecret(key, host)))
}

// canonicalHost is host as a route names it: lower case, without a port
// or a trailing dot.
func canonicalHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}
