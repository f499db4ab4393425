package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// child is a process that notes the signal it gets in a file, then exits 3.
func child(t *testing.T) (*exec.Cmd, string) {
	t.Helper()
	mark := filepath.Join(t.TempDir(), "signalled")
	ready := mark + ".ready"
	cmd := exec.Command("sh", "-c", `trap 'echo $1 > `+mark+`; exit 3' INT TERM; touch `+ready+`; while :; do sleep 0.02; done`, "sh", "got")
	return cmd, mark
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSupervisorDrainsBeforeTheSignal(t *testing.T) {
	cmd, mark := child(t)
	release := make(chan struct{})
	var signalledDuringDrain bool
	sup := &Supervisor{Grace: time.Minute, Fallback: time.Second, Log: &syncBuf{}, Drain: func(ctx context.Context) error {
		<-release
		_, err := os.Stat(mark)
		signalledDuringDrain = err == nil
		return nil
	}}
	sigs := make(chan os.Signal, 1)
	code := make(chan int, 1)
	go func() { code <- sup.Run(cmd, sigs) }()
	waitFile(t, mark+".ready")
	sigs <- syscall.SIGINT
	select {
	case c := <-code:
		t.Fatalf("the child ended (%d) during the drain", c)
	case <-time.After(100 * time.Millisecond):
		// Not a timed assertion of speed: the drain is held open, so the
		// child must still run whatever the wait.
	}
	close(release)
	if c := <-code; c != 3 {
		t.Errorf("exit code %d, want the child's 3", c)
	}
	if signalledDuringDrain {
		t.Error("the child got the signal before the drain ended")
	}
	if b, _ := os.ReadFile(mark); !strings.Contains(string(b), "got") {
		t.Error("the child never got the signal")
	}
}

func TestSupervisorGraceBoundsTheDrain(t *testing.T) {
	cmd, _ := child(t)
	sup := &Supervisor{Grace: 50 * time.Millisecond, Drain: func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	}}
	sigs := make(chan os.Signal, 1)
	sigs <- syscall.SIGTERM
	if c := sup.Run(cmd, sigs); c != 3 {
		t.Errorf("exit code %d, want 3", c)
	}
}

func TestSupervisorFallsBackWhenTheDrainFails(t *testing.T) {
	cmd, _ := child(t)
	log := &syncBuf{}
	sup := &Supervisor{Grace: time.Minute, Fallback: 10 * time.Millisecond, Log: log, Drain: func(ctx context.Context) error {
		return errors.New("connection refused")
	}}
	sigs := make(chan os.Signal, 1)
	sigs <- syscall.SIGTERM
	if c := sup.Run(cmd, sigs); c != 3 {
		t.Errorf("exit code %d, want 3", c)
	}
	if !strings.Contains(log.String(), "connection refused") {
		t.Errorf("log says nothing of the failure: %s", log)
	}
}

func TestSupervisorExitCodes(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want int
	}{
		{[]string{"true"}, 0},
		{[]string{"sh", "-c", "exit 7"}, 7},
		{[]string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
		{[]string{"/nonexistent/binary"}, 127},
	} {
		sup := &Supervisor{}
		if got := sup.Run(exec.Command(tc.argv[0], tc.argv[1:]...), nil); got != tc.want {
			t.Errorf("%v: exit code %d, want %d", tc.argv, got, tc.want)
		}
	}
}

func TestSupervisorPassesOtherSignals(t *testing.T) {
	mark := filepath.Join(t.TempDir(), "hup")
	cmd := exec.Command("sh", "-c", `trap 'touch `+mark+`; exit 0' HUP; touch `+mark+`.ready; while :; do sleep 0.02; done`)
	drained := false
	sup := &Supervisor{Grace: time.Minute, Drain: func(ctx context.Context) error { drained = true; return nil }}
	sigs := make(chan os.Signal, 1)
	code := make(chan int, 1)
	go func() { code <- sup.Run(cmd, sigs) }()
	waitFile(t, mark+".ready")
	sigs <- syscall.SIGHUP
	if c := <-code; c != 0 {
		t.Errorf("exit code %d, want 0", c)
	}
	if drained {
		t.Error("SIGHUP drained")
	}
}

func TestHTTPDrain(t *testing.T) {
	var gotWait string
	answer := `{"in_flight":0,"proxies":2,"failed":0}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotWait = r.URL.Query().Get("wait")
		if r.Method != http.MethodPost || r.URL.Query().Get("sig") != "s" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		w.Write([]byte(answer))
	}))
	defer srv.Close()
	log := &syncBuf{}
	logf := func(f string, a ...any) { fmt.Fprintf(log, f+"\n", a...) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := HTTPDrain(srv.URL+"/v1/agent/drain?job=j&alloc=a&sig=s", srv.Client(), logf)(ctx); err != nil {
		t.Fatal(err)
	}
	if d, err := time.ParseDuration(gotWait); err != nil || d > 10*time.Second || d < 5*time.Second {
		t.Errorf("wait = %q, want a little under the 10s deadline", gotWait)
	}
	if err := HTTPDrain(srv.URL+"/v1/agent/drain?job=j&alloc=a&sig=x", srv.Client(), logf)(ctx); err == nil {
		t.Error("a refused drain is no error")
	}
	answer = `{"in_flight":0,"proxies":0,"failed":2}`
	if err := HTTPDrain(srv.URL+"/v1/agent/drain?job=j&alloc=a&sig=s", srv.Client(), logf)(ctx); err == nil {
		t.Error("a drain no proxy answered is no error")
	}
}
