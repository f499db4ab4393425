package server

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/orchestrator"
	nomad "github.com/hashicorp/nomad/api"
)

// fakeAgents allows job "j" with signature "good" for allocation "a1".
type fakeAgents struct{}

func (fakeAgents) OpenAgent(ctx context.Context, job, alloc, sig string) (*nomad.Allocation, error) {
	if job != "j" || alloc != "a1" || sig != "good" {
		return nil, &orchestrator.AgentAccessError{Why: "no"}
	}
	return &nomad.Allocation{ID: alloc, JobID: job}, nil
}

type fakeDrainer struct {
	alloc string
	wait  time.Duration
}

func (d *fakeDrainer) DrainAlloc(ctx context.Context, alloc string, wait time.Duration) (DrainAnswer, error) {
	d.alloc, d.wait = alloc, wait
	return DrainAnswer{InFlight: 0, Proxies: 2}, nil
}

func TestAgentEndpoints(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "caravan")
	if err := os.WriteFile(bin, []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	dr := &fakeDrainer{}
	srv := httptest.NewServer(NewHandler(Deps{Orchestrator: &fakeOrch{}, Tokens: &Tokens{KV: newMemKV()}, Agents: fakeAgents{}, AgentBinary: bin, Drainer: dr}))
	defer srv.Close()

	resp, err := http.Get(srv.URL + agent.Path + "?job=j&alloc=a1&sig=good")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.ContentLength != agent.TarSize(8) {
		t.Fatalf("fetch: %s, length %d", resp.Status, resp.ContentLength)
	}
	tr := tar.NewReader(resp.Body)
	h, err := tr.Next()
	if err != nil || h.Name != agent.FileName {
		t.Fatalf("tar: %v %v", h, err)
	}
	b, _ := io.ReadAll(tr)
	resp.Body.Close()
	if string(b) != "#!binary" {
		t.Errorf("content %q", b)
	}

	for _, u := range []string{agent.Path + "?job=j&alloc=a1&sig=bad", agent.Path + "?job=j&alloc=a2&sig=good"} {
		resp, err := http.Get(srv.URL + u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s: %s, want 401", u, resp.Status)
		}
	}

	resp, err = http.Post(srv.URL+agent.DrainPath+"?job=j&alloc=a1&sig=good&wait=7s", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var ans DrainAnswer
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || resp.StatusCode != http.StatusOK || ans.Proxies != 2 {
		t.Fatalf("drain: %s %+v %v", resp.Status, ans, err)
	}
	resp.Body.Close()
	if dr.alloc != "a1" || dr.wait != 7*time.Second {
		t.Errorf("drained %q for %s, want a1 for 7s", dr.alloc, dr.wait)
	}
	for _, u := range []string{"?job=j&alloc=a1&sig=bad", "?job=j&alloc=a1&sig=good&wait=forever"} {
		dr.alloc = ""
		resp, err := http.Post(srv.URL+agent.DrainPath+u, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 4 || dr.alloc != "" {
			t.Errorf("POST %s: %s (drained %q), want a 4xx and no drain", u, resp.Status, dr.alloc)
		}
	}
}
