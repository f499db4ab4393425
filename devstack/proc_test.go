package devstack

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caravanhq/caravan/router"
)

func TestStopEndsTheWholeTree(t *testing.T) {
	dir := t.TempDir()
	// A parent that ignores SIGTERM (as an agent busy shutting down might)
	// with two children of its own.
	p, err := start(dir, "tree", "", []string{"/bin/sh", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	deadline := time.Now().Add(5 * time.Second)
	for len(kids) < 2 && time.Now().Before(deadline) {
		kids = descendants(p.PID)
		time.Sleep(20 * time.Millisecond)
	}
	if len(kids) < 2 {
		t.Fatalf("descendants(%d) = %v, want two sleeps", p.PID, kids)
	}
	if err := p.Stop(500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, pid := range append(kids, p.PID) {
		if processRunning(pid) {
			t.Errorf("pid %d still runs after Stop", pid)
		}
	}
}

// A descriptor this process inherited without close-on-exec (flock(1)'s
// lock, under `flock LOCK go test`) does not reach the stack's processes.
func TestChildrenDoNotInheritDescriptors(t *testing.T) {
	dir := t.TempDir()
	fd, err := syscall.Open(filepath.Join(dir, "lock"), syscall.O_CREAT|syscall.O_RDWR, 0o644) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	p, err := start(dir, "fds", "", []string{"/bin/sh", "-c", "ls /proc/$$/fd; echo done"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(string(out), "done") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		out, _ = os.ReadFile(p.Log)
	}
	for _, f := range strings.Fields(string(out)) {
		if f == strconv.Itoa(fd) {
			t.Fatalf("the child holds descriptor %d: %q", fd, out)
		}
	}
	if !strings.Contains(string(out), "done") {
		t.Fatalf("the child's output: %q", out)
	}
}

func TestAliveIgnoresAReusedPID(t *testing.T) {
	// Our own pid runs, but not the program the record names.
	p := &Proc{Name: "nomad", PID: os.Getpid(), Args: []string{"/no/such/nomad"}}
	if p.Alive() {
		t.Fatal("Alive is true for a pid that runs another program")
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatalf("Stop of a reused pid: %v", err)
	}
	self, _ := os.Executable()
	if !(&Proc{PID: os.Getpid(), Args: []string{self}}).Alive() {
		t.Fatal("Alive is false for this very process")
	}
}

func TestExitedReportsTheLogTail(t *testing.T) {
	p, err := start(t.TempDir(), "crash", "", []string{"/bin/sh", "-c", "echo boom >&2; exit 3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Exited() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	err = p.Exited()
	if err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Exited() = %v, want the exit status and the log's last line", err)
	}
}

func TestRandomPortsAreDistinct(t *testing.T) {
	p, err := pickPorts(true)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]string{}
	for _, e := range p.all() {
		if *e.ptr == 0 {
			t.Errorf("%s has no port", e.name)
		}
		if other, dup := seen[*e.ptr]; dup {
			t.Errorf("%s and %s share port %d", e.name, other, *e.ptr)
		}
		seen[*e.ptr] = e.name
	}
}

func TestConfigsPointAtEachOther(t *testing.T) {
	p, _ := pickPorts(true)
	tr := traefikConfig(p, "/state", "", "")
	for _, want := range []string{addr(p.ConsulHTTP), addr(p.TraefikWebsecure), "exposedByDefault: false", "watch: true",
		"https://" + addr(p.Pebble) + "/dir", "tlsChallenge"} {
		if !strings.Contains(tr, want) {
			t.Errorf("traefik config lacks %q", want)
		}
	}
	if n := nomadConfig(p, "/state", nil); !strings.Contains(n, addr(p.ConsulHTTP)) || !strings.Contains(n, "fingerprint.denylist") {
		t.Errorf("nomad config does not point at Consul or lacks the fingerprint denylist:\n%s", n)
	}
	// caravan server's default routes (what `caravan dev up` and the e2e
	// tests deploy with) name this Traefik's resolvers, plugin, entry point
	// and KV root.
	d := router.DefaultConfig
	if d.CertResolver != CertResolver || d.DNSCertResolver != DNSCertResolver || d.BodyLimitPlugin != BodyLimitPlugin {
		t.Errorf("router.DefaultConfig %+v names other resolvers or plugin than the stack's Traefik", d)
	}
	for _, want := range []string{"websecure:", "rootKey: " + d.KVRoot} {
		if !strings.Contains(tr, want) || !strings.Contains(tr, d.EntryPoint) {
			t.Errorf("traefik config lacks %q (router.DefaultConfig: %+v)", want, d)
		}
	}
	// Pebble validates TLS-ALPN-01 on Traefik's HTTPS port.
	if pc := pebbleConfig(p, "/state"); !strings.Contains(pc, `"tlsPort": `+itoa(p.TraefikWebsecure)) {
		t.Errorf("pebble config does not validate on Traefik's port:\n%s", pc)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// A descriptor this process inherited (a flock lock, say) does not reach
// the stack's processes, which outlive it.
func TestStartLeavesInheritedDescriptorsBehind(t *testing.T) {
	dir := t.TempDir()
	fd, err := syscall.Open(filepath.Join(dir, "lock"), syscall.O_CREAT|syscall.O_RDWR, 0o600) // no O_CLOEXEC: as inherited
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	p, err := start(dir, "fds", "", []string{"/bin/sh", "-c", "ls -l /proc/$$/fd"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Exited() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(p.Log)
	if strings.Contains(string(b), filepath.Join(dir, "lock")) {
		t.Fatalf("the started process holds the inherited descriptor:\n%s", b)
	}
	if !strings.Contains(string(b), "fds.log") {
		t.Fatalf("listing of its descriptors missing:\n%s", b)
	}
}

func TestPortTaken(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{errors.New("nomad did not become healthy: nomad exited (exit status 1); last lines of nomad.log:\n==> Error starting agent: server setup failed: Failed to start RPC layer: listen tcp 127.0.0.1:36919: bind: address already in use"), true},
		{errors.New("consul did not become healthy: timed out"), false},
		{errors.New("nomad exited (exit status 1): invalid configuration"), false},
	}
	for _, c := range cases {
		if got := portTaken(c.err); got != c.want {
			t.Errorf("portTaken(%q) = %v, want %v", c.err, got, c.want)
		}
	}
}
