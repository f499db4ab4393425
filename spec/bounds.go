package spec

import (
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Bounds on a spec's source. A spec is data the server reads from anyone
// holding a token, so what it costs to load is bounded before it is parsed:
// its size (a version record in Consul KV carries it), how deeply it nests
// (HCL's parser and evaluator recurse once per level, and a Go stack
// overflow ends the process: nothing can recover it), how many tokens it
// has, how long its lists and strings are (what parsing and every
// diagnostic that quotes a value cost), and how many diagnostics it
// reports. CheckBounds checks all but the last before anything is parsed;
// Parse calls it, and caps the diagnostics it returns.
const (
	// MaxSize is the largest spec in bytes: a Consul KV value holds at
	// most 512 KiB, and a version record holds the spec and its metadata.
	MaxSize = 256 << 10
	// MaxNesting is how deeply a spec may nest: brackets, braces and
	// parentheses (blocks included), strings, heredocs and their
	// templates (${...}, %{if}, %{for}), conditionals (a ? b : c) and
	// unary operators (-x, !x) each count a level.
	MaxNesting = 64
	// MaxTokens is how many tokens (names, numbers, strings, operators,
	// punctuation, line ends) a spec may have: parsing costs about a
	// microsecond each.
	MaxTokens = 50_000
	// MaxElements is how many elements a list, an object or a block, or
	// arguments a function call, may have.
	MaxElements = 10_000
	// MaxString is the longest string in bytes, a heredoc's lines together.
	MaxString = 32 << 10
	// MaxDiagnostics is how many diagnostics Parse returns; past it, one
	// more says how many were left out.
	MaxDiagnostics = 32
	// maxDiagText bounds a diagnostic's summary and detail, which may
	// quote a value of the spec.
	maxDiagText = 1 << 10
)

// frame is one open bracket, brace, parenthesis, string or template.
type frame struct {
	kind hclsyntax.TokenType
	open hcl.Range
	// ternaries are the conditionals open at this level: each nests its
	// false result.
	ternaries int
	elements  int
	// literal is the length of a string's literal parts so far.
	literal int
}

// CheckBounds reports the first bound of this package's constants that
// src exceeds, or nothing. It reads src with HCL's scanner, which does not
// recurse, and never parses it, so it is safe on any input and takes
// milliseconds for MaxSize bytes.
func CheckBounds(src []byte, filename string) hcl.Diagnostics {
	start := hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos}
	if len(src) > MaxSize {
		return hcl.Diagnostics{diagTooLarge(start, len(src))}
	}
	tokens, _ := hclsyntax.LexConfig(src, filename, hcl.InitialPos)
	// stack[0] is the file's top level, which is not a nesting level.
	stack := []frame{{open: start}}
	ternaries, directives, unary := 0, 0, 0
	for i, tok := range tokens {
		// The first problem in the source is the one reported.
		if i == MaxTokens {
			return hcl.Diagnostics{diagTooManyTokens(tok.Range)}
		}
		top := &stack[len(stack)-1]
		if tok.Type == hclsyntax.TokenMinus || tok.Type == hclsyntax.TokenBang {
			unary++
		} else {
			unary = 0
		}
		switch tok.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen, hclsyntax.TokenOQuote,
			hclsyntax.TokenOHeredoc, hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl:
			stack = append(stack, frame{kind: tok.Type, open: tok.Range})
			if tok.Type == hclsyntax.TokenTemplateControl {
				switch directive(tokens[i+1:]) {
				case "if", "for":
					directives++
				case "endif", "endfor":
					directives = max(directives-1, 0)
				}
			}
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen, hclsyntax.TokenCQuote,
			hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateSeqEnd:
			// A closer without an opener is the parser's to report.
			if len(stack) > 1 {
				ternaries -= top.ternaries
				stack = stack[:len(stack)-1]
			}
		case hclsyntax.TokenQuestion:
			top.ternaries++
			ternaries++
		case hclsyntax.TokenComma, hclsyntax.TokenEqual, hclsyntax.TokenColon:
			// Each separates elements (":" and "=" an object's or a
			// body's), a comma also ends the conditionals before it.
			if tok.Type != hclsyntax.TokenColon || top.kind == hclsyntax.TokenOBrace {
				top.elements++
			}
			if top.elements > MaxElements {
				return hcl.Diagnostics{diagTooManyElements(top.open)}
			}
			if tok.Type == hclsyntax.TokenComma {
				ternaries -= top.ternaries
				top.ternaries = 0
			}
		case hclsyntax.TokenNewline:
			// A line ends an attribute or an object's element, except
			// inside brackets and parentheses.
			if top.kind != hclsyntax.TokenOBrack && top.kind != hclsyntax.TokenOParen {
				ternaries -= top.ternaries
				top.ternaries = 0
			}
		case hclsyntax.TokenQuotedLit, hclsyntax.TokenStringLit:
			top.literal += len(tok.Bytes)
			if top.literal > MaxString {
				return hcl.Diagnostics{diagStringTooLong(top.open)}
			}
		case hclsyntax.TokenIdent, hclsyntax.TokenNumberLit:
			if len(tok.Bytes) > MaxString {
				return hcl.Diagnostics{diagStringTooLong(tok.Range)}
			}
		}
		if depth := len(stack) - 1 + ternaries + directives + unary; depth > MaxNesting {
			return hcl.Diagnostics{diagTooDeep(tok.Range)}
		}
	}
	return nil
}

// directive is the keyword of a template directive whose %{ starts tokens.
func directive(tokens hclsyntax.Tokens) string {
	for _, t := range tokens {
		switch t.Type {
		case hclsyntax.TokenNewline:
			continue
		case hclsyntax.TokenIdent:
			return string(t.Bytes)
		}
		return ""
	}
	return ""
}

// capDiags keeps the first MaxDiagnostics of diags, with their summaries
// and details cut to maxDiagText bytes, and says how many it left out.
func capDiags(diags hcl.Diagnostics) hcl.Diagnostics {
	out := make(hcl.Diagnostics, 0, min(len(diags), MaxDiagnostics+1))
	for _, d := range diags[:min(len(diags), MaxDiagnostics)] {
		if len(d.Summary) > maxDiagText || len(d.Detail) > maxDiagText {
			c := *d
			c.Summary, c.Detail = cut(c.Summary, maxDiagText), cut(c.Detail, maxDiagText)
			d = &c
		}
		out = append(out, d)
	}
	if len(diags) > MaxDiagnostics {
		rest := diags[MaxDiagnostics:]
		out = append(out, diagTooManyProblems(len(rest), rest.HasErrors()))
	}
	return out
}

// cut shortens s to at most n bytes, on a rune boundary, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n-len("…")]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
