package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/spec"
	"github.com/urfave/cli/v2"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"golang.org/x/term"
)

// printDiags writes diagnostics with their source lines, as terraform
// validate does. sources maps file names to their bytes.
func printDiags(w io.Writer, diags hcl.Diagnostics, sources map[string][]byte) error {
	files := map[string]*hcl.File{}
	p := hclparse.NewParser()
	for name, src := range sources {
		if longestLine(src) > maxSourceLine {
			// Every diagnostic would print the whole line.
			continue
		}
		// A spec past spec's bounds is not parsed again here: HCL's
		// parser recurses once per level of nesting, without a bound.
		var f *hcl.File
		if !spec.CheckBounds(src, name).HasErrors() {
			f, _ = p.ParseHCL(src, name)
		}
		if f == nil {
			f = &hcl.File{Bytes: src}
		}
		files[name] = f
	}
	width, color := uint(0), false
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil {
			width = uint(cols)
		}
		color = os.Getenv("NO_COLOR") == ""
	}
	return hcl.NewDiagnosticTextWriter(w, files, width, color).WriteDiagnostics(diags)
}

// maxSourceLine is the longest source line printed under a diagnostic;
// a file with a longer one is printed without its source lines.
const maxSourceLine = 1000

func longestLine(src []byte) int {
	n := 0
	for line := range bytes.Lines(src) {
		n = max(n, len(line))
	}
	return n
}

func countErrors(diags hcl.Diagnostics) (errs, warns int) {
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs++
		} else {
			warns++
		}
	}
	return
}

// specArg loads the one spec file a command takes, by its absolute path (it
// names the spec in diagnostics; its directory is what bundles are made
// of), and collects its functions' bundles, printing the diagnostics of
// both; an invalid spec or a bundle that cannot be made is an exit 1 with
// nothing more to say.
func specArg(c *cli.Context, verb string) (path string, src []byte, b *bundles, err error) {
	if c.NArg() != 1 {
		return "", nil, nil, cli.Exit(fmt.Sprintf("%s takes one spec file, e.g. caravan %s app.hcl", verb, verb), 1)
	}
	if path, err = filepath.Abs(c.Args().First()); err != nil {
		return "", nil, nil, err
	}
	app, src, diags := spec.LoadFile(path)
	if !diags.HasErrors() {
		var bd hcl.Diagnostics
		b, bd = collectBundles(path, app)
		if !bd.HasErrors() && len(bd) > 0 {
			// The bundles' warnings; the spec's come back from the server.
			_ = printDiags(c.App.ErrWriter, bd, map[string][]byte{path: src})
		}
		diags = append(diags, bd...)
	}
	if diags.HasErrors() {
		_ = printDiags(c.App.ErrWriter, diags, map[string][]byte{path: src})
		return "", nil, nil, cli.Exit("", 1)
	}
	return path, src, b, nil
}

// serverFailure prints what the server refused: its diagnostics against the
// local source (as validate prints them), or the error.
func serverFailure(c *cli.Context, verb string, err error, path string, src []byte) error {
	if printServerDiags(c.App.ErrWriter, err, path, src) {
		return cli.Exit("", 1)
	}
	return cli.Exit(verb+" failed: "+err.Error(), 1)
}

// printServerDiags prints the diagnostics err carries from the server
// against the local source, and reports whether there were any.
func printServerDiags(w io.Writer, err error, path string, src []byte) bool {
	var apiErr *api.APIError
	if !errors.As(err, &apiErr) || len(apiErr.Diagnostics) == 0 {
		return false
	}
	_ = printDiags(w, orchestrator.FromWire(apiErr.Diagnostics), map[string][]byte{path: src})
	return true
}
