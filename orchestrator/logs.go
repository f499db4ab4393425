package orchestrator

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// Logs follows the stdout and stderr of every running container of an app
// and writes them to w, a line at a time, each prefixed with its function,
// until ctx ends. Containers that start while it runs (a rollout, a
// scale-up, a cold start from zero) are followed from when they run.
func (o *Orchestrator) Logs(ctx context.Context, caller Caller, ref AppRef, w io.Writer) error {
	rec, err := o.resolve(ctx, caller, ref)
	if err != nil {
		return err
	}
	allocs, index, err := o.nomad.JobAllocations(ctx, rec.JobID, 0)
	if err != nil {
		return fmt.Errorf("listing containers of %s: %w", rec.JobID, err)
	}
	var mu sync.Mutex
	line := func(prefix string, b []byte) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "%s %s\n", prefix, b)
		if f, ok := w.(interface{ Flush() }); ok {
			f.Flush()
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	followed := map[string]bool{}
	for {
		for _, id := range newlyRunning(allocs, followed) {
			alloc, err := o.nomad.Allocation(ctx, id)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				delete(followed, id) // try again on the next change
				continue
			}
			for task := range alloc.TaskStates {
				for _, stream := range []string{"stdout", "stderr"} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						o.follow(ctx, alloc, task, stream, fmt.Sprintf("[%s %s]", alloc.TaskGroup, shortID(alloc.ID)), line)
					}()
				}
			}
		}
		next, last, err := o.nomad.JobAllocations(ctx, rec.JobID, index)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil: // a blip between Nomad and us: the followed streams go on
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		allocs, index = next, last
	}
}

// newlyRunning returns the running allocations not yet in followed, in
// the order listed, and marks them followed.
func newlyRunning(allocs []*nomad.AllocationListStub, followed map[string]bool) []string {
	var ids []string
	for _, a := range allocs {
		if a.ClientStatus != nomad.AllocClientStatusRunning || followed[a.ID] {
			continue
		}
		followed[a.ID] = true
		ids = append(ids, a.ID)
	}
	return ids
}

func (o *Orchestrator) follow(ctx context.Context, alloc *nomad.Allocation, task, stream, prefix string, line func(string, []byte)) {
	frames, errs := o.nomad.FollowLogs(ctx, alloc, task, stream)
	var partial []byte
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-errs:
			if err != nil && ctx.Err() == nil {
				line(prefix, []byte("(log stream ended: "+err.Error()+")"))
			}
			return
		case f, ok := <-frames:
			if !ok {
				return
			}
			if f == nil || len(f.Data) == 0 {
				continue
			}
			partial = append(partial, f.Data...)
			for {
				i := bytes.IndexByte(partial, '\n')
				if i < 0 {
					break
				}
				line(prefix, partial[:i])
				partial = partial[i+1:]
			}
		}
	}
}
