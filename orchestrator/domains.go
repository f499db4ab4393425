package orchestrator

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/spec"
)

// A custom domain is served for a workspace only once it is bound to it:
// the workspace proved it controls the domain with a TXT record
// _caravan-challenge.<domain> carrying the workspace's challenge value
// (for a wildcard, under its base domain), or an operator assigned it.
// A deploy checks the record before it claims a custom domain its
// workspace has no binding for, and stores the binding once the record
// proves it: later deploys do not look again. The rules are in hosts.go.

// DomainChallenge is api.DomainChallenge: the orchestrator returns wire types as they are.
type DomainChallenge = api.DomainChallenge

// challenge is the TXT record that would prove workspace controls domain.
func (o *Orchestrator) challenge(ctx context.Context, workspace, domain string) (DomainChallenge, error) {
	secret, err := o.store.Secret(ctx)
	if err != nil {
		return DomainChallenge{}, err
	}
	return DomainChallenge{Domain: domain, Record: challengeRecord(domain), Value: challengeValue(secret, workspace)}, nil
}

// domainWorkspace is the workspace a domain request acts on: the one it
// names, else the caller's own.
func domainWorkspace(caller Caller, workspace string) (string, error) {
	if workspace == "" {
		workspace = caller.Workspace
	}
	switch {
	case workspace == "*" || workspace == "":
		return "", &BadRequestError{Why: "name the workspace the domain is for (--workspace)"}
	case caller.Workspace != "*" && caller.Workspace != workspace:
		return "", &ForbiddenError{Token: caller.Name, Workspace: workspace}
	}
	return workspace, nil
}

// checkDomain refuses a domain that cannot be bound: not a hostname, or
// one caravan keeps for its own (reservedDomain).
func (o *Orchestrator) checkDomain(domain string) (string, error) {
	d := normalizeDomain(domain)
	if !spec.ValidDomain(d) {
		return "", &BadRequestError{Why: fmt.Sprintf("%q is not a domain: use a name such as api.example.com or *.example.com", domain)}
	}
	if why := reservedDomain(d, o.router.Domain); why != "" {
		return "", &BadRequestError{Why: why}
	}
	return d, nil
}

// VerifyDomain looks up the TXT record that proves workspace (empty: the
// caller's) controls domain and, when it carries the workspace's value,
// binds the domain to the workspace. Otherwise a *DomainUnverifiedError
// names the record to create and its value.
func (o *Orchestrator) VerifyDomain(ctx context.Context, caller Caller, workspace, domain string) (*DomainBinding, error) {
	ws, err := domainWorkspace(caller, workspace)
	if err != nil {
		return nil, err
	}
	d, err := o.checkDomain(domain)
	if err != nil {
		return nil, err
	}
	if err := o.proveDomains(ctx, caller, ws, []string{d}); err != nil {
		return nil, err
	}
	return o.bindingOf(ctx, d)
}

// AssignDomain binds domain to workspace without a DNS check: an
// operator's (a token of workspace "*") alone.
func (o *Orchestrator) AssignDomain(ctx context.Context, caller Caller, workspace, domain string) (*DomainBinding, error) {
	if caller.Workspace != "*" {
		return nil, &ForbiddenError{Token: caller.Name, Workspace: "*"}
	}
	ws, err := domainWorkspace(caller, workspace)
	if err != nil {
		return nil, err
	}
	d, err := o.checkDomain(domain)
	if err != nil {
		return nil, err
	}
	b := DomainBinding{Domain: bindingName(d), Workspace: ws, Method: api.DomainAssigned, By: caller.Name, At: time.Now().UTC()}
	if err := o.store.PutDomain(ctx, b); err != nil {
		return nil, err
	}
	o.log.Info("domain assigned", "domain", b.Domain, "workspace", ws, "caller", caller.Name)
	return &b, nil
}

// Domains lists the domain bindings caller may see: its workspace's, or
// every one for an operator.
func (o *Orchestrator) Domains(ctx context.Context, caller Caller) ([]DomainBinding, error) {
	all, err := o.store.Domains(ctx)
	if err != nil {
		return nil, err
	}
	out := []DomainBinding{}
	for _, b := range all {
		if caller.Workspace == "*" || caller.Workspace == b.Workspace {
			out = append(out, b)
		}
	}
	return out, nil
}

func (o *Orchestrator) bindingOf(ctx context.Context, d string) (*DomainBinding, error) {
	all, err := o.store.Domains(ctx)
	if err != nil {
		return nil, err
	}
	if b := bindingFor(all, d); b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("the binding of %s vanished", d)
}

// proveDomains makes sure workspace may serve domains: those without a
// binding of the workspace are looked up in DNS, and bound when their TXT
// record proves it; the rest are a *DomainUnverifiedError with their
// challenges.
func (o *Orchestrator) proveDomains(ctx context.Context, caller Caller, workspace string, domains []string) error {
	missing, err := o.unproved(ctx, workspace, domains)
	if err != nil || len(missing) == 0 {
		return err
	}
	unproved := &DomainUnverifiedError{Workspace: workspace}
	for _, c := range missing {
		txt, err := o.dns.LookupTXT(ctx, c.Record)
		if err != nil {
			unproved.Challenges = append(unproved.Challenges, c)
			unproved.Why = fmt.Sprintf("looking up %s: %v", c.Record, err)
			continue
		}
		if !provesControl(txt, c.Value) {
			unproved.Challenges = append(unproved.Challenges, c)
			continue
		}
		b := DomainBinding{Domain: bindingName(c.Domain), Workspace: workspace, Method: api.DomainVerifiedByDNS,
			By: caller.Name, At: time.Now().UTC()}
		if err := o.store.PutDomain(ctx, b); err != nil {
			return err
		}
		o.log.Info("domain verified", "domain", b.Domain, "workspace", workspace, "record", c.Record)
	}
	if len(unproved.Challenges) > 0 {
		return unproved
	}
	return nil
}

// unproved lists the challenges of those of domains workspace has no
// binding for.
func (o *Orchestrator) unproved(ctx context.Context, workspace string, domains []string) ([]DomainChallenge, error) {
	if len(domains) == 0 {
		return nil, nil
	}
	bindings, err := o.store.Domains(ctx)
	if err != nil {
		return nil, err
	}
	var out []DomainChallenge
	for _, d := range unverifiedDomains(domains, workspace, bindings) {
		c, err := o.challenge(ctx, workspace, d)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// newCustomDomains are the custom domains of app among claim (the names a
// change is about to claim): those whose first route it would publish.
func newCustomDomains(app *spec.App, claim []string) []string {
	var out []string
	for _, d := range customDomains(app) {
		if slices.Contains(claim, d) {
			out = append(out, d)
		}
	}
	return out
}
