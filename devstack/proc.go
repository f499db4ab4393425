package devstack

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a process the stack started.
type Proc struct {
	Name string   `json:"name"`
	PID  int      `json:"pid"`
	Args []string `json:"args"`
	// Env is what the stack added to the environment (never secrets).
	Env []string `json:"env,omitempty"`
	Log string   `json:"log"`
	// Addr is where it serves, for `caravan dev status`.
	Addr string `json:"addr"`
	// StartTicks is when it started (clock ticks after boot), so a later
	// process with the same pid and program is not taken for it.
	StartTicks uint64 `json:"start_ticks,omitempty"`

	exited chan error
}

// start runs args as a detached process (its own process group, so it
// outlives `caravan dev up`) with output to logs/<name>.log.
func start(stateDir, name, addr string, args, env []string) (*Proc, error) {
	closeInherited()
	logPath := filepath.Join(stateDir, "logs", name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = stateDir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	closeInheritedOnExec()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Proc{Name: name, PID: cmd.Process.Pid, Args: args, Env: env, Log: logPath, Addr: addr, exited: make(chan error, 1)}
	p.StartTicks, _ = startTicks(p.PID)
	go func() { p.exited <- cmd.Wait() }()
	return p, nil
}

// closeInheritedOnExec marks every descriptor above stderr close-on-exec
// (Go opens its own so already; these are the ones this process
// inherited), so the stack's processes, which outlive the process that
// starts them, hold none of them. `flock /tmp/caravan-e2e.lock go test`
// hands its lock to the test binary that way: without this, a stack that
// a killed run left behind kept the lock, and every later run waited on
// it forever (its reaping, in the next Up, never came).
func closeInheritedOnExec() {
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// Exited reports whether the process has ended, with a tail of its log.
func (p *Proc) Exited() error {
	if p.exited != nil {
		select {
		case err := <-p.exited:
			p.exited <- err
			return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.Name, err, p.Log, tail(p.Log, 15))
		default:
			return nil
		}
	}
	if !p.Alive() {
		return fmt.Errorf("%s (pid %d) is not running; see %s", p.Name, p.PID, p.Log)
	}
	return nil
}

// Alive reports whether p's pid still runs the program the stack started
// (and not some later process that reused the pid).
func (p *Proc) Alive() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
	if err != nil || len(p.Args) == 0 {
		return false
	}
	first, _, _ := bytes.Cut(b, []byte{0})
	if string(first) != p.Args[0] {
		return false
	}
	if p.StartTicks != 0 {
		if t, err := startTicks(p.PID); err != nil || t != p.StartTicks {
			return false
		}
	}
	return processRunning(p.PID)
}

// Stop ends p and every process below it (Nomad's executors and the tasks
// they run, for instance): SIGTERM, then SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) error {
	if !p.Alive() {
		return nil
	}
	tree := append([]int{p.PID}, descendants(p.PID)...)
	for _, pid := range tree {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !anyAlive(tree) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	tree = append(tree, descendants(p.PID)...)
	for _, pid := range tree {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if anyAliveAfter(tree, 5*time.Second) {
		return fmt.Errorf("%s (pid %d) did not stop", p.Name, p.PID)
	}
	return nil
}

// Kill ends p and every process below it at once with SIGKILL, as a
// machine that loses power: nothing gets to clean up (a Nomad client's
// tasks die with it and nobody deregisters them).
func (p *Proc) Kill() error {
	if !p.Alive() {
		return nil
	}
	tree := append([]int{p.PID}, descendants(p.PID)...)
	_ = syscall.Kill(-p.PID, syscall.SIGSTOP) // its process group: nothing forks meanwhile
	tree = append(tree, descendants(p.PID)...)
	for _, pid := range tree {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = syscall.Kill(-p.PID, syscall.SIGKILL)
	if anyAliveAfter(tree, 5*time.Second) {
		return fmt.Errorf("%s (pid %d) did not die", p.Name, p.PID)
	}
	return nil
}

func anyAlive(pids []int) bool {
	for _, pid := range pids {
		if processRunning(pid) {
			return true
		}
	}
	return false
}

func anyAliveAfter(pids []int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !anyAlive(pids) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return anyAlive(pids)
}

// processRunning is true for a live, non-zombie process.
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, ok := bytes.Cut(b, []byte(") "))
	return ok && len(rest) > 0 && rest[0] != 'Z'
}

// descendants lists every process below pid, from /proc.
func descendants(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		_, rest, ok := bytes.Cut(b, []byte(") "))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], child)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// unmountUnder unmounts whatever is mounted below dir, deepest first:
// the secrets/ and private/ tmpfs a Nomad client mounts in each task's
// directory stay mounted when the client stops (its allocations are meant
// to outlive it), and the state directory could not be removed.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			points = append(points, f[1])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

var errNotUp = errors.New("no local stack is running")

// closeInherited marks close-on-exec every file descriptor above stderr
// that this process inherited open: Go opens its own close-on-exec, but
// passes on the others to every child. A stack started under flock(1)
// (`flock /tmp/caravan-e2e.lock go test ./e2e/`) would otherwise hand the
// lock's descriptor to Consul, Nomad, Traefik and the rest, and a stack
// left running after its test binary died would hold the lock for good.
func closeInherited() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}
