package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/router"
	nomad "github.com/hashicorp/nomad/api"
)

// The fakes below stand in for Nomad, Consul and the store in unit tests,
// as nomad/deploymentwatcher's tests drive it with a mock backend: state
// in memory, blocking queries that wake on change, and a log of calls.
// Tests script what Nomad's scheduler would do with hooks.

// watched is the index and change broadcast the fakes' blocking queries
// wait on.
type watched struct {
	mu      sync.Mutex
	index   uint64
	changed chan struct{}
}

// bump records a change (with mu held) and wakes every blocked query.
func (w *watched) bump() uint64 {
	w.index++
	if w.changed != nil {
		close(w.changed)
	}
	w.changed = make(chan struct{})
	return w.index
}

// block waits, with mu held on entry and exit, until the index passes
// waitIndex (at once when waitIndex is 0) or ctx ends.
func (w *watched) block(ctx context.Context, waitIndex uint64, at func() uint64) error {
	for waitIndex > 0 && at() <= waitIndex {
		if w.changed == nil {
			w.changed = make(chan struct{})
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			w.mu.Lock()
			return ctx.Err()
		case <-ch:
		}
		w.mu.Lock()
	}
	return nil
}

// fakeNomad is an in-memory Nomad. By default a registered job's
// deployment succeeds at once with one running allocation per container.
type fakeNomad struct {
	watched
	jobs    map[string]*nomad.Job
	history map[string][]*nomad.Job
	evals   map[string]*nomad.Evaluation
	deps    map[string]*nomad.Deployment
	allocs  map[string]*nomad.Allocation
	files   map[string]string // allocID + "/" + path
	calls   []string
	seq     int

	// planFailed is what Plan (and the evaluation) find unplaceable.
	planFailed map[string]*nomad.AllocationMetric
	// registerErr fails every Register.
	registerErr error
	// beforeRegister, when set, runs (with the lock held) before Register
	// checks the modify index: a test scales the job there, as the
	// autoscaler does.
	beforeRegister func(f *fakeNomad, job *nomad.Job)
	// namespaceErr is what Namespace answers; namespaces the workspaces
	// it was asked about.
	namespaceErr error
	namespaces   []string
	// onRegister shapes the deployment of a registered service job (nil:
	// successful at once); it runs with the lock held.
	onRegister func(job *nomad.Job, dep *nomad.Deployment)
	// onPlaced sees the allocations Register placed for a deployment
	// (with the lock held): tests register them in Consul.
	onPlaced func(allocs []*nomad.Allocation)
	// onPromote shapes a promoted deployment (nil: successful at once).
	onPromote func(dep *nomad.Deployment)
	// afterRegister, when set, runs (with the lock held) once Register
	// has registered job and opened its deployment.
	afterRegister func(f *fakeNomad, job *nomad.Job)
	// noDeployment registers versions without opening a deployment for
	// them (the evaluation still names the job's latest one).
	noDeployment bool
	// promoteErr fails every PromoteDeployment.
	promoteErr error
	// runCall sets a dispatched call's allocation up: its task state and
	// output files (nil: exit 0, no output).
	runCall func(f *fakeNomad, alloc *nomad.Allocation, payload []byte)
}

var _ Nomad = (*fakeNomad)(nil)

func newFakeNomad() *fakeNomad {
	return &fakeNomad{jobs: map[string]*nomad.Job{}, history: map[string][]*nomad.Job{}, evals: map[string]*nomad.Evaluation{},
		deps: map[string]*nomad.Deployment{}, allocs: map[string]*nomad.Allocation{}, files: map[string]string{}}
}

func (f *fakeNomad) call(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// count is how many calls start with prefix.
func (f *fakeNomad) count(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (f *fakeNomad) id(kind string) string {
	f.seq++
	return fmt.Sprintf("%s-%04d-0000-0000-0000-000000000000", kind, f.seq)
}

func copyJob(j *nomad.Job) *nomad.Job {
	b, _ := json.Marshal(j)
	var c nomad.Job
	_ = json.Unmarshal(b, &c)
	return &c
}

func (f *fakeNomad) newEval(jobID string) string {
	id := f.id("eval")
	f.evals[id] = &nomad.Evaluation{ID: id, JobID: jobID, Status: nomad.EvalStatusComplete,
		FailedTGAllocs: f.planFailed, ModifyIndex: f.bump()}
	return id
}

func (f *fakeNomad) Namespace(ctx context.Context, workspace string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.namespaces = append(f.namespaces, workspace)
	return f.namespaceErr
}

func (f *fakeNomad) Job(ctx context.Context, id string) (*nomad.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if j := f.jobs[id]; j != nil {
		return copyJob(j), nil
	}
	return nil, nil
}

func (f *fakeNomad) Plan(ctx context.Context, job *nomad.Job, diff bool) (*nomad.JobPlanResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("plan %s", *job.ID)
	resp := &nomad.JobPlanResponse{FailedTGAllocs: f.planFailed, Annotations: &nomad.PlanAnnotations{DesiredTGUpdates: map[string]*nomad.DesiredUpdates{}}}
	for _, tg := range job.TaskGroups {
		resp.Annotations.DesiredTGUpdates[*tg.Name] = &nomad.DesiredUpdates{Place: uint64(*tg.Count)}
	}
	if diff {
		resp.Diff = &nomad.JobDiff{Type: "Edited", TaskGroups: []*nomad.TaskGroupDiff{{Type: "Edited", Name: *job.TaskGroups[0].Name,
			Fields: []*nomad.FieldDiff{{Type: "Edited", Name: "Count", Old: "1", New: "2"}}}}}
	}
	return resp, nil
}

func (f *fakeNomad) Register(ctx context.Context, job *nomad.Job, modifyIndex uint64) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("register %s", *job.ID)
	if f.registerErr != nil {
		return "", f.registerErr
	}
	if f.beforeRegister != nil {
		f.beforeRegister(f, job)
	}
	prev := f.jobs[*job.ID]
	if modifyIndex > 0 && (prev == nil || *prev.JobModifyIndex != modifyIndex) {
		return "", fmt.Errorf("%w: Enforcing job modify index %d: job exists with conflicting job modify index: %d", ErrJobModified, modifyIndex, *prev.JobModifyIndex)
	}
	j := copyJob(job)
	version := uint64(0)
	if prev != nil {
		version = *prev.Version + 1
	}
	idx := f.bump()
	j.Version, j.JobModifyIndex, j.Stop = &version, &idx, ptrTo(false)
	status := "running"
	j.Status = &status
	f.jobs[*j.ID] = j
	f.history[*j.ID] = append(f.history[*j.ID], j)
	evalID := f.newEval(*j.ID)
	eval := f.evals[evalID]
	eval.JobModifyIndex = idx
	// Nomad's evaluation names the job's latest deployment, whether or
	// not it opened one for this version.
	if latest := f.latestLocked(*j.ID); latest != nil {
		eval.DeploymentID = latest.ID
	}
	if j.Periodic != nil || j.ParameterizedJob != nil || len(f.planFailed) > 0 || f.noDeployment {
		return evalID, nil
	}
	dep := &nomad.Deployment{ID: f.id("dep"), JobID: *j.ID, JobVersion: version, JobSpecModifyIndex: idx, JobModifyIndex: idx,
		Status: nomad.DeploymentStatusSuccessful, TaskGroups: map[string]*nomad.DeploymentState{}}
	eval.DeploymentID = dep.ID
	for _, tg := range j.TaskGroups {
		dep.TaskGroups[*tg.Name] = &nomad.DeploymentState{DesiredTotal: *tg.Count, HealthyAllocs: *tg.Count}
	}
	if f.onRegister != nil {
		f.onRegister(j, dep)
	}
	dep.ModifyIndex = f.bump()
	f.deps[dep.ID] = dep
	var placed []*nomad.Allocation
	for _, tg := range j.TaskGroups {
		for range *tg.Count {
			placed = append(placed, f.addAlloc(*j.ID, *tg.Name, dep.ID, nomad.AllocClientStatusRunning))
		}
	}
	if f.onPlaced != nil {
		f.onPlaced(placed)
	}
	if f.afterRegister != nil {
		f.afterRegister(f, j)
	}
	return evalID, nil
}

// bumpVersion registers job id again unchanged as a new version, opening
// no deployment (with the lock held): someone changed it in Nomad.
func (f *fakeNomad) bumpVersion(id string) {
	j := copyJob(f.jobs[id])
	v, idx := *j.Version+1, f.bump()
	j.Version, j.JobModifyIndex = &v, &idx
	f.jobs[id] = j
	f.history[id] = append(f.history[id], j)
}

// addAlloc adds an allocation (with the lock held).
func (f *fakeNomad) addAlloc(jobID, group, depID, status string) *nomad.Allocation {
	a := &nomad.Allocation{ID: f.id("alloc"), JobID: jobID, TaskGroup: group, DeploymentID: depID, ClientStatus: status, DesiredStatus: nomad.AllocDesiredStatusRun,
		TaskStates: map[string]*nomad.TaskState{group: {State: "running", StartedAt: time.Now()}}, ModifyIndex: f.bump()}
	f.allocs[a.ID] = a
	return a
}

func ptrTo[T any](v T) *T { return &v }

func (f *fakeNomad) Revert(ctx context.Context, id string, version uint64) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("revert %s %d", id, version)
	for _, j := range f.history[id] {
		if *j.Version == version {
			c := copyJob(j)
			v, idx := *f.jobs[id].Version+1, f.bump()
			c.Version, c.JobModifyIndex = &v, &idx
			f.jobs[id] = c
			return f.newEval(id), nil
		}
	}
	return "", fmt.Errorf("job %s has no version %d", id, version)
}

func (f *fakeNomad) Deregister(ctx context.Context, id string, purge bool) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("deregister %s purge=%v", id, purge)
	if purge {
		delete(f.jobs, id)
	} else if j := f.jobs[id]; j != nil {
		j.Stop = ptrTo(true)
	}
	for _, a := range f.allocs {
		if a.JobID == id {
			a.ClientStatus, a.ModifyIndex = nomad.AllocClientStatusComplete, f.bump()
		}
	}
	return f.newEval(id), nil
}

func (f *fakeNomad) Jobs(ctx context.Context, prefix string) ([]*nomad.JobListStub, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*nomad.JobListStub
	for id, j := range f.jobs {
		if !strings.HasPrefix(id, prefix) {
			continue
		}
		s := &nomad.JobListStub{ID: id, Meta: j.Meta, Periodic: j.Periodic != nil, ParameterizedJob: j.ParameterizedJob != nil,
			Status: *j.Status, SubmitTime: int64(*j.JobModifyIndex)}
		if j.ParentID != nil {
			s.ParentID = *j.ParentID
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *nomad.JobListStub) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (f *fakeNomad) Summary(ctx context.Context, id string) (*nomad.JobSummary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &nomad.JobSummary{JobID: id, Summary: map[string]nomad.TaskGroupSummary{}}
	for _, a := range f.allocs {
		if a.JobID == id && a.ClientStatus == nomad.AllocClientStatusRunning {
			c := s.Summary[a.TaskGroup]
			c.Running++
			s.Summary[a.TaskGroup] = c
		}
	}
	return s, nil
}

func stub(a *nomad.Allocation) *nomad.AllocationListStub {
	return &nomad.AllocationListStub{ID: a.ID, JobID: a.JobID, TaskGroup: a.TaskGroup, ClientStatus: a.ClientStatus, DesiredStatus: a.DesiredStatus,
		TaskStates: a.TaskStates, DeploymentStatus: a.DeploymentStatus, ModifyIndex: a.ModifyIndex}
}

// allocsWhere lists the allocations keep accepts, blocking past
// waitIndex.
func (f *fakeNomad) allocsWhere(ctx context.Context, waitIndex uint64, keep func(*nomad.Allocation) bool) ([]*nomad.AllocationListStub, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at := func() uint64 {
		var max uint64
		for _, a := range f.allocs {
			if keep(a) && a.ModifyIndex > max {
				max = a.ModifyIndex
			}
		}
		return max
	}
	if err := f.block(ctx, waitIndex, at); err != nil {
		return nil, 0, err
	}
	var out []*nomad.AllocationListStub
	for _, a := range f.allocs {
		if keep(a) {
			out = append(out, stub(a))
		}
	}
	slices.SortFunc(out, func(a, b *nomad.AllocationListStub) int { return strings.Compare(a.ID, b.ID) })
	return out, max(at(), 1), nil
}

func (f *fakeNomad) JobAllocations(ctx context.Context, id string, waitIndex uint64) ([]*nomad.AllocationListStub, uint64, error) {
	return f.allocsWhere(ctx, waitIndex, func(a *nomad.Allocation) bool { return a.JobID == id })
}

func (f *fakeNomad) DeploymentAllocations(ctx context.Context, id string, waitIndex uint64) ([]*nomad.AllocationListStub, uint64, error) {
	return f.allocsWhere(ctx, waitIndex, func(a *nomad.Allocation) bool { return a.DeploymentID == id })
}

func (f *fakeNomad) Allocation(ctx context.Context, id string) (*nomad.Allocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.allocs[id]
	if a == nil {
		return nil, fmt.Errorf("no allocation %s", id)
	}
	c := *a
	return &c, nil
}

func (f *fakeNomad) LatestDeployment(ctx context.Context, jobID string) (*nomad.Deployment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return copyDep(f.latestLocked(jobID)), nil
}

// latestLocked is job jobID's latest deployment (with the lock held).
func (f *fakeNomad) latestLocked(jobID string) *nomad.Deployment {
	var latest *nomad.Deployment
	for _, d := range f.deps {
		if d.JobID == jobID && (latest == nil || d.ModifyIndex > latest.ModifyIndex) {
			latest = d
		}
	}
	return latest
}

func copyDep(d *nomad.Deployment) *nomad.Deployment {
	if d == nil {
		return nil
	}
	b, _ := json.Marshal(d)
	var c nomad.Deployment
	_ = json.Unmarshal(b, &c)
	return &c
}

func (f *fakeNomad) Deployment(ctx context.Context, id string, waitIndex uint64) (*nomad.Deployment, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deps[id] == nil {
		return nil, 0, fmt.Errorf("no deployment %s", id)
	}
	if err := f.block(ctx, waitIndex, func() uint64 { return f.deps[id].ModifyIndex }); err != nil {
		return nil, 0, err
	}
	d := f.deps[id]
	return copyDep(d), d.ModifyIndex, nil
}

// setDeployment changes deployment id as change says, waking whoever
// watches it.
func (f *fakeNomad) setDeployment(id string, change func(*nomad.Deployment)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f.deps[id])
	f.deps[id].ModifyIndex = f.bump()
}

// latest is job id's latest deployment.
func (f *fakeNomad) latest(t *testing.T, jobID string) *nomad.Deployment {
	t.Helper()
	d, _ := f.LatestDeployment(context.Background(), jobID)
	if d == nil {
		t.Fatalf("job %s has no deployment", jobID)
	}
	return d
}

func (f *fakeNomad) FailDeployment(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("fail %s", id)
	d := f.deps[id]
	d.Status, d.StatusDescription, d.ModifyIndex = nomad.DeploymentStatusFailed, "Deployment marked as failed", f.bump()
	// auto_revert stops the deployment's allocations.
	for _, a := range f.allocs {
		if a.DeploymentID == id && running(stub(a)) {
			a.ClientStatus, a.ModifyIndex = nomad.AllocClientStatusComplete, f.bump()
		}
	}
	return nil
}

func (f *fakeNomad) SetAllocHealth(ctx context.Context, id string, healthy []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("health %s %d", id, len(healthy))
	d := f.deps[id]
	if d == nil || d.Status != nomad.DeploymentStatusRunning {
		return fmt.Errorf("deployment %s is not active", id)
	}
	for _, aid := range healthy {
		a := f.allocs[aid]
		if a == nil || a.DeploymentID != id {
			return fmt.Errorf("allocation %s is not of deployment %s", aid, id)
		}
		a.DeploymentStatus = &nomad.AllocDeploymentStatus{Healthy: ptrTo(true)}
		a.ModifyIndex = f.bump()
		if g := d.TaskGroups[a.TaskGroup]; g != nil {
			g.HealthyAllocs++
		}
	}
	d.ModifyIndex = f.bump()
	return nil
}

func (f *fakeNomad) PromoteDeployment(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("promote %s", id)
	if f.promoteErr != nil {
		return f.promoteErr
	}
	d := f.deps[id]
	for _, g := range d.TaskGroups {
		g.Promoted = true
	}
	d.Status, d.StatusDescription = nomad.DeploymentStatusSuccessful, "Deployment completed successfully"
	if f.onPromote != nil {
		f.onPromote(d)
	}
	d.ModifyIndex = f.bump()
	return nil
}

func (f *fakeNomad) Evaluation(ctx context.Context, id string, waitIndex uint64) (*nomad.Evaluation, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.evals[id]
	if e == nil {
		return nil, 0, fmt.Errorf("no evaluation %s", id)
	}
	c := *e
	return &c, e.ModifyIndex, nil
}

func (f *fakeNomad) ForcePeriodic(ctx context.Context, id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("force %s", id)
	parent := f.jobs[id]
	if parent == nil {
		return "", fmt.Errorf("no job %s", id)
	}
	child := copyJob(parent)
	child.ID, child.ParentID, child.Periodic = ptrTo(id+"/periodic-1"), &id, nil
	f.jobs[*child.ID] = child
	a := f.addAlloc(*child.ID, *parent.TaskGroups[0].Name, "", nomad.AllocClientStatusComplete)
	a.TaskStates[a.TaskGroup].Events = []*nomad.TaskEvent{{Type: nomad.TaskTerminated, ExitCode: 0}}
	return f.newEval(*child.ID), nil
}

func (f *fakeNomad) Dispatch(ctx context.Context, id string, meta map[string]string, payload []byte) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("dispatch %s", id)
	parent := f.jobs[id]
	if parent == nil {
		return "", "", fmt.Errorf("no job %s", id)
	}
	child := copyJob(parent)
	child.ID, child.ParentID, child.ParameterizedJob = ptrTo(fmt.Sprintf("%s/dispatch-%d", id, f.seq)), &id, nil
	f.jobs[*child.ID] = child
	evalID := f.newEval(*child.ID)
	a := f.addAlloc(*child.ID, *parent.TaskGroups[0].Name, "", nomad.AllocClientStatusComplete)
	a.TaskStates[a.TaskGroup].Events = []*nomad.TaskEvent{{Type: nomad.TaskTerminated, ExitCode: 0, Time: time.Now().UnixNano()}}
	if f.runCall != nil {
		f.runCall(f, a, payload)
	}
	return *child.ID, evalID, nil
}

func (f *fakeNomad) ReadFile(ctx context.Context, alloc *nomad.Allocation, path string, limit int64) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.files[alloc.ID+"/"+path]
	if !ok {
		return nil, fmt.Errorf("no file %s", path)
	}
	if int64(len(s)) > limit {
		s = s[:limit]
	}
	return io.NopCloser(strings.NewReader(s)), nil
}

func (f *fakeNomad) FollowLogs(ctx context.Context, alloc *nomad.Allocation, task, stream string) (<-chan *nomad.StreamFrame, <-chan error) {
	frames, errs := make(chan *nomad.StreamFrame), make(chan error, 1)
	f.mu.Lock()
	data := f.files[alloc.ID+"/alloc/logs/"+task+"."+stream+".0"]
	f.mu.Unlock()
	go func() {
		if data != "" {
			select {
			case frames <- &nomad.StreamFrame{Data: []byte(data)}:
			case <-ctx.Done():
				return
			}
		}
		<-ctx.Done()
		close(frames)
	}()
	return frames, errs
}

// fakeConsul is an in-memory Consul catalog and KV store.
type fakeConsul struct {
	watched
	services map[string][]fakeInstance
	kv       map[string]string
	txns     int
	writeErr error
	// sessions are the live sessions; held the keys each holds.
	sessions map[string]bool
	held     map[string]string // key → session
	seqID    int
}

type fakeInstance struct {
	Instance
	tags    []string
	passing bool
}

var _ Consul = (*fakeConsul)(nil)

func newFakeConsul() *fakeConsul {
	return &fakeConsul{services: map[string][]fakeInstance{}, kv: map[string]string{}, sessions: map[string]bool{}, held: map[string]string{}}
}

// register adds an instance of service, waking blocked queries.
func (c *fakeConsul) register(service string, in fakeInstance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.services[service] = append(c.services[service], in)
	c.bump()
}

// deregister removes the instances of service keep rejects.
func (c *fakeConsul) deregister(service string, gone func(fakeInstance) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.services[service] = slices.DeleteFunc(c.services[service], gone)
	c.bump()
}

func (c *fakeConsul) Instances(ctx context.Context, service, tag string, passing bool, waitIndex uint64) ([]Instance, uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.block(ctx, waitIndex, func() uint64 { return c.index }); err != nil {
		return nil, 0, err
	}
	var out []Instance
	for _, in := range c.services[service] {
		if (tag == "" || slices.Contains(in.tags, tag)) && (!passing || in.passing) {
			out = append(out, in.Instance)
		}
	}
	return out, max(c.index, 1), nil
}

func (c *fakeConsul) WriteKV(ctx context.Context, ops []KVOp) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writeErr != nil {
		return c.writeErr
	}
	if len(ops) > 128 {
		return errors.New("too many operations in one transaction")
	}
	for _, op := range ops {
		if op.Session != "" && !c.sessions[op.Session] {
			return fmt.Errorf("invalid session %q", op.Session)
		}
	}
	c.txns++
	for _, op := range ops {
		if op.Delete {
			delete(c.kv, op.Key)
			delete(c.held, op.Key)
		} else {
			c.kv[op.Key] = string(op.Value)
			if op.Session != "" {
				c.held[op.Key] = op.Session
			}
		}
	}
	return nil
}

var _ Sessions = (*fakeConsul)(nil)

func (c *fakeConsul) CreateSession(ctx context.Context, ttl time.Duration) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seqID++
	id := fmt.Sprintf("session-%d", c.seqID)
	c.sessions[id] = true
	return id, nil
}

func (c *fakeConsul) RenewSession(ctx context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.sessions[id] {
		return fmt.Errorf("session %s has ended", id)
	}
	return nil
}

// DestroySession ends session id and deletes its keys, as a session of
// behavior delete does.
func (c *fakeConsul) DestroySession(ctx context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sessions, id)
	for k, s := range c.held {
		if s == id {
			delete(c.kv, k)
			delete(c.held, k)
		}
	}
	return nil
}

// liveSessions counts the sessions not ended.
func (c *fakeConsul) liveSessions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions)
}

// setPassing sets whether service's instances pass their checks, waking
// blocked queries.
func (c *fakeConsul) setPassing(service string, passing bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.services[service] {
		c.services[service][i].passing = passing
	}
	c.bump()
}

func (c *fakeConsul) DeleteKVTree(ctx context.Context, prefix string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.kv {
		if strings.HasPrefix(k, prefix) {
			delete(c.kv, k)
		}
	}
	return nil
}

// keys lists the KV keys, sorted.
func (c *fakeConsul) keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k := range c.kv {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// snapshot copies the values of keys that Consul KV holds.
func (c *fakeConsul) snapshot(keys []string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for _, k := range keys {
		if v, ok := c.kv[k]; ok {
			out[k] = v
		}
	}
	return out
}

// memStore is an in-memory Store. Records are copied through JSON, as
// Consul would, so nothing is shared with the caller.
type memStore struct {
	mu       sync.Mutex
	grants   map[string]bool // "<workspace>/<bundle>"
	apps     map[string][]byte
	index    map[string]uint64
	versions map[string][]byte // versionKey
	hosts    map[string]HostOwner
	domains  map[string]DomainBinding
	locks    map[string]chan struct{}
	holders  map[string]context.CancelCauseFunc
	seq      uint64
	reads    int // Version and Versions calls
	putErr   error
	// versionErr fails reads of these jobs' versions.
	versionErr map[string]error
}

var _ Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{apps: map[string][]byte{}, index: map[string]uint64{}, versions: map[string][]byte{},
		hosts: map[string]HostOwner{}, domains: map[string]DomainBinding{}, locks: map[string]chan struct{}{}, holders: map[string]context.CancelCauseFunc{}}
}

func (s *memStore) Lock(ctx context.Context, jobID string) (context.Context, func(), error) {
	s.mu.Lock()
	l := s.locks[jobID]
	if l == nil {
		l = make(chan struct{}, 1)
		s.locks[jobID] = l
	}
	s.mu.Unlock()
	select {
	case l <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	held, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	s.mu.Lock()
	s.holders[jobID] = cancel
	s.mu.Unlock()
	var once sync.Once
	return held, func() {
		once.Do(func() {
			cancel(nil)
			<-l
		})
	}, nil
}

// loseLock ends the holder's context of jobID's lock as an expired
// Consul session would.
func (s *memStore) loseLock(jobID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.holders[jobID]; c != nil {
		c(ErrLockLost)
	}
}

func (s *memStore) App(ctx context.Context, jobID string) (*AppRecord, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.apps[jobID]
	if !ok {
		return nil, 0, nil
	}
	var rec AppRecord
	_ = json.Unmarshal(b, &rec)
	return &rec, s.index[jobID], nil
}

func (s *memStore) PutApp(ctx context.Context, rec *AppRecord, index uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.putErr != nil {
		return s.putErr
	}
	if s.index[rec.JobID] != index {
		return ErrConflict
	}
	b, _ := json.Marshal(rec)
	s.seq++
	s.apps[rec.JobID], s.index[rec.JobID] = b, s.seq
	return nil
}

func (s *memStore) Apps(ctx context.Context) ([]*AppRecord, error) {
	s.mu.Lock()
	ids := make([]string, 0, len(s.apps))
	for id := range s.apps {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	slices.Sort(ids)
	var out []*AppRecord
	for _, id := range ids {
		rec, _, _ := s.App(ctx, id)
		out = append(out, rec)
	}
	return out, nil
}

func (s *memStore) PutVersion(ctx context.Context, jobID string, generation int, v *VersionRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(v)
	s.versions[versionKey(jobID, generation, v.Version)] = b
	return nil
}

func (s *memStore) Version(ctx context.Context, jobID string, generation, version int) (*VersionRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if err := s.versionErr[jobID]; err != nil {
		return nil, err
	}
	b, ok := s.versions[versionKey(jobID, generation, version)]
	if !ok {
		return nil, nil
	}
	var v VersionRecord
	_ = json.Unmarshal(b, &v)
	return &v, nil
}

func (s *memStore) Versions(ctx context.Context, jobID string, generation int) ([]*VersionRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	prefix := strings.TrimSuffix(versionKey(jobID, generation, 0), "00000000")
	var out []*VersionRecord
	for k, b := range s.versions {
		if strings.HasPrefix(k, prefix) {
			var v VersionRecord
			_ = json.Unmarshal(b, &v)
			out = append(out, &v)
		}
	}
	slices.SortFunc(out, func(a, b *VersionRecord) int { return a.Version - b.Version })
	return out, nil
}

// Commit checks and writes w at once, as ConsulStore's transaction does.
func (s *memStore) Commit(ctx context.Context, w Write) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.putErr != nil {
		return s.putErr
	}
	if s.index[w.Record.JobID] != w.Index {
		return ErrConflict
	}
	owner := ownerOf(w.Record)
	for _, h := range w.Claim {
		if taken := claimConflict(h, owner, s.overlapping(h)); taken != nil {
			return taken
		}
	}
	for _, h := range w.Claim {
		if cur, ok := s.hosts[h]; !ok || !sameApp(cur, owner) {
			s.hosts[h] = owner
		}
	}
	for _, h := range w.Release {
		if cur, ok := s.hosts[h]; ok && sameApp(cur, owner) {
			delete(s.hosts, h)
		}
	}
	for _, v := range w.Versions {
		b, _ := json.Marshal(v)
		s.versions[versionKey(w.Record.JobID, w.Record.Generation, v.Version)] = b
	}
	b, _ := json.Marshal(w.Record)
	s.seq++
	s.apps[w.Record.JobID], s.index[w.Record.JobID] = b, s.seq
	return nil
}

// overlapping lists the claims that overlap host; s.mu is held.
func (s *memStore) overlapping(host string) []HostClaim {
	var out []HostClaim
	for h, o := range s.hosts {
		if overlaps(host, h) {
			out = append(out, HostClaim{Host: h, Owner: o})
		}
	}
	slices.SortFunc(out, func(a, b HostClaim) int { return strings.Compare(a.Host, b.Host) })
	return out
}

func (s *memStore) HostClaims(ctx context.Context, host string) ([]HostClaim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.overlapping(host), nil
}

// claim gives host to owner, as another app's deploy would.
func (s *memStore) claim(host string, owner HostOwner) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts[host] = owner
}

func (s *memStore) Domains(ctx context.Context) ([]DomainBinding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []DomainBinding
	for _, b := range s.domains {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b DomainBinding) int { return strings.Compare(a.Domain, b.Domain) })
	return out, nil
}

func (s *memStore) PutDomain(ctx context.Context, b DomainBinding) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.domains[b.Domain] = b
	return nil
}

func (s *memStore) Secret(ctx context.Context) ([]byte, error) { return []byte("test secret"), nil }

func (s *memStore) BundleKey(ctx context.Context) ([]byte, error) {
	return []byte("test bundle key"), nil
}

func (s *memStore) GrantBundle(ctx context.Context, ws, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grants == nil {
		s.grants = map[string]bool{}
	}
	s.grants[ws+"/"+id] = true
	return nil
}

func (s *memStore) BundleGranted(ctx context.Context, ws, id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants[ws+"/"+id], nil
}

// heldHosts lists the hosts jobID holds, sorted.
func (s *memStore) heldHosts(jobID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for h, o := range s.hosts {
		if o.JobID == jobID {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

// fakeProber answers probes from a table: an error per function (nil:
// answers), and records each probe; onProbe, if set, sees each first.
type fakeProber struct {
	mu      sync.Mutex
	fail    map[string]error
	probes  []string
	onProbe func(r router.Route)
	// served are the functions whose URLs never stop answering (Gone
	// waits until its context ends).
	served map[string]bool
}

func (p *fakeProber) Probe(ctx context.Context, r router.Route, stable time.Duration) error {
	if p.onProbe != nil {
		p.onProbe(r)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probes = append(p.probes, fmt.Sprintf("%s %s", r.Host, stable))
	return p.fail[r.Function]
}

func (p *fakeProber) Gone(ctx context.Context, r router.Route) error {
	p.mu.Lock()
	p.probes = append(p.probes, "gone "+r.Host)
	served := p.served[r.Function]
	p.mu.Unlock()
	if served {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// fakeProxy is Traefik as caravan sees it through its API: it serves the
// split routers in the fake Consul's KV and the Consul instances of each
// service, each change seen only after lag more questions.
type fakeProxy struct {
	consul *fakeConsul
	root   string
	mu     sync.Mutex
	lag    int
	asked  int
	// passingOnly lists only passing instances as a service's servers,
	// as Traefik's consulCatalog provider does (by default every
	// registered one).
	passingOnly bool
}

var _ Proxy = (*fakeProxy)(nil)

// late reports whether the proxy has not caught up yet.
func (p *fakeProxy) late() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked++
	return p.asked <= p.lag
}

func (p *fakeProxy) RouterService(ctx context.Context, name string) (string, error) {
	if p.late() {
		return "stale", nil
	}
	if strings.HasSuffix(name, "@"+catalogProvider) {
		// A route's own router, from its containers' tags: served once
		// caught up (the fakes register no tags).
		return "served", nil
	}
	p.consul.mu.Lock()
	defer p.consul.mu.Unlock()
	return p.consul.kv[p.root+"/http/routers/"+unqualified(name)+"/service"], nil
}

func (p *fakeProxy) Servers(ctx context.Context, service string) ([]string, error) {
	if p.late() {
		return []string{"http://stale:1"}, nil
	}
	ins, _, err := p.consul.Instances(ctx, unqualified(service), "", p.passingOnly, 0)
	return serverURLs(ins), err
}

func (p *fakeProxy) RequestHeader(ctx context.Context, middleware, header string) (string, error) {
	if p.late() {
		return "stale", nil
	}
	p.consul.mu.Lock()
	defer p.consul.mu.Unlock()
	return p.consul.kv[p.root+"/http/middlewares/"+unqualified(middleware)+"/headers/customRequestHeaders/"+header], nil
}

// fakeResolver answers TXT lookups from a table and counts them.
type fakeResolver struct {
	mu      sync.Mutex
	txt     map[string][]string
	lookups int
}

var _ Resolver = (*fakeResolver)(nil)

func (r *fakeResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups++
	return r.txt[name], nil
}

func (r *fakeResolver) set(name string, values ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.txt[name] = values
}
