package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/bundle"
)

// bundledServer is a node server that answers its version and whether
// the files its bundle must not hold are there.
func bundledServer(version string) string {
	return fmt.Sprintf(`const fs = require("fs"), path = require("path");
const has = (f) => fs.existsSync(path.join(__dirname, f));
require("http").createServer((q, s) => s.end(%q + " secret=" + has("secret.txt") + " deps=" + has("node_modules/dep.js") + " data=" + fs.readFileSync(path.join(__dirname, "data/msg.txt"), "utf8"))).listen(process.env.PORT, process.env.HOST);
`, version)
}

const bundledSpec = `app "%s" {
  workspace = "e2e"
  function "web" {
    command = "node"
    args    = ["${spec_dir}/server.js"]
    web {}
  }
}
`

// bundledApp writes an app with its code in a directory of its own.
func bundledApp(t *testing.T, name string) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	files := map[string]string{
		"server.js":           bundledServer("v1"),
		"data/msg.txt":        "hello\n",
		"secret.txt":          "caravanignored",
		".caravanignore":      "secret.txt\n",
		".gitignore":          "node_modules/\n",
		"node_modules/dep.js": "gitignored",
	}
	for p, body := range files {
		abs := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(abs, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path = filepath.Join(dir, name+".hcl")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(bundledSpec, name)), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

func uploads() int64 { return env.server.Orchestrator().BundleUploads() }

var urlRE = regexp.MustCompile(`https://\S+`)

// TestBundles: the code travels with each deploy. A code change is a new
// version serving the new code, an unchanged tree is a no-op that uploads
// nothing, plan shows the change, a rollback restores the old code, and
// ignored files are not in the task.
func TestBundles(t *testing.T) {
	purge(t, "e2e--coded")
	dir, path := bundledApp(t, "coded")

	before := uploads()
	out, code := runCLI(t, "deploy", path)
	if code != 0 || !strings.Contains(out, "Uploaded the code of web") {
		t.Fatalf("deploy: exit %d\n%s", code, out)
	}
	url := urlRE.FindString(out)
	answers(t, url, "v1 secret=false deps=false data=hello\n")
	if got := uploads() - before; got != 1 {
		t.Fatalf("the first deploy uploaded %d bundles, want 1", got)
	}

	// The same tree again: nothing uploaded, nothing changed, fast.
	began := time.Now()
	out, code = runCLI(t, "deploy", path)
	took := time.Since(began)
	if code != 0 || !strings.Contains(out, "No changes") || strings.Contains(out, "Uploaded") || uploads()-before != 1 {
		t.Fatalf("deploy of the same tree: exit %d, %d uploads\n%s", code, uploads()-before, out)
	}
	t.Logf("a deploy of an unchanged tree took %s (the CLI process included)", took.Round(time.Millisecond))

	// New code: plan says so, deploy makes a version that serves it.
	os.WriteFile(filepath.Join(dir, "server.js"), []byte(bundledServer("v2")), 0o644)
	out, code = runCLI(t, "plan", path)
	if code != 2 || !strings.Contains(out, "web (new code)") {
		t.Fatalf("plan of new code: exit %d\n%s", code, out)
	}
	if uploads()-before != 1 {
		t.Fatal("plan uploaded a bundle")
	}
	out, code = runCLI(t, "deploy", path)
	if code != 0 || !strings.Contains(out, "updated web (new code)") || !strings.Contains(out, "Version 2 is live") {
		t.Fatalf("deploy of new code: exit %d\n%s", code, out)
	}
	answers(t, url, "v2 secret=false deps=false data=hello\n")
	h := history(t, "coded")
	if v := h.Versions[len(h.Versions)-1]; !slices.Equal(v.CodeChanged, []string{"web"}) || v.Bundles["web"] == "" {
		t.Fatalf("version 2's record: code changed %v, bundles %v", v.CodeChanged, v.Bundles)
	}

	// A rollback is a new version with the old code; nothing is uploaded.
	out, code = runCLI(t, "app", "rollback", "coded", "--workspace", "e2e")
	if code != 0 {
		t.Fatalf("rollback: exit %d\n%s", code, out)
	}
	answers(t, url, "v1 secret=false deps=false data=hello\n")
	if uploads()-before != 2 {
		t.Fatalf("%d uploads, want 2", uploads()-before)
	}
	h = history(t, "coded")
	if n := len(h.Versions); n != 3 || h.Versions[2].Bundles["web"] != h.Versions[0].Bundles["web"] {
		t.Fatalf("history after the rollback: %d versions, bundles %v / %v", n, h.Versions[0].Bundles, h.Versions[n-1].Bundles)
	}

	// Garbage collection keeps what versions reference, and takes the rest.
	os.WriteFile(filepath.Join(dir, "server.js"), []byte(bundledServer("never deployed")), 0o644)
	tree, diags := bundle.Collect(dir, bundle.Selection{}, bundle.Limits{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var packed bytes.Buffer
	orphan, _ := bundle.Pack(&packed, tree)
	ctx := context.Background()
	if _, err := env.client.UploadBundle(ctx, "e2e", orphan, &packed); err != nil {
		t.Fatal(err)
	}
	gone, err := env.server.Orchestrator().CollectBundles(ctx, -time.Second)
	if err != nil || !slices.Contains(gone, orphan) {
		t.Fatalf("collect: %v, %v", gone, err)
	}
	for _, v := range h.Versions {
		if slices.Contains(gone, v.Bundles["web"]) {
			t.Fatalf("collect took version %d's bundle", v.Version)
		}
	}

	// A rollback to a version whose bundle is gone says so, and changes nothing.
	v2 := h.Versions[1].Bundles["web"]
	if err := os.Remove(filepath.Join(bundleDir(), v2[:2], v2+".tar.gz")); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "app", "rollback", "coded", "2", "--workspace", "e2e")
	if code != 1 || !strings.Contains(out, "version 2's code is gone") {
		t.Fatalf("rollback to a version without its bundle: exit %d\n%s", code, out)
	}
	if h := history(t, "coded"); len(h.Versions) != 3 || h.App.LiveVersion != 3 {
		t.Fatalf("a refused rollback changed the history: %d versions, live %d", len(h.Versions), h.App.LiveVersion)
	}
	answers(t, url, "v1 secret=false deps=false data=hello\n")
}

// TestBundleRefusals: a tree over the limit and a bundle the server does
// not have are refused before anything is numbered or changed.
func TestBundleRefusals(t *testing.T) {
	purge(t, "e2e--refused")
	dir, path := bundledApp(t, "refused")
	big := bytes.Repeat([]byte{'x'}, int(bundle.DefaultMaxSize)+1)
	if err := os.WriteFile(filepath.Join(dir, "model.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	before := uploads()
	out, code := runCLI(t, "deploy", path)
	if code != 1 || !strings.Contains(out, "Bundle too large") || !strings.Contains(out, "model.bin (256.0 MiB)") {
		t.Fatalf("deploy of a tree over the limit: exit %d\n%s", code, out)
	}
	if uploads() != before {
		t.Fatal("a tree over the limit was uploaded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, _ := os.ReadFile(path)
	_, err := env.client.DeployBody(ctx, api.DeployBody{Filename: path, Spec: string(src), Bundles: map[string]string{"web": strings.Repeat("0", 64)}})
	if api.ErrorCodeOf(err) != api.CodeBundleMissing {
		t.Fatalf("a deploy of a bundle the server lacks: %v", err)
	}
	if _, err := env.client.History(ctx, "refused", api.ChangeBody{Workspace: "e2e"}); api.ErrorCodeOf(err) != api.CodeNotFound {
		t.Fatalf("a refused deploy left a record: %v", err)
	}
}

// TestTamperedBundleFailsTheDeploy: a stored bundle whose bytes are not
// its ID fails the allocation's artifact check; the deploy fails, and the
// version before serves on.
func TestTamperedBundleFailsTheDeploy(t *testing.T) {
	purge(t, "e2e--tampered")
	dir, path := bundledApp(t, "tampered")
	out, code := runCLI(t, "deploy", path)
	if code != 0 {
		t.Fatalf("deploy: exit %d\n%s", code, out)
	}
	url := urlRE.FindString(out)
	answers(t, url, "v1 secret=false deps=false data=hello\n")

	// Pack v2 and upload it, then swap the stored bytes for another tar.
	os.WriteFile(filepath.Join(dir, "server.js"), []byte(bundledServer("v2")), 0o644)
	tree, diags := bundle.Collect(dir, bundle.Selection{}, bundle.Limits{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var packed bytes.Buffer
	id, err := bundle.Pack(&packed, tree)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := env.client.UploadBundle(ctx, "e2e", id, bytes.NewReader(packed.Bytes())); err != nil {
		t.Fatal(err)
	}
	var evil bytes.Buffer
	zw := gzip.NewWriter(&evil)
	zw.Write(bytes.Repeat([]byte{0}, 1024)) // an empty tar: not the bundle
	zw.Close()
	stored := filepath.Join(bundleDir(), id[:2], id+".tar.gz")
	if err := os.WriteFile(stored, evil.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	src, _ := os.ReadFile(path)
	_, err = env.client.DeployBody(ctx, api.DeployBody{Filename: path, Spec: string(src), Bundles: map[string]string{"web": id}, Timeout: "2m"})
	if api.ErrorCodeOf(err) != api.CodeRolloutFailed {
		t.Fatalf("a deploy of a tampered bundle: %v", err)
	}
	t.Logf("the deploy failed with: %v", err)
	if !strings.Contains(err.Error(), "code bundle could not be fetched: the bytes caravan server sent do not hash to the bundle's ID") {
		t.Errorf("the failure does not say the bundle could not be fetched: %v", err)
	}
	answers(t, url, "v1 secret=false deps=false data=hello\n")
}

// TestBundleOnASecondClient: an allocation placed on another Nomad client,
// with a data directory of its own, runs the bundled code from its own
// task directory: nothing of the deploying machine's directory is used.
func TestBundleOnASecondClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	nodes, _, err := env.nomad.Nodes().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	var first string
	for _, n := range nodes {
		if n.Status == "ready" {
			first = n.ID
		}
	}
	second, err := env.stack.StartClient(ctx, "client-2")
	if err != nil {
		t.Fatal(err)
	}
	eligible := func() {
		if _, err := env.nomad.Nodes().ToggleEligibility(first, true, nil); err != nil {
			t.Logf("making the first client eligible again: %v", err)
		}
	}
	t.Cleanup(func() {
		eligible()
		// The app is stopped first (its allocations on the second client
		// end), then the client, then Nomad forgets the node.
		env.client.Stop(context.Background(), "elsewhere", api.ChangeBody{Workspace: "e2e"})
		eventually(t, time.Minute, "the second client runs nothing", func() error {
			allocs, _, err := env.nomad.Nodes().Allocations(second, nil)
			if err != nil {
				return err
			}
			for _, a := range allocs {
				if a.ClientStatus == "running" || a.ClientStatus == "pending" {
					return fmt.Errorf("allocation %s is %s", a.ID, a.ClientStatus)
				}
			}
			return nil
		})
		if err := env.stack.Stop("client-2"); err != nil {
			t.Logf("stopping the second client: %v", err)
		}
		if _, _, err := env.nomad.Nodes().Purge(second, nil); err != nil {
			t.Logf("purging the second client's node: %v", err)
		}
	})
	purge(t, "e2e--elsewhere")
	// New allocations go to the second client only.
	if _, err := env.nomad.Nodes().ToggleEligibility(first, false, nil); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	js := `require("http").createServer((q, s) => s.end(__dirname + " " + require("fs").readFileSync(__dirname + "/msg.txt", "utf8"))).listen(process.env.PORT, process.env.HOST);`
	os.WriteFile(filepath.Join(dir, "server.js"), []byte(js), 0o644)
	os.WriteFile(filepath.Join(dir, "msg.txt"), []byte("from the bundle\n"), 0o644)
	path := filepath.Join(dir, "elsewhere.hcl")
	os.WriteFile(path, []byte(fmt.Sprintf(bundledSpec, "elsewhere")), 0o644)
	out, code := runCLI(t, "deploy", path)
	eligible()
	if code != 0 {
		t.Fatalf("deploy: exit %d\n%s", code, out)
	}
	url := urlRE.FindString(out)
	eventually(t, 30*time.Second, "the function answers from the second client's task directory", func() error {
		status, body, err := get(t, url)
		if err != nil {
			return err
		}
		clientDir := env.stack.ClientDir("client-2")
		if status != 200 || !strings.HasPrefix(body, clientDir+"/") || !strings.HasSuffix(body, "/web/local/bundle from the bundle\n") {
			return fmt.Errorf("%d %q, want the bundle under %s", status, body, clientDir)
		}
		return nil
	})
	allocs, _, err := env.nomad.Jobs().Allocations("e2e--elsewhere", false, nsq("e2e--elsewhere"))
	if err != nil || len(allocs) != 1 || allocs[0].NodeID != second {
		t.Fatalf("allocations %v, %v; want one on the second client %s", allocs, err, second)
	}
}

// TestBundledCallsAndRuns: a callable's dispatched calls and a scheduled
// function's runs start long after the deploy, each as a child job of
// its own: they fetch the bundle too (the URL is for the parent job and
// opens for its runs' live allocations).
func TestBundledCallsAndRuns(t *testing.T) {
	purge(t, "e2e--jobs")
	for _, id := range []string{"e2e--jobs--call--echo", "e2e--jobs--cron--tick"} {
		id := id
		t.Cleanup(func() { env.nomad.Jobs().Deregister(id, true, nsw(id)) })
	}
	dir, _ := bundledApp(t, "jobs")
	out := filepath.Join(t.TempDir(), "ticked")
	os.WriteFile(filepath.Join(dir, "echo.js"), []byte(`const fs = require("fs");
console.log(fs.readFileSync(__dirname + "/data/msg.txt", "utf8").trim() + " " + fs.readFileSync(process.env.CARAVAN_INPUT, "utf8"));`), 0o644)
	os.WriteFile(filepath.Join(dir, "tick.sh"), []byte("#!/bin/sh\ncat \"$(dirname \"$0\")/data/msg.txt\" > \"$1\"\n"), 0o755)
	spec := fmt.Sprintf(`app "jobs" {
  workspace = "e2e"
  function "web" {
    command = "node"
    args    = ["${spec_dir}/server.js"]
    web {}
  }
  function "echo" {
    command  = "node"
    args     = ["${spec_dir}/echo.js"]
    callable = true
  }
  function "tick" {
    command = "${spec_dir}/tick.sh"
    args    = [%q]
    period  = "1h"
  }
}
`, out)
	path := filepath.Join(dir, "jobs.hcl")
	os.WriteFile(path, []byte(spec), 0o644)
	if out, code := runCLI(t, "deploy", path); code != 0 {
		t.Fatalf("deploy: exit %d\n%s", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := env.client.Call(ctx, "jobs", "echo", api.ChangeBody{Workspace: "e2e"}, []byte(`{"n":1}`), time.Minute)
	if err != nil || res.ExitCode != 0 || res.Output != "hello {\"n\":1}\n" {
		t.Fatalf("call: %+v, %v", res, err)
	}
	run, err := env.client.Run(ctx, "jobs", api.RunBody{ChangeBody: api.ChangeBody{Workspace: "e2e"}, Function: "tick"})
	if err != nil || run.Status != "succeeded" {
		t.Fatalf("run: %+v, %v", run, err)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "hello\n" {
		t.Fatalf("tick wrote %q, %v", b, err)
	}
}
