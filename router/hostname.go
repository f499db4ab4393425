// Package router owns the routing stage: from a validated app spec it renders,
// without I/O, the hostnames of web functions and the Traefik dynamic
// configuration that serves them. The configuration reaches Traefik as tags on
// the functions' Consul services (see Tags), which Traefik's consulCatalog
// provider watches with blocking queries.
package router

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// MaxLabel is the longest DNS label (RFC 1035).
const MaxLabel = 63

// hashLen is the length of the hex suffix given to truncated labels.
const hashLen = 8

// Normalize lower-cases s and maps every character outside [a-z0-9-] to a
// hyphen, trimming hyphens at either end.
func Normalize(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	return strings.Trim(string(b), "-")
}

// HostLabel is the first DNS label of a function's hostname:
//
//	<workspace>[-<environment>]--<name>
//
// where name is `<app>-<function>` or the function's web label. A result
// longer than 63 characters is cut and given a stable 8-hex-digit suffix
// computed from the whole name, so two long names never collide.
func HostLabel(workspace, environment, name string) string {
	ws := Normalize(workspace)
	if env := Normalize(environment); env != "" {
		ws += "-" + env
	}
	full := ws + "--" + Normalize(name)
	if len(full) <= MaxLabel {
		return full
	}
	sum := sha256.Sum256([]byte(full))
	cut := strings.TrimRight(full[:MaxLabel-hashLen-1], "-")
	return cut + "-" + hex.EncodeToString(sum[:])[:hashLen]
}
