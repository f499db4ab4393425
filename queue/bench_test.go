//go:build bench

package queue

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// TestBenchQueueMap prints the queue's own map throughput, without a
// process per input: an in-process NATS (as caravan server embeds it) and
// 4 workers in this process whose runner returns at once. Beside
// e2e's TestBenchWarmCall map it says what the fork of each input costs
// (`just bench`; no stack needed).
func TestBenchQueueMap(t *testing.T) {
	emb, err := StartEmbedded(EmbeddedConfig{Dir: t.TempDir(), Token: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	connect := func() *Queue {
		q, err := Connect(ctx, Config{URL: emb.URL(), Token: "bench"})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	f := Func{Workspace: "bench", AppJobID: "bench--map", Name: "noop"}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{}, 4)
	for range 4 {
		w := &Worker{Q: connect(), Func: f, MaxInputs: 4, Run: func(context.Context, string, []byte) *api.CallResult { return &api.CallResult{} }}
		go func() { _ = w.Serve(wctx, time.Second); done <- struct{}{} }()
	}
	defer func() {
		stop()
		for range 4 {
			<-done
		}
	}()
	q := connect()
	defer q.Close()
	if err := q.Ensure(ctx, f, FuncConfig{}); err != nil {
		t.Fatal(err)
	}
	const n = 10000
	inputs := make([][]byte, n)
	for i := range n {
		inputs[i] = []byte(fmt.Sprint(i))
	}
	id := NewID()
	w, err := q.WatchMap(id)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	began := time.Now()
	if err := q.SubmitAll(ctx, f, func(i int) string { return fmt.Sprintf("%s.%d", id, i) }, inputs); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := w.Next(ctx, fmt.Sprintf("%s.%d", id, i)); err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	d := time.Since(began)
	fmt.Printf("%-44s %8.0f inputs/s  (%d inputs in %s)\n    %s\n", "the queue's own map throughput", float64(n)/d.Seconds(), n, d.Round(time.Millisecond),
		"SubmitAll then results in order, through an in-process NATS to 4 in-process workers of 4 slots whose runner forks nothing: "+
			"each input a JetStream publish, a pull, the result's request to caravan server's side (a KV create, an announcement, the reply) and an ack")
}

// TestBenchQueueCall prints the queue's own share of a warm call's round
// trip: Submit (with its record) and Wait, through an in-process NATS to
// one in-process worker whose runner forks nothing, one call at a time.
func TestBenchQueueCall(t *testing.T) {
	emb, err := StartEmbedded(EmbeddedConfig{Dir: t.TempDir(), Token: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	connect := func() *Queue {
		q, err := Connect(ctx, Config{URL: emb.URL(), Token: "bench"})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	f := Func{Workspace: "bench", AppJobID: "bench--call", Name: "noop"}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	w := &Worker{Q: connect(), Func: f, MaxInputs: 1, Run: func(context.Context, string, []byte) *api.CallResult { return &api.CallResult{} }}
	go func() { _ = w.Serve(wctx, time.Second); close(done) }()
	defer func() { stop(); <-done }()
	q := connect()
	defer q.Close()
	if err := q.Ensure(ctx, f, FuncConfig{}); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	took := make([]time.Duration, 0, n)
	for i := range n {
		began := time.Now()
		id := NewID()
		wt, err := q.Watch(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Submit(ctx, f, id, []byte(fmt.Sprint(i)), true); err != nil {
			t.Fatal(err)
		}
		if _, err := wt.Next(ctx, id); err != nil {
			t.Fatal(err)
		}
		wt.Stop()
		took = append(took, time.Since(began))
	}
	slices.Sort(took)
	fmt.Printf("%-44s p50 %8s  p99 %8s  max %8s  (%d calls)\n    %s\n", "the queue's own call round trip",
		took[n/2].Round(10*time.Microsecond), took[n*99/100].Round(10*time.Microsecond), took[n-1].Round(10*time.Microsecond), n,
		"Watch, Submit (a KV record and a JetStream publish), a worker's pull, a state request, the result's request to caravan server's side (a KV update, the announcement, the reply), in-process, no fork, no HTTP")
}
