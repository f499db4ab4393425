package orchestrator

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/internal/syncbuf"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	nomad "github.com/hashicorp/nomad/api"
)

// calc has a web function, a scheduled one and a callable one, isolated
// (a parameterized job per call; warm_test.go has the warm ones).
const calc = `app "calc" {
  workspace = "dev"
  function "web" {
    command = "node"
    web {}
  }
  function "nightly" {
    command  = "node"
    schedule = "0 3 * * *"
  }
  function "sum" {
    command  = "node"
    callable = true
    isolated = true
  }
}
`

func TestScheduledAndCallableFollowTheApp(t *testing.T) {
	h := newHarness(t)
	res := h.mustDeploy([]byte(calc))
	if len(res.Functions) != 3 {
		t.Fatalf("functions = %+v", res.Functions)
	}
	for _, id := range []string{jobs.PeriodicID("dev--calc", "nightly"), jobs.CallableID("dev--calc", "sum")} {
		j, _ := h.nomad.Job(context.Background(), id)
		if j == nil || j.Meta[jobs.MetaVersion] != "1" {
			t.Errorf("job %s = %+v", id, j)
		}
	}
	apps, err := h.o.Apps(context.Background(), ci)
	if err != nil || len(apps) != 1 || len(apps[0].Functions) != 3 || apps[0].Functions[1].Schedule != "0 3 * * *" || !apps[0].Functions[2].Callable {
		t.Errorf("Apps = %+v, %v", apps, err)
	}
	// A redeploy without them removes their jobs.
	h.mustDeploy([]byte(strings.Replace(calc, "function \"sum\"", "function \"sum2\"", 1)))
	if j, _ := h.nomad.Job(context.Background(), jobs.CallableID("dev--calc", "sum")); j != nil {
		t.Error("the removed callable's job is still registered")
	}
	if _, err := h.o.Stop(context.Background(), ci, AppRef{App: "calc"}); err != nil {
		t.Fatal(err)
	}
	if stubs, _ := h.nomad.Jobs(context.Background(), "dev--calc"); len(stubs) != 0 {
		t.Errorf("after stop Nomad still has %d jobs", len(stubs))
	}
}

func TestRunAScheduledFunction(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy([]byte(calc))
	res, err := h.o.Run(context.Background(), ci, AppRef{App: "calc"}, "nightly")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "succeeded" || res.ExitCode != 0 || !strings.HasPrefix(res.JobID, jobs.PeriodicID("dev--calc", "nightly")) {
		t.Errorf("run = %+v", res)
	}
	last, err := h.o.lastRun(context.Background(), "dev--calc", "nightly")
	if err != nil || last == nil || last.JobID != res.JobID {
		t.Errorf("lastRun = %+v, %v", last, err)
	}
	var nf *NotFoundError
	if _, err := h.o.Run(context.Background(), ci, AppRef{App: "calc"}, "web"); !errors.As(err, &nf) {
		t.Errorf("run of a web function: err = %v, want not found", err)
	}
}

func TestCall(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy([]byte(calc))
	h.nomad.runCall = func(f *fakeNomad, a *nomad.Allocation, payload []byte) {
		f.files[a.ID+"/alloc/logs/sum.stdout.0"] = `{"sum":6.5}` + "\n"
		f.files[a.ID+"/alloc/logs/sum.stderr.0"] = strings.Repeat("w", OutputLimit+10)
		if string(payload) == `"fail"` {
			a.ClientStatus = nomad.AllocClientStatusFailed
			a.TaskStates["sum"].Events[0].ExitCode = 3
		}
	}
	res, err := h.o.Call(context.Background(), ci, CallRequest{AppRef: AppRef{App: "calc"}, Function: "sum", Input: []byte(`{"numbers":[1,2,3.5]}`)})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || res.Output != "{\"sum\":6.5}\n" || res.OutputTruncated || !res.StderrTruncated || len(res.Stderr) != OutputLimit {
		t.Errorf("call = exit %d output %q truncated %v/%v stderr %d bytes", res.ExitCode, res.Output, res.OutputTruncated, res.StderrTruncated, len(res.Stderr))
	}
	res, err = h.o.Call(context.Background(), ci, CallRequest{AppRef: AppRef{App: "calc"}, Function: "sum", Input: []byte(`"fail"`)})
	if err != nil || res.ExitCode != 3 {
		t.Errorf("failing call = %+v, %v", res, err)
	}
	var tooBig *InputTooLargeError
	before := h.nomad.count("dispatch")
	if _, err := h.o.Call(context.Background(), ci, CallRequest{AppRef: AppRef{App: "calc"}, Function: "sum",
		Input: bytes.Repeat([]byte("1"), jobs.PayloadLimit+1)}); !errors.As(err, &tooBig) {
		t.Errorf("a call over the limit: err = %v", err)
	}
	if h.nomad.count("dispatch") != before {
		t.Error("a call over the limit was dispatched")
	}
	var nf *NotFoundError
	_, err = h.o.Call(context.Background(), ci, CallRequest{AppRef: AppRef{App: "calc"}, Function: "web"})
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "callable functions: sum") {
		t.Errorf("a call of a web function: err = %v", err)
	}
	if callables(nil) != "it has none; callable = true in a function makes one" {
		t.Error("callables(nil)")
	}
}

func TestLogsFollowEveryContainer(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	for id := range h.nomad.allocs {
		h.nomad.files[id+"/alloc/logs/web.stdout.0"] = "listening\nready\n"
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out syncbuf.Buffer
	done := make(chan error, 1)
	go func() { done <- h.o.Logs(ctx, ci, AppRef{App: "shop"}, &out) }()
	waitFor(t, "both lines", func() bool { return strings.Count(out.String(), "\n") >= 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, "[web ") || !strings.Contains(got, "] listening\n") || !strings.Contains(got, "] ready\n") {
		t.Errorf("logs = %q", got)
	}
}

// A container that starts after Logs began (a rollout, a scale-up, a cold
// start from zero) is followed too, without calling Logs again.
func TestLogsFollowContainersAsTheyStart(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	for id := range h.nomad.allocs {
		h.nomad.files[id+"/alloc/logs/web.stdout.0"] = "first\n"
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out syncbuf.Buffer
	done := make(chan error, 1)
	go func() { done <- h.o.Logs(ctx, ci, AppRef{App: "shop"}, &out) }()
	waitFor(t, "the first container's line", func() bool { return strings.Contains(out.String(), "] first\n") })

	h.nomad.mu.Lock()
	var jobID string
	for _, first := range h.nomad.allocs {
		jobID = first.JobID
	}
	a := h.nomad.addAlloc(jobID, "web", "", nomad.AllocClientStatusRunning)
	h.nomad.files[a.ID+"/alloc/logs/web.stdout.0"] = "second\n"
	h.nomad.mu.Unlock()

	waitFor(t, "the new container's line", func() bool { return strings.Contains(out.String(), "] second\n") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, "[web "+shortID(a.ID)+"] second\n") {
		t.Errorf("logs = %q, want the new container's line under its own prefix", got)
	}
}

func TestNewlyRunning(t *testing.T) {
	stub := func(id, status string) *nomad.AllocationListStub {
		return &nomad.AllocationListStub{ID: id, ClientStatus: status}
	}
	followed := map[string]bool{"a": true}
	for _, tc := range []struct {
		name   string
		allocs []*nomad.AllocationListStub
		want   []string
	}{
		{"already followed", []*nomad.AllocationListStub{stub("a", "running")}, nil},
		{"pending is not yet", []*nomad.AllocationListStub{stub("b", "pending")}, nil},
		{"runs now", []*nomad.AllocationListStub{stub("a", "running"), stub("b", "running")}, []string{"b"}},
		{"once only", []*nomad.AllocationListStub{stub("b", "running")}, nil},
		{"complete and failed are not", []*nomad.AllocationListStub{stub("c", "complete"), stub("d", "failed")}, nil},
	} {
		if got := newlyRunning(tc.allocs, followed); !slices.Equal(got, tc.want) {
			t.Errorf("%s: newlyRunning = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHTTPSProber(t *testing.T) {
	var healthy atomic.Bool
	var sawAuth atomic.Value
	var elsewhere atomic.Int32 // requests for another host
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "example.com" {
			elsewhere.Add(1)
			return
		}
		sawAuth.Store(r.Header.Get(router.HeaderSecret))
		switch r.URL.Path {
		case "/away": // a function that sends its callers to another host
			http.Redirect(w, r, "https://other.example.com/healthz", http.StatusFound)
			return
		case "/moved": // or elsewhere on its own
			http.Redirect(w, r, "/healthz", http.StatusMovedPermanently)
			return
		}
		if r.URL.Path != "/healthz" || !healthy.Load() {
			http.Error(w, "not yet", http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	u, _ := url.Parse(srv.URL)
	p := &HTTPSProber{Addr: u.Host, Roots: roots, Auth: func(host string) http.Header {
		return http.Header{router.HeaderKey: {"k"}, router.HeaderSecret: {"s-" + host}}
	}}
	// httptest's certificate names example.com and *.example.com.
	r := router.Route{Function: "web", Host: "example.com", URL: "https://example.com", HealthPath: "/healthz", ProxyAuth: true}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := p.Probe(ctx, r, 0)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("probe of an unhealthy route = %v, want the last status", err)
	}
	healthy.Store(true)
	if err := p.Probe(context.Background(), r, 250*time.Millisecond); err != nil {
		t.Errorf("probe of a healthy route: %v", err)
	}
	if sawAuth.Load() != "s-example.com" {
		t.Errorf("proxy-auth routes are probed with %q, not the credential of their host", sawAuth.Load())
	}
	// A redirect is followed nowhere, least of all with the credential to
	// another host: the probe fails, saying so.
	for _, path := range []string{"/away", "/moved"} {
		r := r
		r.HealthPath = path
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := p.Probe(ctx, r, 0)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "redirect") {
			t.Errorf("probe of a route that redirects (%s) = %v, want a failure that names the redirect", path, err)
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the probe followed a redirect to another host %d times", n)
	}
	// A certificate that does not verify never counts.
	bad := &HTTPSProber{Addr: u.Host}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := bad.Probe(ctx, r, 0); err == nil {
		t.Error("a probe trusted an unknown certificate")
	}
}

func TestErrorsSayWhatToDo(t *testing.T) {
	for _, c := range []struct {
		err  error
		code api.ErrorCode
		want string
	}{
		{&OwnershipError{JobID: "j", Why: "it has no caravan.app meta"}, api.CodeOwnership, "Rename the app or remove the job by hand"},
		{&ForbiddenError{Token: "ci", Workspace: "prod"}, api.CodeForbidden, `token "ci" may not deploy to workspace "prod"`},
		{&NotFoundError{App: "x"}, api.CodeNotFound, "`caravan app list` shows the apps you can see"},
		{&HostTakenError{Host: "h", Owner: HostOwner{App: "a", Workspace: "w"}}, api.CodeHostTaken, "choose another label or domain"},
		{&CanaryPendingError{App: "a", Version: 2}, api.CodeCanaryPending, "caravan app promote a"},
		{&InputTooLargeError{Size: 20000, Limit: 16384}, api.CodeInputTooLarge, "pass a reference to the data instead"},
		{ErrLockLost, api.CodeUnavailable, "try again"},
		{ErrConflict, api.CodeConflict, "changed underneath"},
		{&DiagnosticsError{}, api.CodeInvalidSpec, "invalid spec (0 errors)"},
		{&BadRequestError{Why: "no"}, api.CodeBadRequest, "no"},
	} {
		if !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%T: %q does not say %q", c.err, c.err.Error(), c.want)
		}
		if got := api.ErrorCodeOf(c.err); got != c.code {
			t.Errorf("%T: code %s, want %s", c.err, got, c.code)
		}
	}
}

func TestTraefikAPI(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/http/routers/x-split@consul":
			w.Write([]byte(`{"entryPoints":["websecure"],"service":"x-split","rule":"Host(` + "`a`" + `)","priority":1048576,` +
				`"status":"enabled","using":["websecure"],"name":"x-split@consul","provider":"consul"}`))
		case "/api/http/services/x@consulcatalog":
			w.Write([]byte(`{"loadBalancer":{"servers":[{"url":"http://127.0.0.1:23001"}],"passHostHeader":true},"status":"enabled",` +
				`"usedBy":["x@consulcatalog"],"serverStatus":{"http://127.0.0.1:23001":"UP"},"name":"x@consulcatalog","provider":"consulcatalog","type":"loadbalancer"}`))
		case "/api/http/services/broken@consulcatalog":
			http.Error(w, "boom", http.StatusInternalServerError)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	p := TraefikAPI{Addr: srv.URL}
	ctx := context.Background()
	if got, err := p.RouterService(ctx, "x-split@consul"); err != nil || got != "x-split" {
		t.Errorf("RouterService = %q, %v", got, err)
	}
	if got, err := p.RouterService(ctx, "gone@consul"); err != nil || got != "" {
		t.Errorf("RouterService of a missing router = %q, %v", got, err)
	}
	if got, err := p.Servers(ctx, "x@consulcatalog"); err != nil || len(got) != 1 || got[0] != "http://127.0.0.1:23001" {
		t.Errorf("Servers = %v, %v", got, err)
	}
	if got, err := p.Servers(ctx, "gone@consulcatalog"); err != nil || got != nil {
		t.Errorf("Servers of a missing service = %v, %v", got, err)
	}
	if _, err := p.Servers(ctx, "broken@consulcatalog"); err == nil {
		t.Error("a 500 from Traefik's API is not an error")
	}
}
