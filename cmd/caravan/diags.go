package main

import (
	"io"
	"os"

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
		f, _ := p.ParseHCL(src, name)
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
