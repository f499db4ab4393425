package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/hashicorp/hcl/v2"
)

func TestPatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		path    string
		dir     bool
		want    bool
	}{
		{"*.pyc", "a.pyc", false, true},
		{"*.pyc", "x/y/a.pyc", false, true},
		{"*.pyc", "a.py", false, false},
		{"node_modules", "node_modules", true, true},
		{"node_modules", "web/node_modules", true, true},
		{"build/", "build", true, true},
		{"build/", "build", false, false},
		{"/build", "build", true, true},
		{"/build", "src/build", true, false},
		{"docs/*.md", "docs/a.md", false, true},
		{"docs/*.md", "docs/x/a.md", false, false},
		{"docs/*.md", "x/docs/a.md", false, false},
		{"**/test", "test", true, true},
		{"**/test", "a/b/test", true, true},
		{"a/**/b", "a/b", false, true},
		{"a/**/b", "a/x/y/b", false, true},
		{"logs/**", "logs/a/b.txt", false, true},
		{"logs/**", "logs", true, false},
		{"a**b", "axyb", false, true},
		{"a**b", "ax/yb", false, false},
		{"?.txt", "a.txt", false, true},
		{"?.txt", "ab.txt", false, false},
		{"[abc].txt", "b.txt", false, true},
		{"[!abc].txt", "b.txt", false, false},
		{"[!abc].txt", "d.txt", false, true},
		{`\#file`, "#file", false, true},
		{`\!x`, "!x", false, true},
		{"trailing   ", "trailing", false, true},
	} {
		p, err := ParsePattern(tc.pattern)
		if err != nil || p == nil {
			t.Fatalf("ParsePattern(%q) = %v, %v", tc.pattern, p, err)
		}
		if got := p.Match(tc.path, tc.dir); got != tc.want {
			t.Errorf("%q matches %q (dir %v) = %v, want %v (re %s)", tc.pattern, tc.path, tc.dir, got, tc.want, p.re)
		}
	}
	for _, bad := range []string{"[abc", `x\`, "!", "/"} {
		if _, err := ParsePattern(bad); err == nil {
			t.Errorf("ParsePattern(%q) accepted it", bad)
		}
	}
	for _, blank := range []string{"", "   ", "# comment"} {
		if p, err := ParsePattern(blank); p != nil || err != nil {
			t.Errorf("ParsePattern(%q) = %v, %v; want nothing", blank, p, err)
		}
	}
}

// tree writes files (path -> content; a trailing "*" in the path makes it
// executable) under a new directory.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, body := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, "*") {
			p, mode = strings.TrimSuffix(p, "*"), 0o755
		}
		abs := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(abs, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(abs, mode); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func paths(tr *Tree) []string {
	var out []string
	for _, f := range tr.Files {
		out = append(out, f.Path)
	}
	return out
}

var subject = hcl.Range{Filename: "app.hcl", Start: hcl.Pos{Line: 3, Column: 3}, End: hcl.Pos{Line: 3, Column: 8}}

func TestCollect(t *testing.T) {
	files := map[string]string{
		"app.hcl":                 "app",
		"server.js":               "js",
		".gitignore":              "node_modules/\n*.log\n/dist\n!keep.log\n",
		".caravanignore":          "tests/\n!dist/\n",
		"keep.log":                "kept",
		"debug.log":               "dropped",
		"node_modules/x/index.js": "dep",
		"dist/out.js":             "built",
		"tests/a_test.js":         "test",
		"src/.gitignore":          "*.tmp\n",
		"src/lib.js":              "lib",
		"src/scratch.tmp":         "tmp",
		"other/scratch.tmp":       "tmp kept: src's .gitignore does not reach here",
		".git/HEAD":               "ref",
		"src/deep/.caravanignore": "secret.txt",
		"src/deep/secret.txt":     "no",
		"src/deep/public.txt":     "yes",
		"bin/run*":                "#!/bin/sh",
	}
	for _, tc := range []struct {
		name string
		sel  Selection
		want []string
	}{
		{"default", Selection{}, []string{".caravanignore", ".gitignore", "app.hcl", "bin/run", "dist/out.js", "keep.log",
			"other/scratch.tmp", "server.js", "src/.gitignore", "src/deep/.caravanignore", "src/deep/public.txt", "src/lib.js"}},
		{"include", Selection{Include: []string{"src", "server.js"}}, []string{"server.js", "src/.gitignore", "src/deep/.caravanignore", "src/deep/public.txt", "src/lib.js"}},
		{"include glob", Selection{Include: []string{"**/*.js"}}, []string{"dist/out.js", "server.js", "src/lib.js"}},
		{"exclude", Selection{Exclude: []string{"src/", ".*ignore", "*.hcl"}}, []string{"bin/run", "dist/out.js", "keep.log", "other/scratch.tmp", "server.js"}},
		{"nothing", Selection{Include: []string{}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := tree(t, files)
			tr, diags := Collect(root, tc.sel, Limits{})
			if diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			if got := paths(tr); !slices.Equal(got, tc.want) {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestCollectRefuses(t *testing.T) {
	root := tree(t, map[string]string{"ok.txt": "ok", "big.bin": strings.Repeat("x", 3000), "mid.bin": strings.Repeat("y", 2000), "inner/file": "f"})
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("s"), 0o644)
	must(t, os.Symlink(outside, filepath.Join(root, "leak")))
	must(t, os.Symlink("inner", filepath.Join(root, "dirlink")))
	must(t, os.Symlink("ok.txt", filepath.Join(root, "alias")))
	must(t, os.Symlink("nowhere", filepath.Join(root, "broken")))
	must(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))

	_, diags := Collect(root, Selection{Subject: subject}, Limits{MaxSize: 4000})
	var summaries []string
	for _, d := range diags {
		summaries = append(summaries, d.Summary)
		if d.Subject == nil || d.Subject.Filename != "app.hcl" || d.Subject.Start.Line != 3 {
			t.Errorf("%q does not point at the files block: %v", d.Summary, d.Subject)
		}
	}
	slices.Sort(summaries)
	want := []string{"Broken symlink in the bundle", "Bundle too large", "Not a regular file", "Symlink leaves the bundle's directory", "Symlink to a directory in the bundle"}
	if !slices.Equal(summaries, want) {
		t.Fatalf("got %q\nwant %q", summaries, want)
	}
	for _, d := range diags {
		if d.Summary == "Bundle too large" && !strings.Contains(d.Detail, "big.bin (2.9 KiB), mid.bin (2.0 KiB)") {
			t.Errorf("the size diagnostic does not name the largest files first: %s", d.Detail)
		}
		if d.Summary == "Symlink leaves the bundle's directory" && !strings.Contains(d.Detail, "leak points to "+outside) {
			t.Errorf("%s", d.Detail)
		}
	}

	// Excluded, none of them is a problem; a link inside the tree is its target's bytes.
	tr, diags := Collect(root, Selection{Exclude: []string{"leak", "dirlink", "broken", "fifo", "*.bin"}}, Limits{MaxSize: 4000})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if got := paths(tr); !slices.Equal(got, []string{"alias", "inner/file", "ok.txt"}) {
		t.Errorf("got %q", got)
	}

	if _, diags := Collect(root, Selection{Exclude: []string{"leak", "dirlink", "broken", "fifo"}}, Limits{MaxFiles: 2}); !diags.HasErrors() ||
		diags[0].Summary != "Too many files for a bundle" {
		t.Errorf("a tree over MaxFiles: %v", diags)
	}
	if _, diags := Collect(root, Selection{Include: []string{"[oops"}, Subject: subject}, Limits{}); !diags.HasErrors() ||
		diags[0].Summary != "Invalid files pattern" {
		t.Errorf("a bad include pattern: %v", diags)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDeterministic: the same files give the same ID whatever their
// times, owners' umask, permission bits beyond execute, or the order the
// directory lists them in; and the ID is pinned, so a change to the
// format (or to Go's tar writer) is seen here before it redeploys every
// app.
func TestDeterministic(t *testing.T) {
	files := map[string]string{"b.txt": "bee", "a/x.js": "x", "run.sh*": "#!/bin/sh\necho hi\n", strings.Repeat("long/", 30) + "name.txt": "pax"}
	one, two := tree(t, files), tree(t, files)
	old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	must(t, os.Chtimes(filepath.Join(two, "b.txt"), old, old))
	must(t, os.Chmod(filepath.Join(two, "b.txt"), 0o600))
	must(t, os.Chmod(filepath.Join(two, "run.sh"), 0o700))

	var ids []string
	for _, root := range []string{one, two} {
		tr, diags := Collect(root, Selection{}, Limits{})
		if diags.HasErrors() {
			t.Fatal(diags.Error())
		}
		id, err := Hash(tr)
		must(t, err)
		var buf bytes.Buffer
		packed, err := Pack(&buf, tr)
		must(t, err)
		if packed != id {
			t.Fatalf("Pack's ID %s differs from Hash's %s", packed, id)
		}
		info, err := Verify(bytes.NewReader(buf.Bytes()), id, Limits{})
		must(t, err)
		if info.Files != 4 {
			t.Errorf("Verify counted %d files", info.Files)
		}
		ids = append(ids, id)
	}
	if ids[0] != ids[1] {
		t.Fatalf("the same files gave %s and %s", ids[0], ids[1])
	}
	const pinned = "cdfb094a291e3aeb9ed6df762411cb50535d891c8b73eb9c37669c8eea3af3da"
	if ids[0] != pinned {
		t.Errorf("the ID of the test tree is %s, was %s: the bundle format changed, and every deployed app's code would count as changed", ids[0], pinned)
	}
	// Content and the execute bit are part of the ID.
	must(t, os.WriteFile(filepath.Join(two, "b.txt"), []byte("bea"), 0o644))
	tr, _ := Collect(two, Selection{}, Limits{})
	if id, _ := Hash(tr); id == ids[0] {
		t.Error("a changed file kept the ID")
	}
	must(t, os.WriteFile(filepath.Join(two, "b.txt"), []byte("bee"), 0o644))
	must(t, os.Chmod(filepath.Join(two, "run.sh"), 0o644))
	tr, _ = Collect(two, Selection{}, Limits{})
	if id, _ := Hash(tr); id == ids[0] {
		t.Error("dropping the execute bit kept the ID")
	}
}

func packed(t *testing.T, entries []tar.Header, body string) ([]byte, string) {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, h := range entries {
		h.Size = int64(len(body))
		must(t, tw.WriteHeader(&h))
		tw.Write([]byte(body))
	}
	must(t, tw.Close())
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write(tb.Bytes())
	zw.Close()
	id, _ := hashBytes(tb.Bytes())
	return zb.Bytes(), id
}

func TestVerifyRefuses(t *testing.T) {
	reg := func(name string, mode int64) tar.Header {
		return tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, ModTime: epoch, Format: tar.FormatPAX}
	}
	good, id := packed(t, []tar.Header{reg("a", 0o644), reg("b/c", 0o755)}, "xyz")
	if _, err := Verify(bytes.NewReader(good), id, Limits{}); err != nil {
		t.Fatal(err)
	}
	var mm *MismatchError
	if _, err := Verify(bytes.NewReader(good), strings.Repeat("0", 64), Limits{}); !errors.As(err, &mm) {
		t.Errorf("a wrong ID: %v", err)
	}
	var tl *TooLargeError
	if _, err := Verify(bytes.NewReader(good), id, Limits{MaxSize: 5}); !errors.As(err, &tl) || tl.Largest[0].Path != "a" {
		t.Errorf("over the size: %v", err)
	}
	if _, err := Verify(bytes.NewReader(good), id, Limits{MaxFiles: 1}); !errors.As(err, &tl) {
		t.Errorf("over the files: %v", err)
	}
	for name, entries := range map[string][]tar.Header{
		"dotdot":    {reg("../evil", 0o644)},
		"absolute":  {reg("/etc/passwd", 0o644)},
		"unclean":   {reg("a//b", 0o644)},
		"unsorted":  {reg("b", 0o644), reg("a", 0o644)},
		"duplicate": {reg("a", 0o644), reg("a", 0o644)},
		"mode":      {reg("a", 0o4755)},
		"symlink":   {{Typeflag: tar.TypeSymlink, Name: "a", Linkname: "/etc/passwd", ModTime: epoch}},
	} {
		b, id := packed(t, entries, "x")
		var inv *InvalidError
		if _, err := Verify(bytes.NewReader(b), id, Limits{}); !errors.As(err, &inv) {
			t.Errorf("%s: %v", name, err)
		}
	}
	var inv *InvalidError
	if _, err := Verify(strings.NewReader("not gzip"), id, Limits{}); !errors.As(err, &inv) {
		t.Errorf("not gzip: %v", err)
	}
}

func TestVerifyKeepsTheReadersError(t *testing.T) {
	root := tree(t, map[string]string{"a": strings.Repeat("x", 10000)})
	tr, _ := Collect(root, Selection{}, Limits{})
	var buf bytes.Buffer
	id, _ := Pack(&buf, tr)
	gone := errors.New("the client went away")
	_, err := Verify(io.MultiReader(bytes.NewReader(buf.Bytes()[:buf.Len()/2]), iotest.ErrReader(gone)), id, Limits{})
	var inv *InvalidError
	if !errors.Is(err, gone) || errors.As(err, &inv) {
		t.Errorf("a stream cut short: %v", err)
	}
}

// TestCheckoutIgnores: in a git checkout, the .gitignore files above the
// spec's directory apply to it, as git applies them; outside one, no
// file above the directory counts.
func TestCheckoutIgnores(t *testing.T) {
	repo := tree(t, map[string]string{
		".git/HEAD":               "ref",
		".gitignore":              "node_modules/\n/app/build/\n/other\n*.log\n",
		"apps/.gitignore":         "secret.txt\n",
		"apps/web/server.js":      "js",
		"apps/web/debug.log":      "log",
		"apps/web/secret.txt":     "s",
		"apps/web/node_modules/x": "dep",
		"apps/web/app/build/out":  "anchored elsewhere: kept",
		"apps/web/other":          "kept: /other is the checkout root's",
	})
	tr, diags := Collect(filepath.Join(repo, "apps", "web"), Selection{}, Limits{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if got := paths(tr); !slices.Equal(got, []string{"app/build/out", "other", "server.js"}) {
		t.Errorf("in a checkout: %q", got)
	}
	plain := tree(t, map[string]string{".gitignore": "*.log\n", "web/server.js": "js", "web/debug.log": "log"})
	tr, _ = Collect(filepath.Join(plain, "web"), Selection{}, Limits{})
	if got := paths(tr); !slices.Equal(got, []string{"debug.log", "server.js"}) {
		t.Errorf("outside a checkout: %q", got)
	}
}

func TestBadIgnoreLineIsSkipped(t *testing.T) {
	root := tree(t, map[string]string{".caravanignore": "[oops\n*.log\n", "a.log": "x", "b.txt": "y"})
	tr, diags := Collect(root, Selection{}, Limits{})
	if diags.HasErrors() || len(diags) != 1 || diags[0].Severity != hcl.DiagWarning || !strings.Contains(diags[0].Detail, ".caravanignore:1") {
		t.Fatalf("diags %v", diags)
	}
	if got := paths(tr); !slices.Equal(got, []string{".caravanignore", "b.txt"}) {
		t.Errorf("got %q", got)
	}
}
