package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravanhq/caravan/orchestrator"
)

const serveSpec = `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    args    = ["-e", "1"]
    web {}
  }
}
`

// TestServeWritesFromOneGoroutineAtATime: serve prints a redeploy while
// the log stream of the first deploy is being copied to the same writer.
// Run with -race: unserialized writes to the buffer are a data race.
func TestServeWritesFromOneGoroutineAtATime(t *testing.T) {
	path := writeSpec(t, serveSpec)
	var deploys, streams atomic.Int32
	redeployed, secondStream := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hasEveryBundle(w, r) {
			return
		}
		switch r.Method + " " + r.URL.Path {
		case "POST /v1/deploy":
			n := deploys.Add(1)
			json.NewEncoder(w).Encode(orchestrator.DeployResult{App: "hello", Workspace: "dev", Version: int(n), Changed: true})
			if n == 2 {
				close(redeployed)
			}
		case "GET /v1/apps/hello/logs":
			// A log line every millisecond until serve hangs up.
			n := streams.Add(1)
			for i := 0; r.Context().Err() == nil; i++ {
				fmt.Fprintf(w, "web: log line %d\n", i)
				w.(http.Flusher).Flush()
				if n == 2 && i == 20 {
					close(secondStream)
				}
				time.Sleep(time.Millisecond)
			}
		case "POST /v1/apps/hello/stop":
			json.NewEncoder(w).Encode(orchestrator.AppRecord{App: "hello", Workspace: "dev"})
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()

	var out, errOut bytes.Buffer
	app := newApp(&out, &errOut)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- app.RunContext(ctx, []string{"caravan", "--state-dir", t.TempDir(), "--addr", srv.URL, "--token", "cvn_x",
			"serve", "--poll", "10ms", path})
	}()
	// Change the spec until serve redeploys it (its first deploy may not
	// have happened yet when the first change is made).
	deadline := time.After(20 * time.Second)
	for i := 0; ; i++ {
		if err := os.WriteFile(path, []byte(serveSpec+strings.Repeat("\n", i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
		select {
		case <-redeployed:
		case <-time.After(50 * time.Millisecond):
			continue
		case <-deadline:
			t.Fatal("serve did not redeploy a changed spec")
		}
		break
	}
	// The redeploy's stream runs while serve prints its goodbye.
	select {
	case <-secondStream:
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not follow the logs of its redeploy")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, errOut.String())
	}
	// serve has returned: nothing writes to out any more.
	for _, want := range []string{"↻ Change detected, redeploying...\n", "web: log line 0\n", "✓ Removed everything serve created.\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("serve output lacks %q:\n%s", want, out.String())
		}
	}
}
