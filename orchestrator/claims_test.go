package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// webApp is app name of workspace dev serving custom domains.
func webApp(name string, domains ...string) []byte {
	return fmt.Appendf(nil, `app %q {
  workspace = "dev"
  function "web" {
    command = "node"
    web {
      custom_domains = [%s]
    }
  }
}
`, name, quoteAll(domains))
}

func quoteAll(ss []string) string {
	var q []string
	for _, s := range ss {
		q = append(q, fmt.Sprintf("%q", s))
	}
	return strings.Join(q, ", ")
}

func TestCustomDomainsCannotBeThePlatformsNames(t *testing.T) {
	for _, d := range []string{"caravan.test", "*.caravan.test", "dev--hello-web.caravan.test", "dev--hello-web--canary.caravan.test"} {
		h := newHarness(t)
		_, err := h.o.Deploy(context.Background(), Caller{Name: "root", Workspace: "*"}, DeployRequest{Spec: webApp("evil", d), Filename: "app.hcl"})
		var de *DiagnosticsError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), "Reserved custom domain") {
			t.Errorf("custom domain %s: err = %v, want a Reserved custom domain diagnostic", d, err)
		}
		if h.nomad.count("register") != 0 {
			t.Errorf("custom domain %s: registered a job", d)
		}
	}
}

func TestPreviewHostnamesAreClaimed(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(birdsSpec("canary", "v1"))
	if got := h.store.heldHosts("dev--birds"); !slices.Contains(got, "dev--birds-web--canary.caravan.test") {
		t.Errorf("a canary app holds %v, want its preview hostname too", got)
	}
}

func TestWildcardClaimsItsSubtree(t *testing.T) {
	other := HostOwner{JobID: "other--app", Workspace: "other", App: "app"}
	t.Run("wildcard over another workspace's name", func(t *testing.T) {
		h := newHarness(t)
		h.store.claim("a.b.example.com", other)
		_, err := h.deploy(webApp("shop", "*.example.com"))
		var taken *HostTakenError
		if !errors.As(err, &taken) || taken.Host != "*.example.com" {
			t.Fatalf("err = %v, want *.example.com taken", err)
		}
		if got := h.store.heldHosts("dev--shop"); len(got) != 0 {
			t.Errorf("the refused app holds %v", got)
		}
	})
	t.Run("name under another workspace's wildcard", func(t *testing.T) {
		h := newHarness(t)
		h.store.claim("*.example.com", other)
		_, err := h.deploy(webApp("shop", "x.y.example.com"))
		var taken *HostTakenError
		if !errors.As(err, &taken) || taken.Host != "x.y.example.com" {
			t.Fatalf("err = %v, want x.y.example.com taken", err)
		}
	})
	t.Run("names under a wildcard of the same workspace", func(t *testing.T) {
		h := newHarness(t)
		h.mustDeploy(webApp("shop", "*.example.com"))
		h.mustDeploy(webApp("blog", "blog.example.com"))
	})
}

func TestCustomDomainNeedsProofOfControl(t *testing.T) {
	h := newHarness(t)
	_, err := h.deploy(webApp("shop", "shop.proof.test", "*.wild.proof.test"))
	var un *DomainUnverifiedError
	if !errors.As(err, &un) || len(un.Challenges) != 2 {
		t.Fatalf("err = %v, want both domains unverified", err)
	}
	want := challengeValue([]byte("test secret"), "dev")
	for i, rec := range []string{"_caravan-challenge.wild.proof.test", "_caravan-challenge.shop.proof.test"} {
		c := un.Challenges[i]
		if c.Record != rec || c.Value != want || !strings.Contains(err.Error(), rec) || !strings.Contains(err.Error(), want) {
			t.Errorf("challenge %d = %+v, want record %s with %s, named in %q", i, c, rec, want, err)
		}
	}
	if h.nomad.count("register") != 0 || len(h.store.heldHosts("dev--shop")) != 0 {
		t.Error("an unverified domain registered a job or claimed a hostname")
	}
	if rec, _, _ := h.store.App(context.Background(), "dev--shop"); rec != nil {
		t.Errorf("an unverified domain handed out a version: %+v", rec)
	}

	// Another workspace's value proves nothing.
	h.dns.set("_caravan-challenge.shop.proof.test", challengeValue([]byte("test secret"), "evil"))
	if _, err := h.deploy(webApp("shop", "shop.proof.test")); !errors.As(err, &un) {
		t.Fatalf("with another workspace's value: err = %v", err)
	}

	h.dns.set("_caravan-challenge.shop.proof.test", "v=spf1 -all", want)
	h.dns.set("_caravan-challenge.wild.proof.test", want)
	h.mustDeploy(webApp("shop", "shop.proof.test", "*.wild.proof.test"))
	bound, _ := h.o.Domains(context.Background(), ci)
	var names []string
	for _, b := range bound {
		names = append(names, b.Domain+"="+b.Workspace+"/"+b.Method)
	}
	if !slices.Equal(names, []string{"example.com=dev/assigned", "shop.proof.test=dev/dns", "wild.proof.test=dev/dns"}) {
		t.Errorf("bindings = %v", names)
	}

	// Once bound, later deploys do not look again.
	looked := h.dns.lookups
	h.dns.set("_caravan-challenge.shop.proof.test")
	h.mustDeploy(webApp("shop", "shop.proof.test", "a.wild.proof.test"))
	if h.dns.lookups != looked {
		t.Errorf("a deploy of bound domains looked DNS up %d more times", h.dns.lookups-looked)
	}
}

func TestDomainVerbs(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.o.AssignDomain(ctx, ci, "dev", "shop.test"); !errors.As(err, new(*ForbiddenError)) {
		t.Errorf("a workspace token assigned a domain: %v", err)
	}
	if _, err := h.o.VerifyDomain(ctx, ci, "evil", "shop.test"); !errors.As(err, new(*ForbiddenError)) {
		t.Errorf("a workspace token verified for another workspace: %v", err)
	}
	for _, d := range []string{"*.caravan.test", "x.caravan.test", "not a domain"} {
		if _, err := h.o.AssignDomain(ctx, Caravan, "dev", d); !errors.As(err, new(*BadRequestError)) {
			t.Errorf("assigned %q: %v", d, err)
		}
	}
	if _, err := h.o.VerifyDomain(ctx, ci, "", "shop.test"); !errors.As(err, new(*DomainUnverifiedError)) {
		t.Errorf("verified without a record: %v", err)
	}
	h.dns.set("_caravan-challenge.shop.test", challengeValue([]byte("test secret"), "dev"))
	if b, err := h.o.VerifyDomain(ctx, ci, "", "*.shop.test"); err != nil || b.Domain != "shop.test" || b.Workspace != "dev" {
		t.Errorf("verify = %+v, %v", b, err)
	}
	if b, err := h.o.AssignDomain(ctx, Caravan, "team", "team.example.com"); err != nil || b.Method != "assigned" {
		t.Errorf("assign = %+v, %v", b, err)
	}
	if bs, _ := h.o.Domains(ctx, Caller{Name: "t", Workspace: "team"}); len(bs) != 1 || bs[0].Domain != "team.example.com" {
		t.Errorf("team sees %+v, want its binding alone", bs)
	}
	// team.example.com is team's now: dev's binding of example.com no
	// longer covers it.
	if _, err := h.deploy(webApp("shop", "api.team.example.com")); !errors.As(err, new(*DomainUnverifiedError)) {
		t.Errorf("dev deployed a name under team's domain: %v", err)
	}
}

func TestFailedDeployReleasesItsNewHostnames(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(webApp("shop", "a.example.com"))
	h.prober.fail["web"] = errors.New("status 502 Bad Gateway")
	if _, err := h.deploy(webApp("shop", "z.example.com")); !errors.As(err, new(*RolloutError)) {
		t.Fatalf("err = %v, want a failed rollout", err)
	}
	if got := h.store.heldHosts("dev--shop"); !slices.Equal(got, []string{"a.example.com", "dev--shop-web.caravan.test"}) {
		t.Errorf("after a failed version the app holds %v, want the live version's alone", got)
	}
	if rec := h.record("dev--shop"); !slices.Equal(rec.Hosts, []string{"a.example.com", "dev--shop-web.caravan.test"}) {
		t.Errorf("record holds %v", rec.Hosts)
	}
	delete(h.prober.fail, "web")
	// The name the failed version asked for is free for another app.
	h.mustDeploy(webApp("blog", "z.example.com"))
}

func TestFailedFirstVersionHoldsNothing(t *testing.T) {
	h := newHarness(t)
	h.prober.fail["web"] = errors.New("status 502 Bad Gateway")
	if _, err := h.deploy(webApp("shop", "a.example.com")); err == nil {
		t.Fatal("deploy succeeded")
	}
	if got := h.store.heldHosts("dev--shop"); len(got) != 0 {
		t.Errorf("a version that never went live squats %v", got)
	}
}

func TestAbortedCanaryReleasesItsNewHostnames(t *testing.T) {
	h := newHarness(t)
	h.liveBirds("canary")
	src := strings.Replace(string(birdsSpec("canary", "v2")), "web {}", `web {
      custom_domains = ["birds.example.com"]
    }`, 1)
	h.mustDeploy([]byte(src))
	if got := h.store.heldHosts("dev--birds"); !slices.Contains(got, "birds.example.com") {
		t.Fatalf("the canary holds %v", got)
	}
	if _, err := h.o.Abort(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "birds"}}); err != nil {
		t.Fatal(err)
	}
	if got := h.store.heldHosts("dev--birds"); slices.Contains(got, "birds.example.com") {
		t.Errorf("after an abort the app still holds %v", got)
	}
}

func TestClaimsBelongToTheAppNotItsJobID(t *testing.T) {
	h := newHarness(t)
	// Workspace acme-prod's app x has job ID acme-prod--x, as does app x
	// of workspace acme, environment prod.
	h.store.claim("x.example.com", HostOwner{JobID: "acme-prod--x", Workspace: "acme-prod", App: "x"})
	h.store.domains["example.com"] = DomainBinding{Domain: "example.com", Workspace: "acme", Method: "assigned"}
	src := `app "x" {
  workspace   = "acme"
  environment = "prod"
  function "web" {
    command = "node"
    web {
      custom_domains = ["x.example.com"]
    }
  }
}
`
	_, err := h.o.Deploy(context.Background(), Caller{Name: "acme", Workspace: "acme"}, DeployRequest{Spec: []byte(src), Filename: "app.hcl"})
	if !errors.As(err, new(*HostTakenError)) {
		t.Fatalf("err = %v, want x.example.com taken", err)
	}
}

func TestHostTakenTellsAnotherWorkspaceNotWhoOwnsIt(t *testing.T) {
	h := newHarness(t)
	h.store.claim("z.example.com", HostOwner{JobID: "secret--project", Workspace: "secret", App: "project"})
	_, err := h.deploy(webApp("shop", "z.example.com"))
	var taken *HostTakenError
	if !errors.As(err, &taken) {
		t.Fatalf("err = %v", err)
	}
	if msg := err.Error(); strings.Contains(msg, "secret") || strings.Contains(msg, "project") || !strings.Contains(msg, "z.example.com") {
		t.Errorf("another workspace is told %q", msg)
	}
	p, err := h.o.Plan(context.Background(), ci, DeployRequest{Spec: webApp("shop", "z.example.com")})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(p.Problems, " "), "secret") {
		t.Errorf("plan tells another workspace %q", p.Problems)
	}
	_, err = h.o.Deploy(context.Background(), Caravan, DeployRequest{Spec: webApp("shop", "z.example.com"), Filename: "app.hcl"})
	if err == nil || !strings.Contains(err.Error(), `app "project" in workspace "secret"`) {
		t.Errorf("an operator is told %v, want the owner", err)
	}
}

func TestVersionAndClaimsAreWrittenTogether(t *testing.T) {
	h := newHarness(t)
	h.store.putErr = errors.New("consul: txn failed")
	if _, err := h.deploy(webApp("shop", "a.example.com")); err == nil {
		t.Fatal("deploy succeeded")
	}
	if got := h.store.heldHosts("dev--shop"); len(got) != 0 {
		t.Errorf("a write that failed claimed %v", got)
	}
	if rec, _, _ := h.store.App(context.Background(), "dev--shop"); rec != nil {
		t.Errorf("a write that failed handed out a version: %+v", rec)
	}
}

// Commit's backoff after a moved claims revision grows from 10ms to a
// 640ms cap, spread by the random factor between half and one and a half.
func TestCommitBackoff(t *testing.T) {
	for _, c := range []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{0, 0, 5 * time.Millisecond},
		{0, 0.5, 10 * time.Millisecond},
		{1, 0.5, 20 * time.Millisecond},
		{6, 0.5, 640 * time.Millisecond},
		{30, 0.5, 640 * time.Millisecond},
		{30, 0.999, 959360 * time.Microsecond},
	} {
		if got := commitBackoff(c.n, c.r); got != c.want {
			t.Errorf("commitBackoff(%d, %v) = %s, want %s", c.n, c.r, got, c.want)
		}
	}
	var total time.Duration
	for n := range commitAttempts - 1 {
		total += commitBackoff(n, 0.5)
	}
	if total < 15*time.Second || total > 30*time.Second {
		t.Errorf("%d attempts wait %s in all, want 15-30s", commitAttempts, total)
	}
}
