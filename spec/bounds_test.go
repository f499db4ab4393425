package spec_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/hcl/v2"
)

// exprSpec puts expr as min_containers, evaluated; it starts at 5:22, two
// levels deep (the app's and the function's braces).
func exprSpec(expr string) string {
	return `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    min_containers = ` + expr + `
  }
}
`
}

// nest is open n times, then inner, then close n times.
func nest(open, inner, close string, n int) string {
	return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
}

// deep is how many levels an expression at 5:22 may add before it is too
// deep: the app and the function take two.
const deep = spec.MaxNesting - 2

// boundCases are specs past the bounds CheckBounds enforces, each refused
// before parsing with one diagnostic that says the limit and where.
var boundCases = []badCase{
	{name: "parentheses at the limit parse", src: exprSpec(nest("(", "5000", ")", deep)), summary: "Invalid min_containers", line: 5, col: 22},
	{name: "nested parentheses", src: exprSpec(nest("(", "1", ")", deep+1)), summary: "Nesting too deep", line: 5, col: 22 + deep, detail: "more than 64 levels"},
	{name: "nested brackets", src: exprSpec(nest("[", "1", "]", deep+1)), summary: "Nesting too deep", line: 5, col: 22 + deep},
	{name: "nested objects", src: exprSpec(nest("{a=", "1", "}", deep+1)), summary: "Nesting too deep", line: 5, col: 22 + 3*deep},
	{name: "nested calls", src: exprSpec(nest("max(", "1", ")", deep+1)), summary: "Nesting too deep", line: 5, col: 22 + 4*deep + 3},
	{name: "unary minus", src: exprSpec(strings.Repeat("-", deep+1) + "1"), summary: "Nesting too deep", line: 5, col: 22 + deep},
	{name: "unary not", src: exprSpec(strings.Repeat("!", deep+1) + "true"), summary: "Nesting too deep", line: 5, col: 22 + deep},
	{name: "negated parentheses", src: exprSpec(nest("-(", "1", ")", deep+1)), summary: "Nesting too deep", line: 5, col: 22 + 2*deep},
	{name: "conditional in the false result", src: exprSpec(strings.Repeat("true ? 1 : ", deep+1) + "1"), summary: "Nesting too deep", line: 5, col: 22 + 11*deep + 5},
	{name: "conditional in the true result", src: exprSpec(nest("true ? ", "1", " : 1", deep+1)), summary: "Nesting too deep", line: 5, col: 22 + 7*deep + 5},
	{name: "templates in strings", src: exprSpec(nest(`"${`, "1", `}"`, deep/2+1)), summary: "Nesting too deep", line: 5, col: 22 + 3*(deep/2)},
	{name: "template directives", src: exprSpec(`"` + nest("%{if true}", "1", "%{endif}", deep)), summary: "Nesting too deep", line: 5, col: 23 + 10*(deep-2)},
	{name: "template directives with strip markers", src: exprSpec(`"` + nest("%{~ if true ~}", "1", "%{~ endif ~}", deep)), summary: "Nesting too deep", line: 5, col: 23 + 14*(deep-2)},
	{name: "heredoc templates", src: exprSpec(nest("<<EOT\n${", "1", "}\nEOT\n", deep/2+1)), summary: "Nesting too deep", line: 5 + deep/2, col: 3},
	{name: "nested blocks", src: `app "hello" {` + "\n" + nest("  b {\n", "", "  }\n", deep+2) + "}\n", summary: "Nesting too deep", line: deep + 3, col: 5},
	{name: "a long list", src: exprSpec("[" + strings.Repeat("1,", spec.MaxElements+1) + "1]"), summary: "Too many elements", line: 5, col: 22, detail: "more than 10000 elements"},
	{name: "a long object", src: exprSpec("{" + strings.Repeat("a=1,", spec.MaxElements) + "a=1}"), summary: "Too many elements", line: 5, col: 22},
	{name: "a long string", src: exprSpec(`"` + strings.Repeat("x", spec.MaxString+1) + `"`), summary: "String too long", line: 5, col: 22, detail: "32768 bytes"},
	{name: "a long heredoc", src: exprSpec("<<EOT\n" + strings.Repeat("xxxxxxxxxxxxxxx\n", spec.MaxString/16+1) + "EOT\n"), summary: "String too long", line: 5, col: 22},
	{name: "a long name", src: exprSpec(strings.Repeat("x", spec.MaxString+1)), summary: "String too long", line: 5, col: 22},
	{name: "a long number", src: exprSpec(strings.Repeat("1", spec.MaxString+1)), summary: "String too long", line: 5, col: 22},
	{name: "too many tokens", src: exprSpec(strings.Repeat("1+", spec.MaxTokens/2) + "1"), summary: "Spec too long", line: 5, col: 22 + spec.MaxTokens - 26, detail: "more than 50000 tokens"},
	{name: "too large", src: exprSpec("1") + "#" + strings.Repeat("x", spec.MaxSize), summary: "Spec too large", line: 1, col: 1, detail: "at most 262144 (256 KiB)"},
}

func TestParseBounds(t *testing.T) {
	runBad(t, boundCases)
}

// Every input past a bound is refused fast, however far past it goes; so
// is the most a spec within the bounds can cost.
func TestBoundsAreCheap(t *testing.T) {
	fill := func(unit string) string { return strings.Repeat(unit, (spec.MaxSize-200)/len(unit)) }
	for name, src := range map[string]string{
		"parentheses":        exprSpec(fill("(")),
		"conditionals":       exprSpec(fill("true ? ")),
		"templates":          exprSpec(fill(`"${`)),
		"unary":              exprSpec(fill("-")),
		"one long line":      exprSpec(fill("x")),
		"a list":             exprSpec("[" + fill("1,") + "1]"),
		"newlines":           exprSpec("1" + fill("\n")),
		"sums at the limit":  exprSpec(strings.Repeat("1+", spec.MaxTokens/2-20) + "1"),
		"lists at the limit": exprSpec(strings.Repeat("[1,1,1,1,1,1,1,1,1,1],", spec.MaxTokens/22)),
	} {
		t0 := time.Now()
		_, diags := spec.Parse([]byte(src), "test.hcl")
		// About 0.1 s at most on an idle machine; the bound leaves room
		// for a loaded one.
		if d := time.Since(t0); d > time.Second {
			t.Errorf("%s: %d bytes took %v", name, len(src), d)
		}
		if len(src) > spec.MaxSize {
			t.Fatalf("%s: %d bytes, over the size limit", name, len(src))
		}
		if !diags.HasErrors() || len(diags) > spec.MaxDiagnostics+1 {
			t.Errorf("%s: %d diagnostics:\n%.2000s", name, len(diags), formatDiags(diags))
		}
	}
}

// A spec with a problem on every line reports MaxDiagnostics of them, and
// one more that says how many it left out; a long value quoted in a
// diagnostic is cut.
func TestDiagnosticsAreCapped(t *testing.T) {
	var env strings.Builder
	for i := range 100 {
		fmt.Fprintf(&env, "      \"%d%s\" = \"x\"\n", i, strings.Repeat("X", 2000))
	}
	_, diags := spec.Parse([]byte(envSpec("\n"+env.String())), "test.hcl")
	if len(diags) != spec.MaxDiagnostics+1 {
		t.Fatalf("%d diagnostics, want %d", len(diags), spec.MaxDiagnostics+1)
	}
	last := diags[len(diags)-1]
	if last.Summary != "Too many problems" || last.Severity != hcl.DiagError || !strings.Contains(last.Detail, "68 more problems") {
		t.Errorf("last diagnostic = %s: %s", last.Summary, last.Detail)
	}
	for _, d := range diags {
		if len(d.Detail) > 1024 || len(d.Summary) > 1024 {
			t.Errorf("%s: detail of %d bytes", d.Summary, len(d.Detail))
		}
	}
}
