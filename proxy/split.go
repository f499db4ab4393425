package proxy

import (
	"strconv"
	"strings"
)

// HeaderSplit says, on the way from Traefik to the proxy, which of a
// function's containers a request may go to while a canary or blue-green
// version runs beside the live one (router.Split renders it; router's
// HeaderSplit is this). Every proxied route sets it, removing any value a
// client sent; the function never sees it. Its values:
//
//	(absent)                 the live version: containers without CanaryTag
//	canary                   the canaries alone (the preview hostname)
//	<weight>;<addr>,<addr>…  weight percent of requests to the containers
//	                         at those addresses (host:port), the rest to
//	                         the live ones that are not among them
//	<weight>;function=<name> weight percent of requests to another
//	                         function, <name> (a canary version deployed
//	                         while the function was at zero runs as a
//	                         function of its own, scaled from zero on its
//	                         own traffic), the rest to the live containers
//
// The split names the new containers by address, not by CanaryTag: Nomad
// re-tags them when it promotes them, and from then until the old ones
// have left Consul, a blue-green switch must still send nothing to the
// old set.
const HeaderSplit = "Caravan-Split"

// CanaryTag marks the Consul registrations of a function's canary
// containers (jobs.CanaryTag is this): they take no request of the live
// version's, only those a split or the preview hostname sends them.
const CanaryTag = "caravan-canary"

// SplitCanary is HeaderSplit's value for the preview hostname.
const SplitCanary = "canary"

// split is a parsed HeaderSplit.
type split struct {
	// canary: the canaries alone.
	canary bool
	// next, when set, are the new containers' addresses, which get
	// weight percent of the requests.
	next   map[string]bool
	weight int
	// function, when set, is the function that gets weight percent of
	// the requests (next is then nil).
	function string
}

// splitFunctionPrefix begins the list of a split to another function.
const splitFunctionPrefix = "function="

// SplitFunctionHeader renders HeaderSplit's value for weight percent to
// function, another function's containers.
func SplitFunctionHeader(weight int, function string) string {
	return strconv.Itoa(weight) + ";" + splitFunctionPrefix + function
}

// SplitHeader renders HeaderSplit's value for weight percent to the
// containers at addrs (host:port).
func SplitHeader(weight int, addrs []string) string {
	return strconv.Itoa(weight) + ";" + strings.Join(addrs, ",")
}

// parseSplit reads a HeaderSplit value; one that does not parse is the
// live version's (no split), as is the empty one.
func parseSplit(v string) split {
	v = strings.TrimSpace(v)
	if v == "" {
		return split{}
	}
	if v == SplitCanary {
		return split{canary: true}
	}
	w, list, ok := strings.Cut(v, ";")
	weight, err := strconv.Atoi(w)
	if !ok || err != nil || weight < 0 || weight > 100 {
		return split{}
	}
	if fn, ok := strings.CutPrefix(strings.TrimSpace(list), splitFunctionPrefix); ok {
		if !nameRE.MatchString(fn) {
			return split{}
		}
		return split{function: fn, weight: weight}
	}
	next := map[string]bool{}
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			next[a] = true
		}
	}
	if len(next) == 0 {
		return split{}
	}
	return split{next: next, weight: weight}
}

// set is which containers of a function one request may go to.
type set struct {
	kind setKind
	next map[string]bool // setNext and setRest
}

type setKind int

const (
	setLive   setKind = iota // no CanaryTag
	setCanary                // CanaryTag
	setNext                  // at one of next's addresses
	setRest                  // neither canary nor at one of next's addresses
)

// has reports whether the container at addr (a canary or not) is in s.
func (s set) has(addr string, canary bool) bool {
	switch s.kind {
	case setCanary:
		return canary
	case setNext:
		return s.next[addr]
	case setRest:
		return !canary && !s.next[addr]
	}
	return !canary
}

// turn reports whether the next request of a split at weight percent goes
// to the new containers, given acc, the split's running remainder (which
// it advances): exactly weight of every 100 consecutive requests do, spread
// evenly (10 %: every tenth), so a share is right over a few requests, not
// only on average.
func turn(acc *int, weight int) bool {
	*acc += weight
	if *acc >= 100 {
		*acc -= 100
		return true
	}
	return false
}
