package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

func TestArtifactCause(t *testing.T) {
	msg := `failed to download artifact "http://127.0.0.1:7474/v1/bundles/9f.tar?job=x&alloc=${NOMAD_ALLOC_ID}&sig=15f": getter subprocess failed: exit status 1: failed to download artifact: Get "http://127.0.0.1:7474/v1/bundles/9f.tar?alloc=b&job=x&sig=15f": dial tcp 127.0.0.1:7474: connect: connection refused`
	if got := artifactCause(msg); got != "Get <bundle URL>: dial tcp 127.0.0.1:7474: connect: connection refused" {
		t.Errorf("got %q", got)
	}
	msg = "failed to download artifact \"http://x/v1/bundles/b7.tar?sig=1\": getter subprocess failed: exit status 1: Checksums did not match for /tmp/a/archive.\nExpected: b7044320048b02e78351fb9aaa9ac57a074d6ab794deeb7573ce820c45c06c4f\nGot: 5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\n*sha256.Digest"
	if got := artifactCause(msg); got != "the bytes caravan server sent do not hash to the bundle's ID (its checksum, got sha256 5f70bf18a086): the stored bundle is damaged or was changed" {
		t.Errorf("got %q", got)
	}
}

const bundledApp = `app "coded" {
  workspace = "dev"
  function "web" {
    command = "node"
    args    = ["${spec_dir}/server.js"]
    web {}
  }
  function "site" {
    image = "nginx"
    web {
      port = 80
    }
  }
  function "job" {
    command  = "sh"
    schedule = "0 3 * * *"
  }
}
`

var idA, idB = strings.Repeat("a", 64), strings.Repeat("b", 64)

func TestAssignBundles(t *testing.T) {
	for _, tc := range []struct {
		name string
		ids  map[string]string
		want map[string]string
		err  string
	}{
		{"none: deployed without code", nil, nil, ""},
		{"every function with files", map[string]string{"web": idA, "job": idA}, map[string]string{"web": idA, "job": idA}, ""},
		{"one without", map[string]string{"web": idA}, nil, `function "job" has files but no bundle`},
		{"docker without files", map[string]string{"web": idA, "job": idA, "site": idB}, nil, `function "site" has no files`},
		{"unknown function", map[string]string{"web": idA, "job": idA, "gone": idB}, nil, `function "gone", which the spec does not have`},
		{"bad ID", map[string]string{"web": "abc", "job": idA}, nil, `"abc" is not a bundle ID`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, diags := spec.Parse([]byte(bundledApp), "app.hcl")
			if diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			err := assignBundles(app, tc.ids)
			if tc.err != "" {
				var bad *BadRequestError
				if !errors.As(err, &bad) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := bundlesOf(app); !maps.Equal(got, tc.want) {
				t.Errorf("bundles %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCodeChanged(t *testing.T) {
	for _, tc := range []struct {
		name      string
		live, now map[string]string
		hasLive   bool
		want      []string
	}{
		{"first version", nil, map[string]string{"web": idA}, false, nil},
		{"same code", map[string]string{"web": idA}, map[string]string{"web": idA}, true, nil},
		{"new code", map[string]string{"web": idA, "job": idA}, map[string]string{"web": idB, "job": idA}, true, []string{"web"}},
		{"code where there was none", nil, map[string]string{"web": idA}, true, []string{"web"}},
		{"a function that lost its code is not new code", map[string]string{"web": idA}, nil, true, nil},
	} {
		if got := codeChanged(tc.live, tc.now, tc.hasLive); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAllocMayFetch(t *testing.T) {
	src := "http://caravan:7474/v1/bundles/" + idA + ".tar?job=dev--coded&alloc=x&sig=y"
	job := &nomad.Job{TaskGroups: []*nomad.TaskGroup{{Name: ptrTo("web"), Tasks: []*nomad.Task{{Artifacts: []*nomad.TaskArtifact{{GetterSource: &src}}}}}}}
	alloc := func(change func(a *nomad.Allocation)) *nomad.Allocation {
		a := &nomad.Allocation{ID: "a1", JobID: "dev--coded", TaskGroup: "web", ClientStatus: nomad.AllocClientStatusPending, Job: job}
		if change != nil {
			change(a)
		}
		return a
	}
	for _, tc := range []struct {
		name  string
		alloc *nomad.Allocation
		id    string
		job   string
		want  string
	}{
		{"pending, runs it", alloc(nil), idA, "dev--coded", ""},
		{"running", alloc(func(a *nomad.Allocation) { a.ClientStatus = nomad.AllocClientStatusRunning }), idA, "dev--coded", ""},
		{"a dispatched call of the job", alloc(func(a *nomad.Allocation) { a.JobID = "dev--coded/dispatch-1-2" }), idA, "dev--coded", ""},
		{"another job", alloc(func(a *nomad.Allocation) { a.JobID = "dev--other" }), idA, "dev--coded", "belongs to job dev--other"},
		{"a job named like it", alloc(func(a *nomad.Allocation) { a.JobID = "dev--coded2" }), idA, "dev--coded", "belongs to job"},
		{"finished", alloc(func(a *nomad.Allocation) { a.ClientStatus = nomad.AllocClientStatusComplete }), idA, "dev--coded", "is complete"},
		{"another bundle", alloc(nil), idB, "dev--coded", "does not run bundle"},
		{"another group", alloc(func(a *nomad.Allocation) { a.TaskGroup = "api" }), idA, "dev--coded", "does not run bundle"},
		{"none", nil, idA, "dev--coded", "no such allocation"},
	} {
		got := allocMayFetch(tc.alloc, tc.id, tc.job)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// packed is a small bundle: its ID and gzip bytes.
func packed(t *testing.T, files map[string]string) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	for p, body := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tree, diags := bundle.Collect(dir, bundle.Selection{}, bundle.Limits{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var buf bytes.Buffer
	id, err := bundle.Pack(&buf, tree)
	if err != nil {
		t.Fatal(err)
	}
	return id, buf.Bytes()
}

func (h *harness) upload(id string, b []byte) {
	h.t.Helper()
	if _, err := h.o.PutBundle(context.Background(), ci, "", id, bytes.NewReader(b)); err != nil {
		h.t.Fatalf("PutBundle: %v", err)
	}
}

func (h *harness) deployCode(src []byte, ids map[string]string) (*DeployResult, error) {
	return h.o.Deploy(context.Background(), ci, DeployRequest{Spec: src, Filename: "/src/app.hcl", Bundles: ids})
}

const codedShop = `app "shop" {
  workspace = "dev"
  function "web" {
    command = "node"
    args    = ["${spec_dir}/server.js"]
    web {}
  }
  function "worker" {
    command = "node"
    args    = ["${spec_dir}/worker.js"]
  }
}
`

// TestDeployBundles: a bundle is uploaded once, a version records its
// bundles and says whose code changed, an unchanged tree is a no-op, the
// tasks fetch their bundles by signed URLs that the fetch accepts only
// from an allocation that runs them, and a rollback restores the code.
func TestDeployBundles(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	v1, b1 := packed(t, map[string]string{"server.js": "v1", "worker.js": "w"})
	v2, b2 := packed(t, map[string]string{"server.js": "v2", "worker.js": "w"})
	h.upload(v1, b1)
	h.upload(v1, b1) // already stored: not counted
	if n := h.o.BundleUploads(); n != 1 {
		t.Fatalf("%d uploads, want 1", n)
	}
	if missing, err := h.o.MissingBundles(ctx, ci, "", []string{v1, v2, v2}); err != nil || !slices.Equal(missing, []string{v2}) {
		t.Fatalf("missing %v, %v", missing, err)
	}
	src := []byte(codedShop)
	if _, err := h.deployCode(src, map[string]string{"web": v2, "worker": v1}); !errors.As(err, new(*BundleMissingError)) {
		t.Fatalf("a deploy of a bundle not uploaded: %v", err)
	}
	if rec, _, _ := h.store.App(ctx, "dev--shop"); rec != nil {
		t.Fatal("a refused deploy left a record")
	}
	if _, err := h.deployCode(src, map[string]string{"web": v1, "worker": v1}); err != nil {
		t.Fatal(err)
	}
	job, _ := h.nomad.Job(ctx, "dev--shop")
	art := job.TaskGroups[0].Tasks[0].Artifacts[0]
	if args := fmt.Sprint(job.TaskGroups[0].Tasks[0].Config["args"]); args != "[${NOMAD_TASK_DIR}/bundle/server.js]" {
		t.Errorf("args %v", args)
	}
	sig := BundleSignature([]byte("test bundle key"), v1, "dev--shop")
	if !strings.HasSuffix(*art.GetterSource, "&sig="+sig) || art.GetterOptions["checksum"] != "sha256:"+v1 {
		t.Fatalf("artifact %s %v", *art.GetterSource, art.GetterOptions)
	}

	// The same tree: a no-op.
	if res, err := h.deployCode(src, map[string]string{"web": v1, "worker": v1}); err != nil || res.Changed {
		t.Fatalf("the same tree again: %+v, %v", res, err)
	}
	// New code for web: web is updated, its code changed; worker keeps its containers.
	h.upload(v2, b2)
	res, err := h.deployCode(src, map[string]string{"web": v2, "worker": v1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 2 || res.Functions[0].Change != Updated || !res.Functions[0].CodeChanged ||
		res.Functions[1].Change != Unchanged || res.Functions[1].CodeChanged {
		t.Fatalf("new code for web: %+v", res.Functions)
	}
	v, _ := h.store.Version(ctx, "dev--shop", 1, 2)
	if !slices.Equal(v.CodeChanged, []string{"web"}) || v.Bundles["web"] != v2 || v.Bundles["worker"] != v1 {
		t.Fatalf("version 2: code changed %v, bundles %v", v.CodeChanged, v.Bundles)
	}

	// The fetch: signed, from a live allocation that runs the bundle.
	var alloc *nomad.Allocation
	for _, a := range h.nomad.allocs {
		if a.TaskGroup == "web" && a.ClientStatus == nomad.AllocClientStatusRunning {
			job, _ := h.nomad.Job(ctx, "dev--shop")
			a.Job = job
			alloc = a
		}
	}
	rc, err := h.o.OpenBundle(ctx, v2, "dev--shop", alloc.ID, BundleSignature([]byte("test bundle key"), v2, "dev--shop"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, b2) {
		t.Error("OpenBundle served other bytes")
	}
	for name, try := range map[string][4]string{
		"another bundle's signature":             {v2, "dev--shop", alloc.ID, BundleSignature([]byte("test bundle key"), v1, "dev--shop")},
		"another job's signature":                {v2, "dev--shop", alloc.ID, BundleSignature([]byte("test bundle key"), v2, "dev--other")},
		"another key":                            {v2, "dev--shop", alloc.ID, BundleSignature([]byte("other key"), v2, "dev--shop")},
		"no allocation":                          {v2, "dev--shop", "", BundleSignature([]byte("test bundle key"), v2, "dev--shop")},
		"an allocation that runs v2 asks for v1": {v1, "dev--shop", alloc.ID, BundleSignature([]byte("test bundle key"), v1, "dev--shop")},
	} {
		if _, err := h.o.OpenBundle(ctx, try[0], try[1], try[2], try[3]); !errors.As(err, new(*BundleAccessError)) {
			t.Errorf("%s: %v", name, err)
		}
	}

	// A rollback restores version 1's code, and uploads nothing.
	res, err = h.o.Rollback(ctx, ci, ChangeRequest{AppRef: AppRef{App: "shop", Workspace: "dev"}})
	if err != nil {
		t.Fatal(err)
	}
	job, _ = h.nomad.Job(ctx, "dev--shop")
	if src := *job.TaskGroups[0].Tasks[0].Artifacts[0].GetterSource; !strings.Contains(src, v1+".tar") {
		t.Errorf("the rollback runs %s", src)
	}
	if n := h.o.BundleUploads(); n != 2 {
		t.Errorf("%d uploads, want 2", n)
	}

	// GC: both bundles are referenced; an unreferenced old one goes.
	v3, b3 := packed(t, map[string]string{"server.js": "v3", "worker.js": "w"})
	h.upload(v3, b3)
	if gone, err := h.o.CollectBundles(ctx, time.Hour); err != nil || len(gone) != 0 {
		t.Fatalf("collect within the grace period: %v, %v", gone, err)
	}
	if gone, err := h.o.CollectBundles(ctx, -time.Second); err != nil || !slices.Equal(gone, []string{v3}) {
		t.Fatalf("collect: %v, %v", gone, err)
	}

	// A version whose bundle is gone cannot be rolled back to, and
	// nothing changes.
	if err := h.o.bundles.Delete(ctx, v2); err != nil {
		t.Fatal(err)
	}
	before, _, _ := h.store.App(ctx, "dev--shop")
	_, err = h.o.Rollback(ctx, ci, ChangeRequest{AppRef: AppRef{App: "shop", Workspace: "dev"}, Version: 2})
	var missing *BundleMissingError
	if !errors.As(err, &missing) || missing.Version != 2 || !strings.Contains(err.Error(), "version 2's code is gone") {
		t.Fatalf("a rollback to a collected bundle: %v", err)
	}
	if after, _, _ := h.store.App(ctx, "dev--shop"); after.LatestVersion != before.LatestVersion {
		t.Error("a refused rollback numbered a version")
	}
}

func TestPutBundleRefuses(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id, b := packed(t, map[string]string{"a": "1"})
	var invalid *BundleInvalidError
	if _, err := h.o.PutBundle(ctx, ci, "", idA, bytes.NewReader(b)); !errors.As(err, &invalid) {
		t.Errorf("bytes of another ID: %v", err)
	}
	if _, err := h.o.PutBundle(ctx, ci, "", "nope", bytes.NewReader(b)); !errors.As(err, new(*BadRequestError)) {
		t.Errorf("a bad ID: %v", err)
	}
	if _, err := h.o.PutBundle(ctx, ci, "", id, bytes.NewReader(b[:len(b)/2])); err == nil {
		t.Error("half a bundle was stored")
	}
	if has, _ := h.o.bundles.Has(ctx, id); has {
		t.Error("a refused upload was stored")
	}
	big, bb := packed(t, map[string]string{"big": strings.Repeat("x", 100)})
	h.o.bundleLimits = bundle.Limits{MaxSize: 10}
	var tl *BundleTooLargeError
	if _, err := h.o.PutBundle(ctx, ci, "", big, bytes.NewReader(bb)); !errors.As(err, &tl) || tl.Largest[0].Path != "big" {
		t.Errorf("over the limit: %v", err)
	}
	if h.o.BundleUploads() != 0 {
		t.Error("a refused upload was counted")
	}
}

// TestBundleIDOpensNothingInAnotherWorkspace: a workspace deploys only the
// bundles it uploaded. A bundle's ID (another workspace may read it in
// Nomad or in its history) is missing to a workspace that never sent its
// files, and an upload of those files, verified as any, grants it.
func TestBundleIDOpensNothingInAnotherWorkspace(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id, b := packed(t, map[string]string{"server.js": "dev's code", "worker.js": "w"})
	h.upload(id, b) // workspace dev's
	acme := Caller{Name: "acme-ci", Workspace: "acme"}
	if missing, err := h.o.MissingBundles(ctx, acme, "", []string{id}); err != nil || !slices.Equal(missing, []string{id}) {
		t.Fatalf("missing to acme: %v, %v; want dev's bundle", missing, err)
	}
	src := []byte(strings.Replace(codedShop, `workspace = "dev"`, `workspace = "acme"`, 1))
	req := DeployRequest{Spec: src, Filename: "/src/app.hcl", Bundles: map[string]string{"web": id, "worker": id}}
	if _, err := h.o.Deploy(ctx, acme, req); !errors.As(err, new(*BundleMissingError)) {
		t.Fatalf("acme deployed dev's bundle by its ID: %v", err)
	}
	// Bytes that are not the bundle's grant nothing.
	_, other := packed(t, map[string]string{"server.js": "something else"})
	if _, err := h.o.PutBundle(ctx, acme, "", id, bytes.NewReader(other)); !errors.As(err, new(*BundleInvalidError)) {
		t.Fatalf("an upload of other bytes: %v", err)
	}
	if _, err := h.o.PutBundle(ctx, acme, "", id, bytes.NewReader(b)); err != nil {
		t.Fatalf("acme's upload of the same files: %v", err)
	}
	if missing, err := h.o.MissingBundles(ctx, acme, "", []string{id}); err != nil || len(missing) != 0 {
		t.Fatalf("missing to acme after its upload: %v, %v", missing, err)
	}
	if _, err := h.o.Deploy(ctx, acme, req); errors.As(err, new(*BundleMissingError)) {
		t.Fatalf("acme's deploy after its upload: %v", err)
	}
	if n := h.o.BundleUploads(); n != 1 {
		t.Errorf("%d bundles stored, want 1 (the same files, once)", n)
	}
	// A workspace token speaks for its own workspace only; an operator's
	// names one.
	if _, err := h.o.MissingBundles(ctx, acme, "dev", []string{id}); !errors.As(err, new(*ForbiddenError)) {
		t.Errorf("acme asking for dev: %v", err)
	}
	if _, err := h.o.MissingBundles(ctx, Caller{Name: "op", Workspace: "*"}, "", []string{id}); !errors.As(err, new(*BadRequestError)) {
		t.Errorf("an operator naming no workspace: %v", err)
	}
}
