package bundle

import (
	"fmt"
	"io/fs"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// One constructor per kind of problem a bundle can have; each says how to
// fix it and points at the files block (or the spec) that chose the files.

func diag(subject hcl.Range, summary, detail string) *hcl.Diagnostic {
	d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail}
	if subject.Filename != "" {
		d.Subject = subject.Ptr()
	}
	return d
}

func diagUnreadable(s hcl.Range, p string, err error) *hcl.Diagnostic {
	return diag(s, "Cannot read a bundle file", fmt.Sprintf("%s: %v. Make it readable, or exclude it (.caravanignore, or files { exclude = [...] }).", p, err))
}

func diagBadPattern(s hcl.Range, p string, err error) *hcl.Diagnostic {
	why := "an include pattern cannot start with \"!\": leave the file out of include, or exclude it"
	if err != nil {
		why = err.Error()
	} else if p == "" || strings.TrimSpace(p) == "" {
		why = "it is empty"
	}
	return diag(s, "Invalid files pattern", fmt.Sprintf("%q: %s. Patterns take .gitignore's syntax (\"src/**\", \"*.py\", \"/build\").", p, why))
}

// diagBadIgnoreLine is a warning: git skips a pattern it cannot read, and
// so does the bundle.
func diagBadIgnoreLine(s hcl.Range, err error) *hcl.Diagnostic {
	d := diag(s, "Invalid ignore pattern", err.Error()+"; the line is skipped, as git skips it. Fix the line; ignore files take .gitignore's syntax.")
	d.Severity = hcl.DiagWarning
	return d
}

func diagBrokenSymlink(s hcl.Range, p string, err error) *hcl.Diagnostic {
	return diag(s, "Broken symlink in the bundle", fmt.Sprintf("%s: %v. Remove it or exclude it (.caravanignore).", p, err))
}

func diagSymlinkOut(s hcl.Range, p, target string) *hcl.Diagnostic {
	return diag(s, "Symlink leaves the bundle's directory", fmt.Sprintf(
		"%s points to %s, outside the directory the bundle is made of: no Nomad client would have it. Copy the file in, or exclude the link (.caravanignore).", p, target))
}

func diagSymlinkDir(s hcl.Range, p, target string) *hcl.Diagnostic {
	return diag(s, "Symlink to a directory in the bundle", fmt.Sprintf(
		"%s points to the directory %s; a bundle holds files and follows no directory link. Exclude the link (.caravanignore): its target is bundled under its own name.", p, target))
}

func diagIrregular(s hcl.Range, p string, m fs.FileMode) *hcl.Diagnostic {
	kind := "special file"
	switch {
	case m&fs.ModeDevice != 0:
		kind = "device"
	case m&fs.ModeNamedPipe != 0:
		kind = "named pipe"
	case m&fs.ModeSocket != 0:
		kind = "socket"
	}
	return diag(s, "Not a regular file", fmt.Sprintf("%s is a %s; a bundle holds regular files only. Exclude it (.caravanignore).", p, kind))
}

func diagTooManyFiles(s hcl.Range, n, limit int) *hcl.Diagnostic {
	return diag(s, "Too many files for a bundle", fmt.Sprintf(
		"The bundle would hold %d files; at most %d (Nomad's clients unpack no more). Exclude what the function does not need (.caravanignore, or files { include = [...] }).", n, limit))
}

func diagTooLarge(s hcl.Range, size, limit int64, largest []File) *hcl.Diagnostic {
	return diag(s, "Bundle too large", fmt.Sprintf(
		"The bundle's files come to %s; at most %s. The largest: %s. Exclude what the function does not need (.caravanignore, or files { include = [...] }), or fetch large data at run time.",
		FormatSize(size), FormatSize(limit), DescribeFiles(largest)))
}

// DescribeFiles lists files with their sizes: "a.bin (3.0 MiB), b (12 B)".
func DescribeFiles(files []File) string {
	parts := make([]string, len(files))
	for i, f := range files {
		parts[i] = fmt.Sprintf("%s (%s)", f.Path, FormatSize(f.Size))
	}
	return strings.Join(parts, ", ")
}

// FormatSize prints n bytes in binary units.
func FormatSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
