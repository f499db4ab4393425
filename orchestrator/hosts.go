package orchestrator

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/hcl/v2"
)

// This file holds the rules of hostnames and their claims as pure
// functions: which custom domains an app may ask for, which claims stand in
// each other's way, which domains a workspace has proved it controls. The
// Store reads and writes claims; these decide.

// HostClaim is a hostname (or a wildcard, "*.example.com") and the app that
// holds it.
type HostClaim struct {
	Host  string
	Owner HostOwner
}

// ownerOf is the identity an app's claims belong to: its workspace,
// environment, name and whether it is a serve copy; the job ID is kept for
// the message, not for the comparison.
func ownerOf(rec *AppRecord) HostOwner {
	return HostOwner{JobID: rec.JobID, Workspace: rec.Workspace, Environment: rec.Environment, App: rec.App, Serve: rec.Serve}
}

// sameApp reports whether two owners are one app.
func sameApp(a, b HostOwner) bool {
	return a.Workspace == b.Workspace && a.Environment == b.Environment && a.App == b.App && a.Serve == b.Serve
}

// wildcardBase is the domain a wildcard covers the subtree of
// ("*.example.com": "example.com"), and whether host is a wildcard.
func wildcardBase(host string) (string, bool) {
	return strings.CutPrefix(host, "*.")
}

// under reports whether host is strictly below domain.
func under(host, domain string) bool {
	return strings.HasSuffix(host, "."+domain)
}

// overlaps reports whether claims on a and b stand in each other's way: the
// same name, or one a wildcard whose subtree holds the other (a wildcard
// "*.example.com" claims every name under example.com, at any depth, and
// nested wildcards; not example.com itself).
func overlaps(a, b string) bool {
	if a == b {
		return true
	}
	if base, ok := wildcardBase(a); ok && under(b, base) {
		return true
	}
	if base, ok := wildcardBase(b); ok && under(a, base) {
		return true
	}
	return false
}

// claimConflict decides whether owner may claim host among the claims
// that overlap it: the same name held by another app, or an overlapping
// wildcard (or a name under a wildcard) held by another workspace, is a
// *HostTakenError naming the claim in the way. Within a workspace an app
// may serve a name under another app's wildcard.
func claimConflict(host string, owner HostOwner, existing []HostClaim) *HostTakenError {
	for _, c := range existing {
		switch {
		case !overlaps(host, c.Host), sameApp(c.Owner, owner):
			continue
		case c.Host == host:
			return &HostTakenError{Host: host, Owner: c.Owner}
		case c.Owner.Workspace != owner.Workspace:
			return &HostTakenError{Host: host, Conflict: c.Host, Owner: c.Owner}
		}
	}
	return nil
}

// visibleTo is err as caller may see it: a *HostTakenError names the app
// and workspace in the way only to that workspace's tokens and to an
// operator's ("*"); another workspace learns that the name is taken, not
// by whom.
func visibleTo(err error, caller Caller) error {
	taken, ok := err.(*HostTakenError)
	if !ok || caller.Workspace == "*" || caller.Workspace == taken.Owner.Workspace {
		return err
	}
	return &HostTakenError{Host: taken.Host}
}

// customDomains lists the custom domains of every web function of app,
// lower-cased without a trailing dot, as the router renders them.
func customDomains(app *spec.App) []string {
	var out []string
	for _, fn := range app.Functions {
		if fn.Web == nil {
			continue
		}
		for _, d := range fn.Web.CustomDomains {
			out = append(out, normalizeDomain(d))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func normalizeDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
}

// reservedDomain says why custom domain d may not be served by any app of
// a platform whose generated hostnames live under platform ("" when it
// may): it is the platform domain or under it, where caravan generates
// every app's hostnames (canary previews included), or a wildcard whose
// subtree holds the platform domain.
func reservedDomain(d, platform string) string {
	d, platform = normalizeDomain(d), normalizeDomain(platform)
	base, wildcard := wildcardBase(d)
	switch {
	case base == platform || under(base, platform):
		return fmt.Sprintf("%q is under %s, where caravan names every app's hostnames", d, platform)
	case wildcard && under(platform, base):
		return fmt.Sprintf("%q covers %s, where caravan names every app's hostnames", d, platform)
	}
	return ""
}

// checkCustomDomains refuses, with the source line, every custom domain of
// app that reservedDomain refuses.
func checkCustomDomains(app *spec.App, platform string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, fn := range app.Functions {
		if fn.Web == nil {
			continue
		}
		for _, d := range fn.Web.CustomDomains {
			if why := reservedDomain(d, platform); why != "" {
				rng := fn.Web.CustomDomainsRange
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Reserved custom domain",
					Detail: why + ". Use a domain of your own; the function's generated hostname already serves it.", Subject: &rng})
			}
		}
	}
	return diags
}

// renderedHosts lists every hostname rendered serves, canary previews
// included, sorted.
func renderedHosts(rendered *jobs.Rendered) []string {
	var hosts []string
	for _, r := range rendered.Routes {
		hosts = append(hosts, r.Host)
		hosts = append(hosts, r.CustomDomains...)
		if r.Preview != nil {
			hosts = append(hosts, r.Preview.Host)
		}
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// ChallengePrefix is the label under a custom domain (for a wildcard,
// under its base domain) whose TXT record proves a workspace controls it.
const ChallengePrefix = "_caravan-challenge."

// challengeRecord is the TXT record that proves control of custom domain
// d: _caravan-challenge.<d>, or of the base domain for a wildcard.
func challengeRecord(d string) string {
	base, _ := wildcardBase(normalizeDomain(d))
	return ChallengePrefix + base
}

// bindingName is the name a binding of custom domain d is stored under:
// d, or the base domain of a wildcard.
func bindingName(d string) string {
	base, _ := wildcardBase(normalizeDomain(d))
	return base
}

// challengeValue is the value the TXT record of workspace's domains
// carries: an HMAC of the workspace under the server's secret, so every
// caravan server gives a workspace the same value and no workspace can
// work out another's.
func challengeValue(secret []byte, workspace string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("caravan domain challenge\x00" + workspace))
	return "caravan-verify=" + hex.EncodeToString(m.Sum(nil))[:40]
}

// bindingFor is the binding that decides who may serve custom domain d:
// the one of d's binding name or, failing that, of its nearest bound
// parent (nil: none). Proving control of example.com binds every name
// under it; proving a name below binds that name, whoever holds the
// parent.
func bindingFor(bindings []DomainBinding, d string) *DomainBinding {
	name := bindingName(d)
	var best *DomainBinding
	for i, b := range bindings {
		if (b.Domain == name || under(name, b.Domain)) && (best == nil || len(b.Domain) > len(best.Domain)) {
			best = &bindings[i]
		}
	}
	return best
}

// unverifiedDomains lists those of domains (custom domains an app is about
// to claim) that workspace has not proved it controls, sorted.
func unverifiedDomains(domains []string, workspace string, bindings []DomainBinding) []string {
	var out []string
	for _, d := range domains {
		if b := bindingFor(bindings, d); b == nil || b.Workspace != workspace {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// provesControl reports whether one of a TXT record's values is the
// workspace's challenge value.
func provesControl(txt []string, want string) bool {
	for _, v := range txt {
		if strings.TrimSpace(v) == want {
			return true
		}
	}
	return false
}

// hostKey is the key of a claim on host under the hosts folder: its labels
// reversed, so that a folder holds a domain's subtree and one prefix
// lists it ("a.example.com": "com/example/a", "*.example.com":
// "com/example/*").
func hostKey(host string) string {
	labels := strings.Split(host, ".")
	slices.Reverse(labels)
	return strings.Join(labels, "/")
}

// keyHost is hostKey's inverse.
func keyHost(key string) string {
	labels := strings.Split(key, "/")
	slices.Reverse(labels)
	return strings.Join(labels, ".")
}

// overlapKeys are the keys a claim on host must read to find every claim
// that overlaps it: its own, the wildcard at each parent, and for a
// wildcard, the folder of its base domain (subtree, ends in "/"; empty
// for a plain name).
func overlapKeys(host string) (keys []string, subtree string) {
	keys = append(keys, hostKey(host))
	name, wildcard := wildcardBase(host)
	if !wildcard {
		_, name, _ = strings.Cut(host, ".")
	}
	for name != "" {
		keys = append(keys, hostKey("*."+name))
		_, name, _ = strings.Cut(name, ".")
	}
	if wildcard {
		base, _ := wildcardBase(host)
		subtree = hostKey(base) + "/"
	}
	return slices.Compact(keys), subtree
}
