package orchestrator

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	nomad "github.com/hashicorp/nomad/api"
)

// Logs follows the stdout and stderr of every running container of an app
// and writes them to w, a line at a time, each prefixed with its function,
// until ctx ends. It follows the containers that run when it starts: after a
// new version rolls out, call it again.
func (o *Orchestrator) Logs(ctx context.Context, caller Caller, ref AppRef, w io.Writer) error {
	rec, err := o.resolve(ctx, caller, ref)
	if err != nil {
		return err
	}
	allocs, _, err := o.nomad.JobAllocations(ctx, rec.JobID, 0)
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
	for _, stub := range allocs {
		if stub.ClientStatus != nomad.AllocClientStatusRunning {
			continue
		}
		alloc, err := o.nomad.Allocation(ctx, stub.ID)
		if err != nil {
			return err
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
	wg.Wait()
	return nil
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
