package orchestrator

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReservedDomain(t *testing.T) {
	for _, c := range []struct {
		domain, platform string
		reserved         bool
	}{
		{"api.example.com", "caravan.localhost", false},
		{"*.example.com", "caravan.localhost", false},
		{"caravan.localhost", "caravan.localhost", true},
		{"Caravan.Localhost.", "caravan.localhost", true},
		// Another app's generated hostname, and a canary preview's.
		{"dev--hello-web.caravan.localhost", "caravan.localhost", true},
		{"dev--hello-web--canary.caravan.localhost", "caravan.localhost", true},
		// The report: a wildcard over every generated hostname.
		{"*.caravan.localhost", "caravan.localhost", true},
		{"*.a.caravan.localhost", "caravan.localhost", true},
		// A wildcard whose subtree holds the platform domain.
		{"*.localhost", "caravan.localhost", true},
		{"*.example.com", "apps.example.com", true},
		// Neighbours are not under it.
		{"xcaravan.localhost", "caravan.localhost", false},
		{"*.other.localhost", "caravan.localhost", false},
		{"example.com", "apps.example.com", false},
	} {
		if got := reservedDomain(c.domain, c.platform) != ""; got != c.reserved {
			t.Errorf("reservedDomain(%q, %q) reserved = %v, want %v", c.domain, c.platform, got, c.reserved)
		}
	}
}

func TestOverlaps(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"a.example.com", "a.example.com", true},
		{"a.example.com", "b.example.com", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "*.b.example.com", true},
		{"a.b.example.com", "*.example.com", true},
		// A wildcard does not cover its base domain.
		{"*.example.com", "example.com", false},
		{"*.example.com", "notexample.com", false},
		{"*.example.com", "*.example.org", false},
	} {
		if got := overlaps(c.a, c.b); got != c.want {
			t.Errorf("overlaps(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestClaimConflict(t *testing.T) {
	shop := HostOwner{JobID: "dev--shop", Workspace: "dev", App: "shop"}
	blog := HostOwner{JobID: "dev--blog", Workspace: "dev", App: "blog"}
	evil := HostOwner{JobID: "evil--x", Workspace: "evil", App: "x"}
	for _, c := range []struct {
		name     string
		host     string
		owner    HostOwner
		existing []HostClaim
		conflict string // "" no conflict
	}{
		{"free", "a.example.com", shop, nil, ""},
		{"held by itself", "a.example.com", shop, []HostClaim{{"a.example.com", shop}}, ""},
		{"same name, another app of the workspace", "a.example.com", shop, []HostClaim{{"a.example.com", blog}}, "a.example.com"},
		{"same name, another workspace", "a.example.com", shop, []HostClaim{{"a.example.com", evil}}, "a.example.com"},
		{"wildcard over a name another workspace serves", "*.example.com", evil, []HostClaim{{"a.b.example.com", shop}}, "a.b.example.com"},
		{"name under another workspace's wildcard", "x.y.example.com", evil, []HostClaim{{"*.example.com", shop}}, "*.example.com"},
		{"name under a wildcard of its own workspace", "a.example.com", blog, []HostClaim{{"*.example.com", shop}}, ""},
		{"the same wildcard, another app of the workspace", "*.example.com", blog, []HostClaim{{"*.example.com", shop}}, "*.example.com"},
		{"same app under another job ID (identity, not job)", "a.example.com",
			HostOwner{JobID: "renamed", Workspace: "dev", App: "shop"}, []HostClaim{{"a.example.com", shop}}, ""},
		{"same job ID, another app (acme-prod vs acme + prod)", "a.example.com",
			HostOwner{JobID: "acme-prod--x", Workspace: "acme", Environment: "prod", App: "x"},
			[]HostClaim{{"a.example.com", HostOwner{JobID: "acme-prod--x", Workspace: "acme-prod", App: "x"}}}, "a.example.com"},
	} {
		got := claimConflict(c.host, c.owner, c.existing)
		switch {
		case c.conflict == "" && got != nil:
			t.Errorf("%s: %v, want no conflict", c.name, got)
		case c.conflict != "" && got == nil:
			t.Errorf("%s: no conflict, want one with %s", c.name, c.conflict)
		case got != nil && got.Host != c.host:
			t.Errorf("%s: conflict on %s, want %s", c.name, got.Host, c.host)
		case got != nil && c.conflict != c.host && got.Conflict != c.conflict:
			t.Errorf("%s: conflict with %q, want %q", c.name, got.Conflict, c.conflict)
		}
	}
}

func TestVisibleTo(t *testing.T) {
	taken := &HostTakenError{Host: "*.example.com", Conflict: "a.example.com", Owner: HostOwner{JobID: "dev--shop", Workspace: "dev", App: "shop"}}
	for _, c := range []struct {
		caller Caller
		names  bool
	}{
		{Caller{Name: "ci", Workspace: "dev"}, true},
		{Caller{Name: "root", Workspace: "*"}, true},
		{Caller{Name: "mallory", Workspace: "evil"}, false},
	} {
		err := visibleTo(taken, c.caller)
		var got *HostTakenError
		if !errors.As(err, &got) {
			t.Fatalf("%s: %v is no longer a *HostTakenError", c.caller.Name, err)
		}
		msg := err.Error()
		tells := strings.Contains(msg, "shop") || strings.Contains(msg, `"dev"`) || strings.Contains(msg, "a.example.com")
		if tells != c.names {
			t.Errorf("%s sees %q: names the owner %v, want %v", c.caller.Name, msg, tells, c.names)
		}
		if !strings.Contains(msg, "*.example.com") || !strings.Contains(msg, "taken") && !c.names {
			t.Errorf("%s sees %q: want it to say *.example.com is taken", c.caller.Name, msg)
		}
	}
	other := errors.New("boom")
	if visibleTo(other, Caller{Workspace: "evil"}) != other {
		t.Error("visibleTo changed an error that is not about a hostname")
	}
}

func TestHostKeys(t *testing.T) {
	for _, c := range []struct {
		host, key string
		overlap   []string
		subtree   string
	}{
		{"a.example.com", "com/example/a", []string{"com/example/a", "com/example/*", "com/*"}, ""},
		{"*.example.com", "com/example/*", []string{"com/example/*", "com/*"}, "com/example/"},
		{"*.b.example.com", "com/example/b/*", []string{"com/example/b/*", "com/example/*", "com/*"}, "com/example/b/"},
	} {
		if k := hostKey(c.host); k != c.key || keyHost(k) != c.host {
			t.Errorf("hostKey(%q) = %q (back: %q), want %q", c.host, k, keyHost(k), c.key)
		}
		keys, subtree := overlapKeys(c.host)
		if !slices.Equal(keys, c.overlap) || subtree != c.subtree {
			t.Errorf("overlapKeys(%q) = %v %q, want %v %q", c.host, keys, subtree, c.overlap, c.subtree)
		}
	}
}

func TestBindingFor(t *testing.T) {
	bindings := []DomainBinding{
		{Domain: "example.com", Workspace: "dev"},
		{Domain: "team.example.com", Workspace: "team"},
	}
	for _, c := range []struct {
		domain, workspace string // "" no binding
	}{
		{"example.com", "dev"},
		{"api.example.com", "dev"},
		{"*.example.com", "dev"},
		{"team.example.com", "team"},
		{"a.team.example.com", "team"},
		{"*.team.example.com", "team"},
		{"example.org", ""},
		{"notexample.com", ""},
	} {
		b := bindingFor(bindings, c.domain)
		got := ""
		if b != nil {
			got = b.Workspace
		}
		if got != c.workspace {
			t.Errorf("bindingFor(%q) = %q, want %q", c.domain, got, c.workspace)
		}
	}
	if got := unverifiedDomains([]string{"api.example.com", "x.team.example.com", "shop.example.org"}, "dev", bindings); !slices.Equal(got,
		[]string{"shop.example.org", "x.team.example.com"}) {
		t.Errorf("unverified for dev = %v", got)
	}
}

func TestChallenge(t *testing.T) {
	if r := challengeRecord("*.Shop.Example.com."); r != "_caravan-challenge.shop.example.com" {
		t.Errorf("a wildcard's record is %s, want its base domain's", r)
	}
	if r := challengeRecord("api.example.com"); r != "_caravan-challenge.api.example.com" {
		t.Errorf("record = %s", r)
	}
	a, b := challengeValue([]byte("s"), "dev"), challengeValue([]byte("s"), "evil")
	if a == b || a != challengeValue([]byte("s"), "dev") || a == challengeValue([]byte("t"), "dev") {
		t.Errorf("values %q %q: want one per workspace and secret, stable", a, b)
	}
	if !provesControl([]string{"other", " " + a}, a) || provesControl([]string{b}, a) {
		t.Error("provesControl")
	}
}

func TestSettleReleasesWhatAFailedVersionClaimed(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	live := &VersionRecord{Version: 1, Status: StatusLive, Hosts: []string{"a", "b"}}
	// While version 2 rolls out the app holds both versions' hosts.
	rec := &AppRecord{JobID: "j", State: StateDeployed, LiveVersion: 1, Hosts: []string{"a", "b", "c"}}
	pending := &VersionRecord{Version: 2, Status: StatusPending, Hosts: []string{"b", "c"}}
	out, err := settle(rec, pending, live, errors.New("boom"), now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.Record.Hosts, []string{"a", "b"}) || !slices.Equal(out.Release, []string{"c"}) {
		t.Errorf("failed over a live version: holds %v, releases %v; want a b, c", out.Record.Hosts, out.Release)
	}
	// A first version that fails holds nothing.
	first := &AppRecord{JobID: "j", State: StateDeployed, Hosts: []string{"b", "c"}}
	out, err = settle(first, pending, nil, errors.New("boom"), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Record.Hosts) != 0 || !slices.Equal(out.Release, []string{"b", "c"}) {
		t.Errorf("failed first version: holds %v, releases %v; want nothing, b c", out.Record.Hosts, out.Release)
	}
}
