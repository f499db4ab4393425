package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/hcl/v2"
)

// bundles are the code bundles of an app's functions, read from the
// spec's directory.
type bundles struct {
	// workspace is the app's: the one that may deploy what is uploaded.
	workspace string
	// ids maps each function with files to its bundle's ID (nil: the app
	// has none).
	ids map[string]string
	// trees are the bundles by ID, with the functions that run each.
	trees map[string]*bundleTree
}

type bundleTree struct {
	tree      *bundle.Tree
	functions []string
}

// collectBundles reads the bundle of every function of app (the spec at
// path) that has files, and hashes it; a problem with any is a
// diagnostic that points at its files block (or the app).
func collectBundles(path string, app *spec.App) (*bundles, hcl.Diagnostics) {
	return walkBundles(path, app, bundle.Hash)
}

// walkBundles is collectBundles with name naming each tree: bundle.Hash, or
// for a watch that only needs the files, something cheaper than reading
// them all.
func walkBundles(path string, app *spec.App, name func(*bundle.Tree) (string, error)) (*bundles, hcl.Diagnostics) {
	out := &bundles{workspace: app.Workspace, trees: map[string]*bundleTree{}}
	dir := filepath.Dir(path)
	type chosen struct {
		id    string
		diags hcl.Diagnostics
	}
	// Functions that choose the same files share one walk.
	seen := map[*spec.Files]chosen{}
	var diags hcl.Diagnostics
	for _, fn := range app.Functions {
		files, ok := app.FilesOf(fn)
		if !ok {
			continue
		}
		key := files
		if files.Include == nil && files.Exclude == nil && files.DefRange == app.DefRange {
			key = nil // every default selection is one
		}
		c, done := seen[key]
		if !done {
			tree, d := bundle.Collect(dir, bundle.Selection{Include: files.Include, Exclude: files.Exclude, Subject: files.DefRange}, bundle.Limits{})
			c.diags = d
			if !d.HasErrors() {
				id, err := name(tree)
				if err != nil {
					c.diags = append(c.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot bundle the files",
						Detail: err.Error(), Subject: files.DefRange.Ptr()})
				} else {
					c.id = id
					if out.trees[id] == nil {
						out.trees[id] = &bundleTree{tree: tree}
					}
				}
			}
			seen[key] = c
			diags = append(diags, c.diags...)
		}
		if c.id == "" {
			continue
		}
		if out.ids == nil {
			out.ids = map[string]string{}
		}
		out.ids[fn.Name] = c.id
		out.trees[c.id].functions = append(out.trees[c.id].functions, fn.Name)
	}
	return out, diags
}

// upload sends the server the bundles it lacks (it says which), each
// streamed as it is packed, and reports each upload to w.
func (b *bundles) upload(ctx context.Context, cl *api.Client, w io.Writer) error {
	if len(b.trees) == 0 {
		return nil
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range b.trees {
			if !yield(id) {
				return
			}
		}
	})
	missing, err := cl.MissingBundles(ctx, b.workspace, ids)
	if err != nil {
		return fmt.Errorf("asking the server which bundles it has: %w", err)
	}
	for _, id := range missing {
		bt := b.trees[id]
		if bt == nil {
			continue
		}
		pr, pw := io.Pipe()
		packed := make(chan string, 1)
		go func() {
			got, err := bundle.Pack(pw, bt.tree)
			packed <- got
			pw.CloseWithError(err)
		}()
		info, err := cl.UploadBundle(ctx, b.workspace, id, pr)
		pr.CloseWithError(io.ErrClosedPipe)
		if got := <-packed; err == nil && got != id {
			err = fmt.Errorf("the files changed while they were uploaded; deploy again")
		}
		if err != nil {
			return fmt.Errorf("uploading the bundle of %s: %w", strings.Join(bt.functions, ", "), err)
		}
		fmt.Fprintf(w, "↑ Uploaded the code of %s: bundle %s, %d files, %s (%s compressed).\n", strings.Join(bt.functions, ", "),
			id[:12], info.Files, bundle.FormatSize(info.Size), bundle.FormatSize(info.Stored))
	}
	return nil
}

// describe says how many bundles there are and what they hold.
func (b *bundles) describe() string {
	if len(b.trees) == 0 {
		return "no code bundle"
	}
	var files int
	var size int64
	for _, bt := range b.trees {
		files += len(bt.tree.Files)
		size += bt.tree.Size
	}
	what := "code bundle"
	if len(b.trees) > 1 {
		what = fmt.Sprintf("%d code bundles", len(b.trees))
	}
	return fmt.Sprintf("%s of %d file(s), %s", what, files, bundle.FormatSize(size))
}
