// Package api is caravan's wire: the JSON types of caravan server's HTTP
// API, its error codes, and a Client. It owns no stage of spec → validate →
// render → apply; it is how a program reaches the apply stage over HTTP.
//
// It imports the standard library alone (a test checks it), so a Go program
// that calls caravan links net/http and encoding/json, not the
// orchestrator, Nomad, Consul, HCL or Traefik: the reason Nomad keeps its
// own api module. The orchestrator declares its results as aliases of these
// types, so what it returns is what the server encodes.
//
// A failed request answers {"error": APIError}; APIError.Kind is an
// ErrorCode, and one table (see Codes and ErrorCode.Status) gives each code
// its HTTP status, for the server answering and, read backwards, for the
// client typing a bare status.
package api
