package devstack

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	owner := &ProcID{PID: 10, StartTicks: 5, BootID: "b"}
	live, dead := &Proc{Name: "nomad", PID: 11}, &Proc{Name: "consul", PID: 12}
	for _, tc := range []struct {
		name       string
		stack      Stack
		ownerAlive bool
		want       verdict
	}{
		{"owner alive: another run's live stack", Stack{Owner: owner, Procs: []*Proc{live, dead}}, true, keep},
		{"owner gone, a process runs", Stack{Owner: owner, Procs: []*Proc{dead, live}}, false, reap},
		{"owner gone, nothing runs", Stack{Owner: owner, Procs: []*Proc{dead}}, false, forget},
		{"owner alive, nothing runs", Stack{Owner: owner, Procs: []*Proc{dead}}, true, forget},
		{"owner gone, no process recorded yet", Stack{Owner: owner}, false, forget},
		{"detached (caravan dev up), runs", Stack{Procs: []*Proc{live}}, false, keep},
		{"detached, nothing runs", Stack{Procs: []*Proc{dead}}, false, forget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judge(&tc.stack,
				func(id ProcID) bool {
					if id != *owner {
						t.Fatalf("asked about %+v, not the owner", id)
					}
					return tc.ownerAlive
				},
				func(p *Proc) bool { return p == live })
			if got != tc.want {
				t.Fatalf("judge = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestIdentityTellsAReusedPIDApart(t *testing.T) {
	self, err := identify(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !running(self) {
		t.Fatal("this process is not running by its own identity")
	}
	later := self
	later.StartTicks++
	if running(later) {
		t.Fatal("a process that started at another time is taken for this one")
	}
	exe, _ := os.Executable()
	if (&Proc{PID: os.Getpid(), Args: []string{exe}, StartTicks: self.StartTicks + 1}).Alive() {
		t.Fatal("Alive is true for the same pid and program started at another time")
	}
}

// helperOwner is set in the environment of the process that
// TestReapStopsWhatADeadOwnerLeft starts as the owner of a stack.
const helperOwner = "CARAVAN_TEST_STACK_OWNER"

// TestHelperStackOwner is not a test: run by TestReapStopsWhatADeadOwnerLeft,
// it records a stack of sleeps as Up records a stack, prints its pids, and
// waits to be killed.
func TestHelperStackOwner(t *testing.T) {
	dir := os.Getenv(helperOwner)
	if dir == "" {
		t.Skip("run by TestReapStopsWhatADeadOwnerLeft")
	}
	s := &Stack{StateDir: filepath.Join(dir, "state")}
	if err := s.register(filepath.Join(dir, "registry")); err != nil {
		t.Fatal(err)
	}
	ready := func(context.Context) error { return nil }
	// A lone process, and one with a child of its own (as Nomad has its
	// executors and their tasks).
	for name, args := range map[string][]string{"agent": {sleepPath(t), "300"}, "tree": {"/bin/sh", "-c", "sleep 300 & wait"}} {
		if err := s.StartProcess(context.Background(), name, "", args, nil, ready); err != nil {
			t.Fatal(err)
		}
	}
	var pids []int
	deadline := time.Now().Add(5 * time.Second)
	for len(pids) < 3 && time.Now().Before(deadline) {
		pids = nil
		for _, p := range s.Procs {
			pids = append(append(pids, p.PID), descendants(p.PID)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Println("pids", strings.Trim(fmt.Sprint(pids), "[]"))
	time.Sleep(time.Minute)
}

// TestReapStopsWhatADeadOwnerLeft: a process records a stack and is killed
// (as `go test` killed by a signal leaves its test binary's stack); the
// next run's reaping stops every process of it and forgets it, and leaves
// a stack whose owner lives alone.
func TestReapStopsWhatADeadOwnerLeft(t *testing.T) {
	dir := t.TempDir()
	registry := filepath.Join(dir, "registry")
	os.MkdirAll(filepath.Join(dir, "state"), 0o755)
	owner := exec.Command(os.Args[0], "-test.run=^TestHelperStackOwner$", "-test.v")
	owner.Env = append(os.Environ(), helperOwner+"="+dir)
	stdout, _ := owner.StdoutPipe()
	owner.Stderr = os.Stderr
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "pids "); ok {
			for _, f := range strings.Fields(rest) {
				var pid int
				fmt.Sscan(f, &pid)
				pids = append(pids, pid)
			}
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	t.Cleanup(func() {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if len(pids) != 3 {
		owner.Process.Kill()
		t.Fatalf("the owner started %v, want three processes", pids)
	}

	// A stack of this very process, which lives: not to be touched.
	mine := &Stack{StateDir: t.TempDir()}
	if err := mine.register(registry); err != nil {
		t.Fatal(err)
	}
	if err := mine.StartProcess(context.Background(), "mine", "", []string{sleepPath(t), "300"}, nil,
		func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mine.Down() })

	if err := ReapOrphans(registry, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if !processRunning(pid) {
			t.Fatalf("pid %d was stopped while its owner lives", pid)
		}
	}

	owner.Process.Kill()
	owner.Wait()
	var said strings.Builder
	if err := ReapOrphans(registry, &said); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if processRunning(pid) {
			t.Errorf("pid %d of the dead owner's stack still runs", pid)
		}
	}
	if !strings.Contains(said.String(), fmt.Sprintf("left by pid %d, which is gone", owner.Process.Pid)) {
		t.Errorf("reaping said %q", said.String())
	}
	if !mine.Procs[0].Alive() {
		t.Error("the live owner's stack was stopped")
	}
	left, _ := filepath.Glob(filepath.Join(registry, "*.json"))
	if len(left) != 1 || left[0] != mine.registryPath() {
		t.Errorf("registry holds %v, want only %s", left, mine.registryPath())
	}
	// The dead owner's state directory no longer says anything runs.
	b, _ := os.ReadFile(filepath.Join(dir, "state", "stack.json"))
	var s Stack
	if err := json.Unmarshal(b, &s); err != nil || len(s.Procs) != 0 {
		t.Errorf("the reaped stack's stack.json: %v %s", err, b)
	}

	if err := mine.Down(); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(registry, "*.json")); len(left) != 0 {
		t.Errorf("Down left its record: %v", left)
	}
}

// sleepPath is sleep's path, the program a recorded process is checked by.
func sleepPath(t *testing.T) string {
	p, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep:", err)
	}
	return p
}
