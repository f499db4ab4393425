package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/spec"
)

const bundlesSpec = `app "b" {
  workspace = "dev"
  function "web" {
    command = "node"
  }
  function "worker" {
    command = "node"
  }
  function "img" {
    image = "nginx"
  }
  function "assets" {
    image = "nginx"
    files {
      include = ["static"]
    }
  }
}
`

func TestCollectBundles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.hcl")
	os.WriteFile(path, []byte(bundlesSpec), 0o644)
	os.WriteFile(filepath.Join(dir, "server.js"), []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(dir, "static"), 0o755)
	os.WriteFile(filepath.Join(dir, "static", "index.html"), []byte("<p>"), 0o644)
	app, diags := spec.Parse([]byte(bundlesSpec), path)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	b, diags := collectBundles(path, app)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if b.ids["web"] == "" || b.ids["web"] != b.ids["worker"] || b.ids["assets"] == "" || b.ids["assets"] == b.ids["web"] {
		t.Fatalf("ids %v", b.ids)
	}
	if _, ok := b.ids["img"]; ok {
		t.Error("a docker function without files has a bundle")
	}
	if len(b.trees) != 2 || !slices.Equal(b.trees[b.ids["web"]].functions, []string{"web", "worker"}) {
		t.Errorf("trees %v", b.trees)
	}
	if files := b.trees[b.ids["assets"]].tree.Files; len(files) != 1 || files[0].Path != "static/index.html" {
		t.Errorf("assets' bundle %v", files)
	}
	if got := b.describe(); !strings.HasPrefix(got, "2 code bundles of 4 file(s), ") {
		t.Errorf("describe: %q", got)
	}

	// What cannot be bundled points at the files block, or the app.
	os.Symlink("/etc/passwd", filepath.Join(dir, "static", "leak"))
	_, diags = collectBundles(path, app)
	var lines []int
	for _, d := range diags {
		if !strings.Contains(d.Detail, "static/leak points to /etc/passwd") || d.Subject == nil {
			t.Fatalf("diagnostic %s: %s", d.Summary, d.Detail)
		}
		lines = append(lines, d.Subject.Start.Line)
	}
	// The default bundle (app line 1) and the assets block (line 14).
	if !slices.Equal(lines, []int{1, 14}) {
		t.Errorf("diagnostics at lines %v", lines)
	}
}
