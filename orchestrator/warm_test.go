package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/queue"
	nomad "github.com/hashicorp/nomad/api"
)

// warmCalc has a web function, a warm callable (echo) and an isolated
// one (sum).
const warmCalc = `app "calc" {
  workspace = "dev"
  function "web" {
    command = "node"
    web {}
  }
  function "echo" {
    command        = "node"
    callable       = true
    min_containers = 2
  }
  function "sum" {
    command  = "node"
    callable = true
    isolated = true
  }
}
`

// warmHarness is a harness whose orchestrator has a real queue (an
// in-process NATS server) and a worker serving echo that answers its
// input upper-cased, exit 0.
func warmHarness(t *testing.T) (*harness, *queue.Queue) {
	t.Helper()
	h := newHarness(t)
	emb, err := queue.StartEmbedded(queue.EmbeddedConfig{Dir: t.TempDir(), Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	q, err := queue.Connect(ctx, queue.Config{URL: emb.URL(), Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	h.o.calls = QueueCalls{Queue: q}
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	w := &queue.Worker{Q: q, Func: queue.Func{Workspace: "dev", AppJobID: "dev--calc", Name: "echo"}, MaxInputs: 4,
		Run: func(ctx context.Context, id string, in []byte) *api.CallResult {
			if string(in) == `"slow"` {
				<-ctx.Done()
			}
			return &api.CallResult{Output: strings.ToUpper(string(in))}
		}}
	go func() { defer close(done); _ = w.Serve(wctx, time.Second) }()
	t.Cleanup(func() { stop(); <-done })
	return h, q
}

func TestWarmCallable(t *testing.T) {
	h, _ := warmHarness(t)
	h.mustDeploy([]byte(warmCalc))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	j, _ := h.nomad.Job(ctx, jobs.CallableID("dev--calc", "echo"))
	if j == nil || *j.Type != "service" || j.Meta[jobs.MetaWorkers] != "true" || *j.TaskGroups[0].Count != 2 {
		t.Fatalf("echo's workers: %+v", j)
	}
	ref := AppRef{App: "calc"}

	res, err := h.o.Call(ctx, ci, CallRequest{AppRef: ref, Function: "echo", Input: []byte(`"hi"`)})
	if err != nil || res.Output != `"HI"` || res.CallID == "" || res.Attempts != 1 {
		t.Fatalf("warm call: %+v %v", res, err)
	}

	st, err := h.o.Spawn(ctx, ci, CallRequest{AppRef: ref, Function: "echo", Input: []byte(`"later"`)})
	if err != nil || st.State != queue.Queued {
		t.Fatalf("spawn: %+v %v", st, err)
	}
	got, err := h.o.CallGet(ctx, ci, st.ID, 10*time.Second)
	if err != nil || got.State != queue.Done || got.Result.Output != `"LATER"` {
		t.Fatalf("get --wait: %+v %v", got, err)
	}
	var nf *NotFoundError
	other := Caller{Name: "other", Workspace: "shop"}
	if _, err := h.o.CallGet(ctx, other, st.ID, 0); !errors.As(err, &nf) {
		t.Errorf("another workspace's call: %v, want not found", err)
	}
	if _, err := h.o.Call(ctx, other, CallRequest{AppRef: AppRef{App: "calc", Workspace: "dev"}, Function: "echo"}); !errors.As(err, &nf) {
		t.Errorf("another workspace's function: %v, want not found", err)
	}
	if _, err := h.o.CallGet(ctx, ci, "c00000000001aaaaaaaaaaaaaaaaaaaaaa", 0); !errors.As(err, &nf) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an old call: %v, want expired", err)
	}
	if _, err := h.o.Call(ctx, ci, CallRequest{AppRef: ref, Function: "nope"}); !errors.As(err, &nf) || !strings.Contains(err.Error(), "echo, sum") {
		t.Errorf("unknown function: %v", err)
	}
	var bad *BadRequestError
	if _, err := h.o.Call(ctx, ci, CallRequest{AppRef: ref, Function: "echo", Input: []byte(`{`)}); !errors.As(err, &bad) {
		t.Errorf("broken JSON: %v", err)
	}
	var big *InputTooLargeError
	if _, err := h.o.Call(ctx, ci, CallRequest{AppRef: ref, Function: "echo", Input: make([]byte, queue.MaxInput+1)}); !errors.As(err, &big) || !big.Warm {
		t.Errorf("over 16 MiB: %v", err)
	}
	if _, err := h.o.Spawn(ctx, ci, CallRequest{AppRef: ref, Function: "sum"}); !errors.As(err, &bad) {
		t.Errorf("spawn of an isolated function: %v, want a bad request", err)
	}

	slow, err := h.o.Spawn(ctx, ci, CallRequest{AppRef: ref, Function: "echo", Input: []byte(`"slow"`)})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := h.o.CallCancel(ctx, ci, slow.ID); err != nil || c.State != queue.Cancelled {
		t.Fatalf("cancel: %+v %v", c, err)
	}
	if c, err := h.o.CallGet(ctx, ci, slow.ID, 0); err != nil || c.State != queue.Cancelled || c.Result == nil || c.Result.Error == "" {
		t.Fatalf("after cancel: %+v %v", c, err)
	}

	var inputs [][]byte
	for i := range 200 {
		inputs = append(inputs, []byte(fmt.Sprintf(`"m%d"`, i)))
	}
	next := 0
	err = h.o.Map(ctx, ci, MapRequest{AppRef: ref, Function: "echo", Inputs: inputs}, func(item api.MapItem) error {
		if item.Index != next || item.Output != fmt.Sprintf(`"M%d"`, next) {
			return fmt.Errorf("item %d: %+v", next, item)
		}
		next++
		return nil
	})
	if err != nil || next != len(inputs) {
		t.Fatalf("map: %d results, %v", next, err)
	}
	if err := h.o.Map(ctx, ci, MapRequest{AppRef: ref, Function: "echo", Inputs: [][]byte{[]byte("1"), []byte("{")}}, func(api.MapItem) error {
		t.Error("a map with a bad line ran")
		return nil
	}); !errors.As(err, &bad) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a map with a bad line: %v", err)
	}
}

func TestWorkersDown(t *testing.T) {
	failed := &nomad.AllocationListStub{ID: "a1", ClientStatus: "failed", DesiredStatus: "run", ModifyTime: 2,
		TaskStates: map[string]*nomad.TaskState{"echo": {Events: []*nomad.TaskEvent{
			{Type: nomad.TaskTerminated, DisplayMessage: "Exit Code: 127"},
			{Type: nomad.TaskNotRestarting, DisplayMessage: "Exceeded allowed attempts 2 in interval 5m0s", FailsTask: true}}}}}
	old := &nomad.AllocationListStub{ID: "a0", ClientStatus: "complete", DesiredStatus: "stop", ModifyTime: 1}
	for _, tt := range []struct {
		name   string
		stubs  []*nomad.AllocationListStub
		down   bool
		reason string
	}{
		{"none yet", nil, false, ""},
		{"one running", []*nomad.AllocationListStub{failed, {ClientStatus: "running"}}, false, ""},
		{"one pending", []*nomad.AllocationListStub{old, {ClientStatus: "pending"}}, false, ""},
		{"all failed", []*nomad.AllocationListStub{old, failed}, true, "task echo: Exceeded allowed attempts 2 in interval 5m0s (allocation a1)"},
		{"only stopped ones: replaced", []*nomad.AllocationListStub{old}, false, ""},
		{"lost", []*nomad.AllocationListStub{old, {ID: "a2", ClientStatus: "lost", DesiredStatus: "run"}}, true, "its workers are lost (allocation a2)"},
	} {
		down, why := workersDown(tt.stubs)
		if down != tt.down || !strings.Contains(why, tt.reason) {
			t.Errorf("%s: down %v (%q), want %v (%q)", tt.name, down, why, tt.down, tt.reason)
		}
	}
}
