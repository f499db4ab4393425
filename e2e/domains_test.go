package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
)

// setTXT sets a TXT record in pebble-challtestsrv, the stack's DNS, and
// clears it when the test ends.
func setTXT(t *testing.T, host, value string) {
	t.Helper()
	mgmt := "http://127.0.0.1:" + strconv.Itoa(env.stack.Ports.ChallMgmt)
	post := func(path string, body any) error {
		b, _ := json.Marshal(body)
		resp, err := http.Post(mgmt+path, "application/json", bytes.NewReader(b))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %s", path, resp.Status)
		}
		return nil
	}
	if err := post("/set-txt", map[string]string{"host": host + ".", "value": value}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = post("/clear-txt", map[string]string{"host": host + "."}) })
}

// TestCustomDomainVerification: a custom domain no one proved is refused
// with the TXT record to create and its value; once that record is in the
// stack's DNS (pebble-challtestsrv), the deploy goes through and the
// domain serves over HTTPS. A workspace's own token is used, so the error
// is what a user sees.
func TestCustomDomainVerification(t *testing.T) {
	purge(t, "e2e--proved")
	ctx := context.Background()
	tok, err := env.client.CreateToken(ctx, "proof", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	c := &api.Client{Addr: env.client.Addr, Token: tok.Token}
	const domain = "app.proof-e2e.test"
	src := labelled("proved", "proved", domain, "proved\n")

	_, err = c.Deploy(ctx, "proved.hcl", []byte(src), 0)
	var apiErr *api.APIError
	if !errors.As(err, &apiErr) || apiErr.Kind != api.CodeDomainUnverified {
		t.Fatalf("deploy of an unproved domain: %v, want domain_unverified", err)
	}
	record := "_caravan-challenge." + domain
	_, value, ok := strings.Cut(apiErr.Message, "with the value \"")
	value, _, _ = strings.Cut(value, "\"")
	if !strings.Contains(apiErr.Message, record) || !ok || !strings.HasPrefix(value, "caravan-verify=") {
		t.Fatalf("the error %q does not say which TXT record to create (%s) and its value", apiErr.Message, record)
	}
	if _, _, err := env.nomad.Jobs().Info("e2e--proved", nsq("e2e--proved")); err == nil {
		t.Fatal("a refused deploy registered a job")
	}

	setTXT(t, record, value)
	res, err := c.Deploy(ctx, "proved.hcl", []byte(src), 0)
	if err != nil {
		t.Fatalf("deploy with the TXT record set: %v", err)
	}
	answers(t, res.Functions[0].URL, "proved\n")
	answers(t, "https://"+domain+":"+strconv.Itoa(env.stack.Ports.TraefikWebsecure), "proved\n")
	list, err := c.Domains(ctx)
	if err != nil || !containsBinding(list, domain, "e2e", api.DomainVerifiedByDNS) {
		t.Fatalf("domains = %+v %v, want %s bound to e2e by dns", list, err, domain)
	}

	// Another workspace cannot verify it with e2e's value, nor learn who
	// holds a hostname.
	evil, err := env.client.CreateToken(ctx, "evil", "evil")
	if err != nil {
		t.Fatal(err)
	}
	ec := &api.Client{Addr: env.client.Addr, Token: evil.Token}
	if _, err := ec.VerifyDomain(ctx, domain, ""); api.ErrorCodeOf(err) != api.CodeDomainUnverified {
		t.Fatalf("evil verified %s: %v", domain, err)
	}
	if _, err := ec.AssignDomain(ctx, domain, "evil"); api.ErrorCodeOf(err) != api.CodeForbidden {
		t.Fatalf("evil assigned %s: %v", domain, err)
	}
	evilSrc := strings.Replace(labelled("squat", "squat", "*.caravan.localhost", "x\n"), `"e2e"`, `"evil"`, 1)
	evilSrc = strings.Replace(evilSrc, "caravan.localhost", env.stack.Domain, 1)
	if _, err := ec.Deploy(ctx, "squat.hcl", []byte(evilSrc), 0); api.ErrorCodeOf(err) != api.CodeInvalidSpec ||
		!strings.Contains(err.Error(), "Reserved custom domain") {
		t.Fatalf("evil deployed a wildcard over the platform domain: %v", err)
	}
}

func containsBinding(list []api.DomainBinding, domain, workspace, method string) bool {
	for _, b := range list {
		if b.Domain == domain && b.Workspace == workspace && b.Method == method {
			return true
		}
	}
	return false
}

// TestHostClaimsInConsul: ConsulStore.Commit writes a version, its record
// and its claims in one transaction or not at all, and a wildcard claim
// and a claim under it from two workspaces exclude each other, on the
// stack's Consul.
func TestHostClaimsInConsul(t *testing.T) {
	ctx := context.Background()
	store := &orchestrator.ConsulStore{Client: env.consul}
	now := time.Now().UTC()
	rec := func(ws, app string) *orchestrator.AppRecord {
		id := ws + "--" + app
		t.Cleanup(func() { env.consul.KV().DeleteTree("caravan/apps/"+id+"/", nil) })
		return &orchestrator.AppRecord{Workspace: ws, App: app, JobID: id, Generation: 1, LatestVersion: 1, UpdatedAt: now}
	}
	t.Cleanup(func() { env.consul.KV().DeleteTree("caravan/hostnames/test/txn-e2e/", nil) })
	t.Cleanup(func() { env.consul.KV().DeleteTree("caravan/hostnames-under/test/", nil) })
	v1 := []*orchestrator.VersionRecord{{Version: 1, Status: orchestrator.StatusPending, StartedAt: now}}

	a := rec("txna", "web")
	if err := store.Commit(ctx, orchestrator.Write{Record: a, Versions: v1, Claim: []string{"a.b.txn-e2e.test"}}); err != nil {
		t.Fatal(err)
	}
	// Workspace txnb's wildcard over a's name: refused, and nothing of it
	// is written, neither its record, its version nor its other claim.
	b := rec("txnb", "web")
	err := store.Commit(ctx, orchestrator.Write{Record: b, Versions: v1, Claim: []string{"free.other-e2e.test", "*.txn-e2e.test"}})
	var taken *orchestrator.HostTakenError
	if !errors.As(err, &taken) || taken.Host != "*.txn-e2e.test" || taken.Conflict != "a.b.txn-e2e.test" {
		t.Fatalf("commit of an overlapping wildcard: %v", err)
	}
	if got, _, _ := store.App(ctx, b.JobID); got != nil {
		t.Errorf("a refused commit wrote the record %+v", got)
	}
	if got, _ := store.Version(ctx, b.JobID, 1, 1); got != nil {
		t.Errorf("a refused commit wrote the version %+v", got)
	}
	if claims, _ := store.HostClaims(ctx, "free.other-e2e.test"); len(claims) != 0 {
		t.Errorf("a refused commit claimed %+v", claims)
	}
	// A commit whose record moved writes no claim either.
	stale := rec("txnc", "web")
	if err := store.Commit(ctx, orchestrator.Write{Record: stale, Index: 12345, Versions: v1, Claim: []string{"c.other-e2e.test"}}); !errors.Is(err, orchestrator.ErrConflict) {
		t.Fatalf("commit at a stale index: %v, want ErrConflict", err)
	}
	if claims, _ := store.HostClaims(ctx, "c.other-e2e.test"); len(claims) != 0 {
		t.Errorf("a conflicting commit claimed %+v", claims)
	}
	// The same workspace may serve a wildcard over its own name.
	a2 := rec("txna", "wild")
	if err := store.Commit(ctx, orchestrator.Write{Record: a2, Versions: v1, Claim: []string{"*.txn-e2e.test"}}); err != nil {
		t.Fatal(err)
	}
	// And now a name under it is refused to another workspace.
	d := rec("txnd", "web")
	if err := store.Commit(ctx, orchestrator.Write{Record: d, Versions: v1, Claim: []string{"x.y.txn-e2e.test"}}); !errors.As(err, &taken) {
		t.Fatalf("commit of a name under another workspace's wildcard: %v", err)
	}
	t.Cleanup(func() { env.consul.KV().DeleteTree("caravan/hostnames/test/other-e2e/", nil) })

	// Many deploys of two servers claiming names at once (new apps: P6
	// of the cluster bench) all land: names that cannot overlap share no
	// key they check.
	t.Cleanup(func() { env.consul.KV().DeleteTree("caravan/hostnames/test/many-e2e/", nil) })
	stores := []*orchestrator.ConsulStore{store, {Client: env.consul}}
	errs := make(chan error, 60)
	for i := range cap(errs) {
		go func() {
			r := rec("txnm", fmt.Sprintf("app%d", i))
			errs <- stores[i%2].Commit(ctx, orchestrator.Write{Record: r, Versions: v1, Claim: []string{fmt.Sprintf("app%d.many-e2e.test", i)}})
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Errorf("one of %d concurrent claiming commits: %v", cap(errs), err)
		}
	}

	// A wildcard and a name under it (or a wildcard over it) claimed at
	// once by two workspaces through two stores: never both, in 20 races.
	t.Cleanup(func() { env.consul.KV().DeleteTree("caravan/hostnames/test/race-e2e/", nil) })
	for i := range 20 {
		name, over := fmt.Sprintf("a.b.r%d.race-e2e.test", i), fmt.Sprintf("*.r%d.race-e2e.test", i)
		if i%2 == 1 {
			name = fmt.Sprintf("*.b.r%d.race-e2e.test", i)
		}
		got := make(chan error, 2)
		for j, c := range []struct{ ws, host string }{{"txnx", over}, {"txny", name}} {
			go func() {
				got <- stores[j].Commit(ctx, orchestrator.Write{Record: rec(c.ws, fmt.Sprintf("race%d", i)), Versions: v1, Claim: []string{c.host}})
			}()
		}
		var landed int
		for range 2 {
			err := <-got
			switch {
			case err == nil:
				landed++
			case !errors.As(err, &taken):
				t.Errorf("race %d (%s against %s): %v, want landed or *HostTakenError", i, over, name, err)
			}
		}
		if landed != 1 {
			t.Errorf("race %d (%s against %s): %d claims landed, want 1", i, over, name, landed)
		}
	}
}
