// Package bundle packs the files an app's functions use into a
// deterministic, content-addressed archive (the first half of the render
// stage for code: it reads files only). The same files give the same
// bytes and the same SHA-256 on any machine: entries sorted by path, no
// directories, owners or times, modes normalised to 0644 or 0755.
//
// A bundle's ID is the SHA-256 of its tar stream (Hash); it travels and
// rests gzip-compressed (Pack), so the ID does not depend on a
// compressor's version, and Verify checks a compressed stream against it.
package bundle

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Default bounds of a bundle.
const (
	// DefaultMaxSize bounds the bytes of a bundle's files together: 256 MiB.
	DefaultMaxSize int64 = 256 << 20
	// DefaultMaxFiles bounds its files: Nomad's clients refuse to unpack
	// an archive of more (artifact.decompression_file_count_limit).
	DefaultMaxFiles = 4096
)

// Limits bound what Collect takes; zero fields take the defaults.
type Limits struct {
	MaxSize  int64
	MaxFiles int
}

func (l Limits) withDefaults() Limits {
	if l.MaxSize <= 0 {
		l.MaxSize = DefaultMaxSize
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// Ignore files read in every directory of a bundle, in this order (a
// later pattern wins).
const (
	GitIgnore     = ".gitignore"
	CaravanIgnore = ".caravanignore"
)

// Selection says which files of a directory a bundle holds.
type Selection struct {
	// Include lists patterns (Pattern's syntax, without "!"): a file is
	// in the bundle when one matches it or a directory above it. nil
	// takes every file.
	Include []string
	// Exclude lists patterns applied after every ignore file.
	Exclude []string
	// Subject is where diagnostics point: the files block, or the spec.
	Subject hcl.Range
}

// File is one file of a bundle.
type File struct {
	// Path is slash-separated and relative to the bundle's root.
	Path string
	// Abs is where Collect found it (through a symlink: the link).
	Abs  string
	Size int64
	// Exec: any execute bit was set; packed as 0755, else 0644.
	Exec bool
}

// Tree is what a bundle holds: its files sorted by Path.
type Tree struct {
	Root  string
	Files []File
	// Size is the bytes of the files together.
	Size int64
}

// Collect walks root and returns the files sel selects, minus .git and
// what .gitignore and .caravanignore files exclude. Every file it cannot
// take (a symlink out of root or to a directory, a device, a socket or a
// pipe) is a diagnostic, and so is a tree over lim; all are reported at
// once.
func Collect(root string, sel Selection, lim Limits) (*Tree, hcl.Diagnostics) {
	lim = lim.withDefaults()
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, hcl.Diagnostics{diagUnreadable(sel.Subject, root, err)}
	}
	c := &collector{root: real, sel: sel, tree: &Tree{Root: root}}
	for _, p := range sel.Include {
		pat, err := ParsePattern(p)
		if err != nil || pat == nil || pat.negate {
			c.diags = append(c.diags, diagBadPattern(sel.Subject, p, err))
			continue
		}
		c.include = append(c.include, pat)
	}
	exclude, errs := parseRules("", "exclude", strings.Join(sel.Exclude, "\n"))
	for _, err := range errs {
		c.diags = append(c.diags, diagBadPattern(sel.Subject, "", err))
	}
	if c.diags.HasErrors() {
		return nil, c.diags
	}
	c.walk("", c.checkoutRules(), exclude)
	slices.SortFunc(c.tree.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	if n := len(c.tree.Files); n > lim.MaxFiles {
		c.diags = append(c.diags, diagTooManyFiles(sel.Subject, n, lim.MaxFiles))
	}
	if c.tree.Size > lim.MaxSize {
		c.diags = append(c.diags, diagTooLarge(sel.Subject, c.tree.Size, lim.MaxSize, Largest(c.tree.Files, 5)))
	}
	if c.diags.HasErrors() {
		return nil, capDiags(c.diags)
	}
	return c.tree, c.diags
}

// Largest returns the n largest of files, largest first.
func Largest(files []File, n int) []File {
	s := slices.Clone(files)
	slices.SortStableFunc(s, func(a, b File) int {
		switch {
		case a.Size > b.Size:
			return -1
		case a.Size < b.Size:
			return 1
		}
		return strings.Compare(a.Path, b.Path)
	})
	return s[:min(n, len(s))]
}

type collector struct {
	root    string
	sel     Selection
	include []*Pattern
	tree    *Tree
	diags   hcl.Diagnostics
}

// walk collects directory rel (slash-separated, "" for the root) under
// the ignore rules of the directories above it.
func (c *collector) walk(rel string, stack []rules, exclude rules) {
	dir := filepath.Join(c.root, filepath.FromSlash(rel))
	for _, name := range []string{GitIgnore, CaravanIgnore} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			c.diags = append(c.diags, diagUnreadable(c.sel.Subject, path.Join(rel, name), err))
			continue
		}
		r, errs := parseRules(rel, path.Join(rel, name), string(b))
		for _, err := range errs {
			c.diags = append(c.diags, diagBadIgnoreLine(c.sel.Subject, err))
		}
		stack = append(slices.Clip(stack), r)
	}
	all := append(slices.Clip(stack), exclude)
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.diags = append(c.diags, diagUnreadable(c.sel.Subject, rel, err))
		return
	}
	for _, e := range entries {
		p := path.Join(rel, e.Name())
		isDir := e.IsDir()
		if isDir && e.Name() == ".git" {
			continue
		}
		if ignored(all, p, isDir) {
			continue
		}
		if isDir {
			c.walk(p, stack, exclude)
			continue
		}
		if !c.included(p) {
			continue
		}
		c.add(p, filepath.Join(dir, e.Name()))
	}
}

// checkoutRules are the .gitignore files above the bundle's root, up to
// the root of the git checkout that holds it (none outside a checkout),
// outermost first: git applies them to the root's files too.
func (c *collector) checkoutRules() []rules {
	var out []rules
	var bad []error
	up := ""
	dir := c.root
	for {
		parent := filepath.Dir(dir)
		if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil || parent == dir {
			if err != nil {
				return nil // not in a checkout: nothing above counts
			}
			break
		}
		up = path.Join(filepath.Base(dir), up)
		dir = parent
		b, err := os.ReadFile(filepath.Join(dir, GitIgnore))
		if err != nil {
			continue
		}
		r, errs := parseRules("", filepath.Join(dir, GitIgnore), string(b))
		bad = append(bad, errs...)
		r.up = up
		out = append([]rules{r}, out...)
	}
	for _, err := range bad {
		c.diags = append(c.diags, diagBadIgnoreLine(c.sel.Subject, err))
	}
	return out
}

// included reports whether the include patterns take file p.
func (c *collector) included(p string) bool {
	if c.sel.Include == nil {
		return true
	}
	for _, pat := range c.include {
		if pat.Match(p, false) {
			return true
		}
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if pat.Match(d, true) {
				return true
			}
		}
	}
	return false
}

// add takes file p (at abs), or says why it cannot.
func (c *collector) add(p, abs string) {
	fi, err := os.Lstat(abs)
	if err != nil {
		c.diags = append(c.diags, diagUnreadable(c.sel.Subject, p, err))
		return
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(abs)
		if err != nil {
			c.diags = append(c.diags, diagBrokenSymlink(c.sel.Subject, p, err))
			return
		}
		if r, err := filepath.Rel(c.root, target); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
			c.diags = append(c.diags, diagSymlinkOut(c.sel.Subject, p, target))
			return
		}
		if fi, err = os.Stat(abs); err != nil {
			c.diags = append(c.diags, diagUnreadable(c.sel.Subject, p, err))
			return
		}
		if fi.IsDir() {
			c.diags = append(c.diags, diagSymlinkDir(c.sel.Subject, p, target))
			return
		}
	}
	if !fi.Mode().IsRegular() {
		c.diags = append(c.diags, diagIrregular(c.sel.Subject, p, fi.Mode()))
		return
	}
	c.tree.Files = append(c.tree.Files, File{Path: p, Abs: abs, Size: fi.Size(), Exec: fi.Mode()&0o111 != 0})
	c.tree.Size += fi.Size()
}

// maxDiags is how many problems Collect lists before it counts the rest.
const maxDiags = 20

func capDiags(d hcl.Diagnostics) hcl.Diagnostics {
	if len(d) <= maxDiags {
		return d
	}
	rest := len(d) - maxDiags
	out := append(d[:maxDiags:maxDiags], &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "More bundle problems",
		Detail: fmt.Sprintf("%d more problems like the above.", rest), Subject: d[0].Subject})
	return out
}
