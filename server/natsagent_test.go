package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/queue"
	nomad "github.com/hashicorp/nomad/api"
)

// workerAgents opens allocation "w1" of the workers of dev--calc's sum,
// and "web1" of a job that is no workers'.
type workerAgents struct{}

func (workerAgents) OpenAgent(ctx context.Context, job, alloc, sig string) (*nomad.Allocation, error) {
	if sig != "good" {
		return nil, &orchestrator.AgentAccessError{Why: "no"}
	}
	id := jobs.CallableID("dev--calc", "sum")
	meta := map[string]string{jobs.MetaWorkers: "true", jobs.MetaWorkspace: "dev", jobs.MetaFunction: "sum"}
	switch alloc {
	case "w1":
	case "web1":
		id, meta = "dev--calc", map[string]string{jobs.MetaWorkspace: "dev", jobs.MetaFunction: "web"}
	default:
		return nil, &orchestrator.AgentAccessError{Why: "no such allocation"}
	}
	return &nomad.Allocation{ID: alloc, JobID: id, Job: &nomad.Job{ID: &id, Meta: meta}}, nil
}

// TestNATSAgent: a worker's allocation gets a credential minted for its
// own function; another allocation, or a bad signature, gets none.
func TestNATSAgent(t *testing.T) {
	minted := time.Now().Add(-time.Minute).Truncate(time.Second).Add(300 * time.Millisecond)
	nw := NATSWorkers{URL: "nats://127.0.0.1:4222", Key: "admin", Lifetime: 10 * time.Minute, Now: func() time.Time { return minted }}
	srv := httptest.NewServer(NewHandler(Deps{Orchestrator: &fakeOrch{}, Tokens: &Tokens{KV: newMemKV()}, Agents: workerAgents{}, NATSWorkers: nw}))
	defer srv.Close()
	get := func(q string) (*http.Response, agent.NATSAnswer) {
		t.Helper()
		resp, err := http.Get(srv.URL + agent.NATSPath + "?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ans agent.NATSAnswer
		_ = json.NewDecoder(resp.Body).Decode(&ans)
		return resp, ans
	}
	resp, ans := get("job=dev--calc--call--sum&alloc=w1&sig=good")
	if resp.StatusCode != http.StatusOK || ans.URL != nw.URL || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("worker: %s %+v", resp.Status, ans)
	}
	g, err := queue.ParseGrant("admin", ans.Token, time.Now())
	// The lifetime from the mint, rounded up to the second.
	want := queue.Grant{Func: queue.Func{Workspace: "dev", AppJobID: "dev--calc", Name: "sum"}, Alloc: "w1", Exp: minted.Unix() + 601}
	if err != nil || g != want || ans.InboxPrefix != want.InboxPrefix() || ans.Token == "admin" || ans.ExpiresIn != 600.7 {
		t.Fatalf("credential %+v (%v), inbox %q, expires in %v: want %+v", g, err, ans.InboxPrefix, ans.ExpiresIn, want)
	}
	if _, err := queue.ParseGrant("admin", ans.Token, minted.Add(601*time.Second)); !errors.Is(err, queue.ErrCredentialExpired) {
		t.Errorf("past its lifetime: %v, want expired", err)
	}
	for _, q := range []string{"job=dev--calc--call--sum&alloc=w1&sig=bad", "job=dev--calc&alloc=web1&sig=good", "job=x&alloc=nope&sig=good"} {
		if resp, ans := get(q); resp.StatusCode == http.StatusOK || ans.Token != "" {
			t.Errorf("%s: %s %+v, want refused", q, resp.Status, ans)
		}
	}
	// An external NATS's operator-given worker credential is handed as is.
	ext := NATSWorkers{URL: "nats://nats.internal:4222", Key: "admin", Token: "ops-worker"}
	if a, err := ext.Credential(want); err != nil || a.Token != "ops-worker" || a.InboxPrefix != "" || a.ExpiresIn != 0 {
		t.Errorf("external: %+v %v", a, err)
	}
	if _, err := (NATSWorkers{URL: "nats://x:4222"}).Credential(want); err == nil {
		t.Error("minted under no key")
	}
}
