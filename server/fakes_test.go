package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/orchestrator"
)

// memKV is KV in a map; err, when set, fails every call as Consul down
// would.
type memKV struct {
	mu  sync.Mutex
	m   map[string][]byte
	err error
}

var _ KV = (*memKV)(nil)

func newMemKV() *memKV { return &memKV{m: map[string][]byte{}} }

func (k *memKV) fail(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.err = err
}

func (k *memKV) Get(_ context.Context, key string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return nil, k.err
	}
	return k.m[key], nil
}

func (k *memKV) List(_ context.Context, prefix string) ([][]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return nil, k.err
	}
	var out [][]byte
	for _, key := range slices.Sorted(maps.Keys(k.m)) {
		if strings.HasPrefix(key, prefix) {
			out = append(out, k.m[key])
		}
	}
	return out, nil
}

func (k *memKV) Create(_ context.Context, key string, value []byte) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return false, k.err
	}
	if _, ok := k.m[key]; ok {
		return false, nil
	}
	k.m[key] = value
	return true, nil
}

func (k *memKV) Put(_ context.Context, key string, value []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return k.err
	}
	k.m[key] = value
	return nil
}

// fakeOrch records what the handler asked and answers err, when set, or
// canned results.
type fakeOrch struct {
	mu     sync.Mutex
	err    error
	calls  []string
	caller api.Caller
	deploy orchestrator.DeployRequest
	change orchestrator.ChangeRequest
	ref    api.AppRef
	fn     string
	call   orchestrator.CallRequest
	// runDeadline reports whether Run's context had a deadline.
	runDeadline bool
	apps        []api.AppSummary
	logs        string
	// hold, when set, runs in Deploy and History before they answer,
	// and Logs writes through stream instead of writing logs.
	hold   func(ctx context.Context) error
	stream func(ctx context.Context, w io.Writer) error
	// bundles are the uploaded bundles.
	bundles bundleStore
}

var _ Orchestrator = (*fakeOrch)(nil)

var errOops = errors.New("oops: something nobody named")

func (f *fakeOrch) record(name string, caller api.Caller) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
	f.caller = caller
	return f.err
}

func (f *fakeOrch) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

func (f *fakeOrch) Deploy(ctx context.Context, c api.Caller, req orchestrator.DeployRequest) (*api.DeployResult, error) {
	f.deploy = req
	if err := f.record("Deploy", c); err != nil {
		return nil, err
	}
	if f.hold != nil {
		if err := f.hold(ctx); err != nil {
			return nil, err
		}
	}
	return &api.DeployResult{App: "demo", Version: 1, Changed: true, Kind: api.KindDeploy}, nil
}

func (f *fakeOrch) Plan(_ context.Context, c api.Caller, req orchestrator.DeployRequest) (*api.PlanResult, error) {
	f.deploy = req
	if err := f.record("Plan", c); err != nil {
		return nil, err
	}
	return &api.PlanResult{App: "demo", Changed: true}, nil
}

func (f *fakeOrch) Apps(_ context.Context, c api.Caller) ([]api.AppSummary, error) {
	if err := f.record("Apps", c); err != nil {
		return nil, err
	}
	return f.apps, nil
}

func (f *fakeOrch) History(ctx context.Context, c api.Caller, ref api.AppRef) (*api.History, error) {
	f.mu.Lock()
	f.ref = ref
	f.mu.Unlock()
	if err := f.record("History", c); err != nil {
		return nil, err
	}
	if f.hold != nil {
		if err := f.hold(ctx); err != nil {
			return nil, err
		}
	}
	return &api.History{App: &api.AppRecord{App: ref.App, State: api.StateDeployed},
		Versions: []*api.VersionRecord{{Version: 1, Kind: api.KindDeploy, Status: api.StatusLive}}}, nil
}

func (f *fakeOrch) URL(_ context.Context, c api.Caller, ref api.AppRef, function string) (string, error) {
	f.ref, f.fn = ref, function
	if err := f.record("URL", c); err != nil {
		return "", err
	}
	return "https://" + function + "." + ref.App + ".example", nil
}

func (f *fakeOrch) Logs(ctx context.Context, c api.Caller, ref api.AppRef, w io.Writer) error {
	f.ref = ref
	if err := f.record("Logs", c); err != nil {
		return err
	}
	if f.stream != nil {
		return f.stream(ctx, w)
	}
	_, err := io.WriteString(w, f.logs)
	if fl, ok := w.(interface{ Flush() }); ok {
		fl.Flush()
	}
	return err
}

func (f *fakeOrch) changeOp(name string, c api.Caller, req orchestrator.ChangeRequest) (*api.DeployResult, error) {
	f.change = req
	if err := f.record(name, c); err != nil {
		return nil, err
	}
	return &api.DeployResult{App: req.App, Version: 2, Changed: true, Kind: api.KindRollover}, nil
}

func (f *fakeOrch) Rollover(_ context.Context, c api.Caller, req orchestrator.ChangeRequest) (*api.DeployResult, error) {
	return f.changeOp("Rollover", c, req)
}

func (f *fakeOrch) Rollback(_ context.Context, c api.Caller, req orchestrator.ChangeRequest) (*api.DeployResult, error) {
	return f.changeOp("Rollback", c, req)
}

func (f *fakeOrch) Promote(_ context.Context, c api.Caller, req orchestrator.ChangeRequest) (*api.DeployResult, error) {
	return f.changeOp("Promote", c, req)
}

func (f *fakeOrch) Abort(_ context.Context, c api.Caller, req orchestrator.ChangeRequest) (*api.DeployResult, error) {
	return f.changeOp("Abort", c, req)
}

func (f *fakeOrch) Stop(_ context.Context, c api.Caller, ref api.AppRef) (*api.AppRecord, error) {
	f.ref = ref
	if err := f.record("Stop", c); err != nil {
		return nil, err
	}
	return &api.AppRecord{App: ref.App, State: api.StateStopped, StoppedBy: c.Name}, nil
}

func (f *fakeOrch) Run(ctx context.Context, c api.Caller, ref api.AppRef, function string) (*api.RunResult, error) {
	f.ref, f.fn = ref, function
	_, f.runDeadline = ctx.Deadline()
	if err := f.record("Run", c); err != nil {
		return nil, err
	}
	return &api.RunResult{Function: function, Status: "succeeded"}, nil
}

func (f *fakeOrch) Spawn(_ context.Context, c api.Caller, req orchestrator.CallRequest) (*api.CallStatus, error) {
	f.call = req
	if err := f.record("Spawn", c); err != nil {
		return nil, err
	}
	return &api.CallStatus{ID: "c0123456789abcdef", Function: req.Function, State: "queued"}, nil
}

func (f *fakeOrch) CallGet(_ context.Context, c api.Caller, id string, wait time.Duration) (*api.CallStatus, error) {
	if err := f.record("CallGet", c); err != nil {
		return nil, err
	}
	return &api.CallStatus{ID: id, State: "done", Result: &api.CallResult{Output: wait.String()}}, nil
}

func (f *fakeOrch) CallCancel(_ context.Context, c api.Caller, id string) (*api.CallStatus, error) {
	if err := f.record("CallCancel", c); err != nil {
		return nil, err
	}
	return &api.CallStatus{ID: id, State: "cancelled"}, nil
}

func (f *fakeOrch) Map(_ context.Context, c api.Caller, req orchestrator.MapRequest, each func(api.MapItem) error) error {
	if err := f.record("Map", c); err != nil {
		return err
	}
	for i, in := range req.Inputs {
		if err := each(api.MapItem{Index: i, CallResult: &api.CallResult{Output: string(in)}}); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeOrch) Call(_ context.Context, c api.Caller, req orchestrator.CallRequest) (*api.CallResult, error) {
	f.call = req
	if err := f.record("Call", c); err != nil {
		return nil, err
	}
	return &api.CallResult{Function: req.Function, Output: string(req.Input)}, nil
}

func (f *fakeOrch) Domains(_ context.Context, c api.Caller) ([]api.DomainBinding, error) {
	if err := f.record("Domains", c); err != nil {
		return nil, err
	}
	return []api.DomainBinding{{Domain: "example.com", Workspace: c.Workspace, Method: api.DomainAssigned}}, nil
}

func (f *fakeOrch) VerifyDomain(_ context.Context, c api.Caller, workspace, domain string) (*api.DomainBinding, error) {
	f.fn = workspace + " " + domain
	if err := f.record("VerifyDomain", c); err != nil {
		return nil, err
	}
	return &api.DomainBinding{Domain: domain, Workspace: workspace, Method: api.DomainVerifiedByDNS}, nil
}

func (f *fakeOrch) AssignDomain(_ context.Context, c api.Caller, workspace, domain string) (*api.DomainBinding, error) {
	f.fn = workspace + " " + domain
	if err := f.record("AssignDomain", c); err != nil {
		return nil, err
	}
	return &api.DomainBinding{Domain: domain, Workspace: workspace, Method: api.DomainAssigned}, nil
}

// bundleStore is the fake's bundles: verified as the orchestrator does,
// kept in memory; a fetch opens with signature "good" only.
type bundleStore struct {
	mu     sync.Mutex
	stored map[string][]byte
	limits bundle.Limits
}

func (f *fakeOrch) MissingBundles(_ context.Context, c api.Caller, _ string, ids []string) ([]string, error) {
	if err := f.record("MissingBundles", c); err != nil {
		return nil, err
	}
	f.bundles.mu.Lock()
	defer f.bundles.mu.Unlock()
	out := []string{}
	for _, id := range ids {
		if f.bundles.stored[id] == nil {
			out = append(out, id)
		}
	}
	return out, nil
}

func (f *fakeOrch) PutBundle(_ context.Context, c api.Caller, _, id string, r io.Reader) (*api.BundleInfo, error) {
	if err := f.record("PutBundle", c); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	info, err := bundle.Verify(io.TeeReader(r, &buf), id, f.bundles.limits)
	if err != nil {
		var tl *bundle.TooLargeError
		if errors.As(err, &tl) {
			return nil, &orchestrator.BundleTooLargeError{Limit: tl.Limit, Largest: tl.Largest}
		}
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, err
		}
		return nil, &orchestrator.BundleInvalidError{Why: err.Error()}
	}
	f.bundles.mu.Lock()
	defer f.bundles.mu.Unlock()
	if f.bundles.stored == nil {
		f.bundles.stored = map[string][]byte{}
	}
	f.bundles.stored[id] = buf.Bytes()
	return &api.BundleInfo{ID: id, Files: info.Files, Size: info.Size, Stored: int64(buf.Len())}, nil
}

func (f *fakeOrch) OpenBundle(_ context.Context, id, job, alloc, sig string) (io.ReadCloser, error) {
	f.bundles.mu.Lock()
	defer f.bundles.mu.Unlock()
	if sig != "good" || alloc == "" || job == "" {
		return nil, &orchestrator.BundleAccessError{Why: "bad signature"}
	}
	b := f.bundles.stored[id]
	if b == nil {
		return nil, &orchestrator.BundleMissingError{Missing: map[string]string{"web": id}}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}
