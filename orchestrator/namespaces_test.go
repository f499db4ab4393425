package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/api"
	nomad "github.com/hashicorp/nomad/api"
)

// TestMissingNamespaceChangesNothing: a workspace whose Nomad namespace
// does not exist (on a server that may not create it) is refused before
// a version is numbered, a hostname claimed or a job planned, with the
// command that creates it; the policy is checked first, and asks Nomad
// nothing.
func TestMissingNamespaceChangesNothing(t *testing.T) {
	h := newHarness(t)
	h.mustDeploy(shopSpec("hi"))
	if !slices.Equal(h.nomad.namespaces, []string{"dev"}) {
		t.Errorf("a deploy asked for the namespaces of %v, want [dev]", h.nomad.namespaces)
	}
	calls, before := slices.Clone(h.nomad.calls), h.record("dev--shop")
	h.nomad.namespaceErr = &NamespaceMissingError{Namespace: "caravan-dev", Workspace: "dev"}

	check := func(what string, err error) {
		t.Helper()
		var ne *NamespaceMissingError
		if !errors.As(err, &ne) || api.ErrorCodeOf(err) != api.CodeConflict {
			t.Fatalf("%s: err = %v, want a *NamespaceMissingError (conflict)", what, err)
		}
		if !strings.Contains(err.Error(), `nomad namespace apply -description "caravan workspace dev" caravan-dev`) {
			t.Errorf("%s: %q does not say how to create the namespace", what, err)
		}
	}
	_, err := h.deploy(shopSpec("changed"))
	check("deploy", err)
	_, err = h.o.Rollover(context.Background(), ci, ChangeRequest{AppRef: AppRef{App: "shop"}})
	check("rollover", err)
	// plan lists it as a problem, and asks Nomad for no plan.
	res, err := h.o.Plan(context.Background(), ci, DeployRequest{Filename: "app.hcl", Spec: shopSpec("changed")})
	if err != nil || len(res.Problems) != 1 || !strings.Contains(res.Problems[0], "nomad namespace apply") || !res.Changed {
		t.Errorf("plan: %+v, %v; want a change and the missing namespace as its problem", res, err)
	}
	if !slices.Equal(h.nomad.calls, calls) {
		t.Errorf("Nomad calls after the refusals: %v", h.nomad.calls[len(calls):])
	}
	if after := h.record("dev--shop"); after.LatestVersion != before.LatestVersion {
		t.Errorf("a refusal handed out version %d", after.LatestVersion)
	}

	// The policy refuses first, without asking Nomad.
	h.nomad.namespaces = nil
	h.o.policy = mustPolicy(t, "workspace \"dev\" {\n  drivers = [\"exec\", \"docker\"]\n}\n")
	_, err = h.deploy(shopSpec("changed"))
	if pe := new(PolicyError); !errors.As(err, &pe) || len(h.nomad.namespaces) != 0 {
		t.Errorf("with a policy refusal: err %v, namespaces asked %v", err, h.nomad.namespaces)
	}
}

// fakeNamespaceAPI answers Nomad's namespace endpoints: the namespaces in
// exist, a create refused with createStatus (0: accepted); it counts the
// requests.
type fakeNamespaceAPI struct {
	exist        map[string]bool
	createStatus int
	requests     []string
}

func (f *fakeNamespaceAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	name := strings.TrimPrefix(r.URL.Path, "/v1/namespace/")
	switch {
	case r.Method == http.MethodGet && f.exist[name]:
		w.Write([]byte(`{"Name":"` + name + `"}`))
	case r.Method == http.MethodGet:
		http.Error(w, "namespace not found", http.StatusNotFound)
	case f.createStatus != 0:
		http.Error(w, "Permission denied", f.createStatus)
	default:
		var ns nomad.Namespace
		_ = json.NewDecoder(r.Body).Decode(&ns)
		f.exist[ns.Name] = true
		w.Write([]byte(`{}`))
	}
}

func TestNamespacesEnsure(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		exist        bool
		create       bool
		createStatus int
		want         string // in the error; "" none
		requests     []string
	}{
		{name: "exists", exist: true, requests: []string{"GET /v1/namespace/caravan-acme"}},
		{name: "missing", want: "nomad namespace apply", requests: []string{"GET /v1/namespace/caravan-acme"}},
		{name: "created", create: true, requests: []string{"GET /v1/namespace/caravan-acme", "PUT /v1/namespace"}},
		{name: "no management token", create: true, createStatus: http.StatusForbidden, want: "takes a management token",
			requests: []string{"GET /v1/namespace/caravan-acme", "PUT /v1/namespace"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeNamespaceAPI{exist: map[string]bool{"caravan-acme": tc.exist}, createStatus: tc.createStatus}
			srv := httptest.NewServer(f)
			defer srv.Close()
			c, err := nomad.NewClient(&nomad.Config{Address: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			nc := NomadClient{Client: c, Namespaces: &Namespaces{Create: tc.create}}
			err = nc.Namespace(ctx, "acme")
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !slices.Equal(f.requests, tc.requests) {
				t.Errorf("requests %q, want %q", f.requests, tc.requests)
			}
			// Known once found or made: not asked again.
			f.requests = nil
			err2 := nc.Namespace(ctx, "acme")
			if tc.want == "" && (err2 != nil || len(f.requests) != 0) {
				t.Errorf("second time: %v, requests %q", err2, f.requests)
			}
		})
	}
}

// Every NomadClient call about a job goes to its workspace's namespace,
// whatever the client's default (NOMAD_NAMESPACE); calls by another ID
// name none.
func TestNomadClientCallsInTheJobsNamespace(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path+" ns="+r.URL.Query().Get("namespace"))
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/allocations") || r.URL.Path == "/v1/jobs":
			w.Write([]byte(`[]`))
		case strings.HasSuffix(r.URL.Path, "/scale"):
			w.Write([]byte(`{"TaskGroups":{}}`))
		default:
			w.Write([]byte(`{}`))
		}
	}))
	defer srv.Close()
	c, err := nomad.NewClient(&nomad.Config{Address: srv.URL, Namespace: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	n := NomadClient{Client: c}
	ctx := context.Background()
	id := "acme.prod--shop"
	job := &nomad.Job{ID: &id, Namespace: ptr("caravan-acme")}
	n.Job(ctx, id)
	n.Plan(ctx, job, false)
	n.Register(ctx, job, 0)
	n.Revert(ctx, id, 1)
	n.Deregister(ctx, id, true)
	n.Jobs(ctx, id+"--cron--")
	n.Summary(ctx, id)
	n.JobAllocations(ctx, id, 0)
	n.LatestDeployment(ctx, id)
	n.ForcePeriodic(ctx, id+"--cron--nightly")
	n.Dispatch(ctx, id+"--call--sum", nil, nil)
	n.Evaluation(ctx, "e1", 0)
	for _, g := range got {
		if strings.Contains(g, "/evaluation/") {
			if strings.HasSuffix(g, "ns=caravan-acme") {
				t.Errorf("%s: a call by evaluation ID names the job's namespace", g)
			}
			continue
		}
		if !strings.HasSuffix(g, " ns=caravan-acme") {
			t.Errorf("%s: want namespace caravan-acme", g)
		}
	}
	if len(got) < 12 {
		t.Errorf("only %d requests reached Nomad: %q", len(got), got)
	}
}
