package devstack

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The registry is a directory where every stack records itself (a copy of
// its stack.json, with the process that owns it), so that a later Up can
// stop what an interrupted run left: an e2e run's state directory is a new
// temporary one each time, and a run killed by a signal never reaches its
// deferred Down. A stack is reaped only when its owner is gone, never while
// the run that started it lives: two e2e runs, or `just up` beside
// `just test`, do not touch each other's stacks.

// DefaultRegistryDir is one directory per user under the temporary
// directory: every run of that user shares it, and no user can stop
// another's processes anyway.
func DefaultRegistryDir() string {
	return filepath.Join(os.TempDir(), "caravan-stacks-"+strconv.Itoa(os.Getuid()))
}

// ProcID names one process for its whole life: its pid, its start time
// in clock ticks after boot, and the boot, so a pid the kernel handed to a
// later process (or a later boot) is not taken for it.
type ProcID struct {
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"start_ticks"`
	BootID     string `json:"boot_id"`
}

// identify returns the identity of the process pid runs now.
func identify(pid int) (ProcID, error) {
	ticks, err := startTicks(pid)
	if err != nil {
		return ProcID{}, err
	}
	return ProcID{PID: pid, StartTicks: ticks, BootID: bootID()}, nil
}

// startTicks reads field 22 of /proc/<pid>/stat, the process's start time.
func startTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// fields from the last ") ".
	i := strings.LastIndex(string(b), ") ")
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// running reports whether id still names a live process.
func running(id ProcID) bool {
	now, err := identify(id.PID)
	return err == nil && now == id && processRunning(id.PID)
}

// verdict is what a later run does with a recorded stack.
type verdict int

const (
	keep   verdict = iota // its owner lives, or it outlives its starter (`caravan dev up`)
	reap                  // its owner is gone: stop its processes, forget it
	forget                // nothing of it runs: forget it
)

// judge decides what to do with a recorded stack, given which processes
// live. A stack without an owner was detached by `caravan dev up`:
// `caravan dev down` stops it, a later run never does.
func judge(s *Stack, ownerAlive func(ProcID) bool, procAlive func(*Proc) bool) verdict {
	anyAlive := false
	for _, p := range s.Procs {
		if procAlive(p) {
			anyAlive = true
		}
	}
	switch {
	case !anyAlive:
		return forget
	case s.Owner == nil || ownerAlive(*s.Owner):
		return keep
	default:
		return reap
	}
}

// register records s in the registry dir as owned by this process.
func (s *Stack) register(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	self, err := identify(os.Getpid())
	if err != nil {
		return fmt.Errorf("identifying this process for the stack registry: %w", err)
	}
	s.ID, s.Registry, s.Owner = hex.EncodeToString(b), dir, &self
	return s.save()
}

// Detach makes s outlive the process that started it (`caravan dev up`):
// no later run reaps it; `caravan dev down` stops it.
func (s *Stack) Detach() error {
	s.Owner = nil
	return s.save()
}

func (s *Stack) registryPath() string {
	if s.Registry == "" || s.ID == "" {
		return ""
	}
	return filepath.Join(s.Registry, s.ID+".json")
}

// writeFileAtomic writes through a rename, so a concurrent reader sees the
// old record or the new one, never half of one.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReapOrphans stops every stack recorded in dir whose owner is gone, each
// process with everything below it (Nomad's executors and tasks), and
// forgets stacks of which nothing runs. It says what it stopped on out.
func ReapOrphans(dir string, out io.Writer) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue // removed meanwhile by its own Down
		}
		var s Stack
		if err := json.Unmarshal(b, &s); err != nil {
			// Not a record this code wrote whole (records are renamed into
			// place): leave it to a human rather than guess.
			errs = append(errs, fmt.Errorf("stack registry: %s: %w", path, err))
			continue
		}
		switch judge(&s, running, (*Proc).Alive) {
		case keep:
			continue
		case reap:
			fmt.Fprintf(out, "==> stopping a stack left by pid %d, which is gone (state %s)\n", s.Owner.PID, s.StateDir)
			var stopErrs []error
			for i := len(s.Procs) - 1; i >= 0; i-- {
				if err := s.Procs[i].Stop(15 * time.Second); err != nil {
					stopErrs = append(stopErrs, err)
				}
			}
			if len(stopErrs) > 0 {
				// Keep the record: the next run tries again.
				errs = append(errs, stopErrs...)
				continue
			}
			// Its state directory's stack.json says nothing runs any more.
			s.Procs = nil
			if b, err := json.MarshalIndent(&s, "", "  "); err == nil && s.StateDir != "" {
				_ = os.WriteFile(filepath.Join(s.StateDir, "stack.json"), b, 0o644)
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
