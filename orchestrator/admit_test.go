package orchestrator

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

func TestAdmits(t *testing.T) {
	for _, c := range []struct {
		name                      string
		limit, starting, ahead, n int
		want                      bool
	}{
		{"no limit", 0, 100, 50, 3, true},
		{"a free slot: never waits", 8, 0, 0, 3, true},
		{"fits beside those starting", 8, 5, 0, 3, true},
		{"would pass the limit", 8, 6, 0, 3, false},
		{"others wait before it, even if it fits", 8, 1, 1, 1, false},
		{"larger than the limit, nothing starting: goes alone", 8, 0, 0, 20, true},
		{"larger than the limit beside others: waits", 8, 1, 0, 20, false},
	} {
		if got := admits(c.limit, c.starting, c.ahead, c.n); got != c.want {
			t.Errorf("%s: admits(%d, %d, %d, %d) = %v, want %v", c.name, c.limit, c.starting, c.ahead, c.n, got, c.want)
		}
	}
}

func TestRolloutStarts(t *testing.T) {
	for _, c := range []struct {
		name string
		fns  []FunctionResult
		want int
	}{
		{"a new app of three", []FunctionResult{{Change: Created, Containers: 1}, {Change: Created, Containers: 2}, {Change: Created, Containers: 1}}, 4},
		{"only what changes", []FunctionResult{{Change: Updated, Containers: 2}, {Change: Unchanged, Containers: 5}, {Change: Removed}}, 2},
		{"callable and scheduled functions start nothing at deploy: the evaluation still counts", []FunctionResult{{Change: Created}}, 1},
	} {
		if got := rolloutStarts(c.fns); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}

// The queue admits first come first served: a release lets the head in,
// and the ones behind it as long as they fit; a waiter whose context
// ends leaves its place.
func TestRolloutQueue(t *testing.T) {
	q := &rolloutQueue{limit: 4}
	ctx, stop := context.WithCancel(context.Background())
	defer stop() // the rollouts still waiting leave
	first, waited, err := q.enter(ctx, 3, nil)
	if err != nil || waited != 0 {
		t.Fatalf("the first rollout waited %s, %v", waited, err)
	}
	admitted := make(chan string, 3)
	var waits []queueWait
	enter := func(name string, ctx context.Context, n int) {
		queued := make(chan struct{})
		go func() {
			_, _, err := q.enter(ctx, n, func(w queueWait) { waits = append(waits, w); close(queued) })
			if err != nil {
				name += ": " + err.Error()
			}
			admitted <- name
		}()
		select {
		case <-queued:
		case a := <-admitted:
			t.Fatalf("%s admitted at once", a)
		}
	}
	enter("big", ctx, 4)   // waits: 3 + 4 > 4
	enter("small", ctx, 1) // fits beside the first, but big is ahead
	gone, cancel := context.WithCancel(ctx)
	enter("gone", gone, 1)
	if w := waits[1]; w != (queueWait{Starting: 3, Limit: 4, Ahead: 1}) {
		t.Errorf("small's wait = %+v", w)
	}
	cancel()
	if got := <-admitted; got != "gone: context canceled" {
		t.Fatalf("got %q, want gone to leave the queue", got)
	}
	first()
	first() // a second release gives nothing back twice
	if got := <-admitted; got != "big" {
		t.Fatalf("got %q, want big first", got)
	}
	// Admission happens in the release: small still waits, 4 of 4 start.
	q.mu.Lock()
	starting, waiting := q.starting, len(q.waiting)
	q.mu.Unlock()
	if starting != 4 || waiting != 1 {
		t.Errorf("starting %d with %d waiting, want 4 and 1 (small)", starting, waiting)
	}
}

// A deploy that finds this server's rollouts at the limit waits before
// anything of it reaches Nomad, with its version pending and the wait in
// its history, and rolls out once a place is free; a deploy with a free
// place never waits.
func TestRolloutWaitsItsTurn(t *testing.T) {
	h := newHarness(t)
	if res := h.mustDeploy(shopSpec("hi")); res.Queued != 0 {
		t.Errorf("a deploy with a free place waited %s", res.Queued)
	}
	h.o.rollouts.limit = 1
	depID, shopDone := h.startDeploy(context.Background(), shopSpec("hello"))

	blog := []byte(strings.ReplaceAll(string(shopSpec("hi")), `"shop"`, `"blog"`))
	type result struct {
		res *DeployResult
		err error
	}
	blogDone := make(chan result, 1)
	go func() {
		res, err := h.deploy(blog)
		blogDone <- result{res, err}
	}()
	v := h.awaitVersion("dev--blog", 1, func(v *VersionRecord) bool { return len(v.Events) > 0 })
	if v.Status != StatusPending || !strings.HasPrefix(v.Events[0].What, "queued: ") || !strings.Contains(v.Events[0].What, "starting 1 containers (1 at once)") {
		t.Errorf("the waiting version is %s with %+v", v.Status, v.Events)
	}
	if n := h.nomad.count("register dev--blog") + h.nomad.count("plan dev--blog"); n != 0 {
		t.Errorf("a waiting rollout reached Nomad (%d calls)", n)
	}

	h.nomad.setDeployment(depID, func(d *nomad.Deployment) { d.Status = nomad.DeploymentStatusSuccessful })
	if err := <-shopDone; err != nil {
		t.Fatal(err)
	}
	r := <-blogDone
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.res.Queued <= 0 || r.res.Queued > r.res.Duration {
		t.Errorf("queued %s of %s", r.res.Queued, r.res.Duration)
	}
	v = h.awaitVersion("dev--blog", 1, func(v *VersionRecord) bool { return v.Status == StatusLive })
	var what []string
	for _, e := range v.Events {
		what = append(what, strings.Fields(e.What)[0])
	}
	if !slices.Equal(what, []string{"queued:", "admitted"}) {
		t.Errorf("history of the version that waited: %+v", v.Events)
	}
}

// A version still waiting when its deploy's timeout ends fails without
// reaching Nomad, and releases what it claimed.
func TestRolloutTimesOutInTheQueue(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	h.o.rollouts.limit = 1
	_, shopDone := h.startDeploy(context.Background(), shopSpec("hello"))
	defer func() { h.store.loseLock("dev--shop"); <-shopDone }()

	_, err := h.o.Deploy(context.Background(), ci, DeployRequest{Spec: webApp("blog", "blog.example.com"), Filename: "app.hcl", Timeout: 50 * time.Millisecond})
	var re *RolloutError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "nothing of it was registered") {
		t.Fatalf("err = %v, want a RolloutError saying nothing was registered", err)
	}
	if n := h.nomad.count("register dev--blog") + h.nomad.count("plan dev--blog"); n != 0 {
		t.Errorf("a rollout that never got its turn reached Nomad (%d calls)", n)
	}
	if got := h.statuses("dev--blog"); !slices.Equal(got, []string{"1:failed"}) {
		t.Errorf("history = %v", got)
	}
	if got := h.store.heldHosts("dev--blog"); len(got) != 0 {
		t.Errorf("the failed version holds %v", got)
	}
}

// awaitVersion polls version n of jobID until ok accepts it (2s at most).
func (h *harness) awaitVersion(jobID string, n int, ok func(*VersionRecord) bool) *VersionRecord {
	h.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		v, _ := h.store.Version(context.Background(), jobID, 1, n)
		if v != nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("version %d of %s is %+v", n, jobID, v)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
