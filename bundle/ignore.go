package bundle

import (
	"fmt"
	"regexp"
	"strings"
)

// Pattern is one line of a .gitignore, .caravanignore or a files block's
// include/exclude list, with git's meaning (gitignore(5)):
//
//   - a pattern with no slash but a trailing one matches a name at any
//     depth ("node_modules", "*.pyc"); one with a slash elsewhere is
//     anchored to the directory of the file it comes from ("/build",
//     "docs/*.md");
//   - a trailing "/" matches directories only;
//   - "*" matches within a name, "?" one character, "[a-z]" a class, and
//     "**" any number of directories ("**/test", "a/**/b", "logs/**");
//   - a leading "!" re-includes what an earlier pattern excluded (but
//     nothing under an excluded directory, as in git);
//   - "\" escapes the next character.
type Pattern struct {
	// Text is the pattern as written.
	Text    string
	negate  bool
	dirOnly bool
	re      *regexp.Regexp
}

// ParsePattern parses one pattern line. Blank lines and comments give
// (nil, nil).
func ParsePattern(line string) (*Pattern, error) {
	text := line
	line = trimTrailingSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return nil, nil
	}
	p := &Pattern{Text: text}
	if strings.HasPrefix(line, "!") {
		p.negate, line = true, line[1:]
	}
	if strings.HasSuffix(line, "/") && !strings.HasSuffix(line, "\\/") {
		p.dirOnly, line = true, strings.TrimRight(line, "/")
	}
	if line == "" {
		return nil, fmt.Errorf("pattern %q names nothing", text)
	}
	anchored := strings.Contains(line, "/")
	line = strings.TrimPrefix(line, "/")
	expr, err := globRegexp(line)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %v", text, err)
	}
	if anchored {
		expr = "^" + expr + "$"
	} else {
		expr = "^(?:.*/)?" + expr + "$"
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %v", text, err)
	}
	p.re = re
	return p, nil
}

// trimTrailingSpace drops trailing spaces unless escaped with "\".
func trimTrailingSpace(s string) string {
	s = strings.TrimRight(s, "\r")
	for strings.HasSuffix(s, " ") && !strings.HasSuffix(s, "\\ ") {
		s = s[:len(s)-1]
	}
	return s
}

// globRegexp translates a gitignore glob (no leading "/", no trailing
// "/") into a regular expression over slash-separated paths.
func globRegexp(g string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(g); i++ {
		c := g[i]
		switch {
		case c == '*' && strings.HasPrefix(g[i:], "**"):
			before := i == 0 || g[i-1] == '/'
			after := i+2 == len(g) || g[i+2] == '/'
			if !before || !after {
				// "a**b" is two stars: anything within a name.
				b.WriteString("[^/]*")
				i++
				continue
			}
			switch {
			case i+2 == len(g): // "x/**": everything inside
				b.WriteString(".*")
			default: // "**/x" or "a/**/b": zero or more directories
				b.WriteString("(?:.*/)?")
				i++ // the slash
			}
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '[':
			end := strings.IndexByte(g[i+1:], ']')
			if end < 0 {
				return "", fmt.Errorf("an unclosed [")
			}
			class := g[i+1 : i+1+end]
			if strings.HasPrefix(class, "]") {
				// "[]a]": the first ] is part of the class.
				more := strings.IndexByte(g[i+2+end:], ']')
				if more < 0 {
					return "", fmt.Errorf("an unclosed [")
				}
				end += 1 + more
				class = g[i+1 : i+1+end]
			}
			if class == "" {
				return "", fmt.Errorf("an empty []")
			}
			if class[0] == '!' {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += end + 1
		case c == '\\':
			if i+1 == len(g) {
				return "", fmt.Errorf("it ends with a lone \\")
			}
			i++
			b.WriteString(regexp.QuoteMeta(string(g[i])))
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return b.String(), nil
}

// Match reports whether the pattern matches rel, a slash-separated path
// relative to the pattern's base directory.
func (p *Pattern) Match(rel string, dir bool) bool {
	if p.dirOnly && !dir {
		return false
	}
	return p.re.MatchString(rel)
}

// Negated reports whether the pattern starts with "!".
func (p *Pattern) Negated() bool { return p.negate }

// rules are the patterns of one ignore file (or list), relative to base
// ("" for the bundle's root, else "dir/sub"). A .gitignore above the
// bundle's root (in the git checkout that holds it) has up instead: the
// path from its directory down to the root, which its patterns see before
// every path.
type rules struct {
	base     string
	up       string
	patterns []*Pattern
}

// parseRules parses the lines of an ignore file; errors name the line.
func parseRules(base, name, text string) (rules, []error) {
	r := rules{base: base}
	var errs []error
	for i, line := range strings.Split(text, "\n") {
		p, err := ParsePattern(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %v", name, i+1, err))
			continue
		}
		if p != nil {
			r.patterns = append(r.patterns, p)
		}
	}
	return r, errs
}

// ignored applies stack, outermost first, to rel (relative to the
// bundle's root): the last pattern that matches decides, as in git.
func ignored(stack []rules, rel string, dir bool) bool {
	out := false
	for _, r := range stack {
		sub := rel
		switch {
		case r.up != "":
			sub = r.up + "/" + rel
		case r.base != "":
			var ok bool
			if sub, ok = strings.CutPrefix(rel, r.base+"/"); !ok {
				continue
			}
		}
		for _, p := range r.patterns {
			if p.Match(sub, dir) {
				out = !p.negate
			}
		}
	}
	return out
}
