package main

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// readmeForm is one command's form in the README's CLI table, such as
// `caravan deploy FILE [--strategy rolling|...] [--tag TEXT] [--timeout 5m]`.
type readmeForm struct {
	text  string   // as the README writes it
	path  []string // the command's names: "app", "stop"
	parts []formPart
}

// formPart is an argument or a flag of a form, in the README's order.
type formPart struct {
	flag  string   // the flag's name; "" for arguments
	value string   // what the README gives the flag ("rolling", "TEXT", "5m"); "" for a boolean
	args  []string // the sample arguments an argument part stands for
}

var readmeRow = regexp.MustCompile("^\\| `(caravan [^`]+)` \\|")

// readmeForms reads every form of the README's CLI table. A row of
// alternatives (`caravan domain verify DOMAIN \| assign ... \| list`) is
// one form per alternative, each under the first one's group.
func readmeForms(t *testing.T, app *cli.App) []readmeForm {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var forms []readmeForm
	for _, line := range strings.Split(string(readme), "\n") {
		m := readmeRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var group []string
		for i, alt := range strings.Split(strings.ReplaceAll(m[1], `\|`, "|"), " | ") {
			if i > 0 {
				alt = "caravan " + strings.Join(group, " ") + " " + alt
			}
			f := parseForm(t, app, alt)
			forms = append(forms, f)
			group = f.path[:len(f.path)-1]
		}
	}
	if len(forms) < 30 {
		t.Fatalf("read %d forms from README.md's CLI table; is it still there?", len(forms))
	}
	return forms
}

func parseForm(t *testing.T, app *cli.App, text string) readmeForm {
	t.Helper()
	f := readmeForm{text: text}
	// Words, a [...] group being one.
	words := regexp.MustCompile(`\[[^\]]*\]|\S+`).FindAllString(strings.TrimPrefix(text, "caravan "), -1)
	cmds := app.Commands
	for len(words) > 0 {
		c := findCommand(cmds, words[0])
		if c == nil {
			break
		}
		f.path, cmds, words = append(f.path, words[0]), c.Subcommands, words[1:]
	}
	cmd := leaf(app, f.path)
	if cmd == nil || (len(cmd.Subcommands) > 0 && cmd.Action == nil) {
		t.Fatalf("README form %q names no command", text)
	}
	for i := 0; i < len(words); i++ {
		w := strings.Trim(words[i], "[]")
		name, value, hasValue := strings.Cut(w, " ")
		if !strings.HasPrefix(name, "--") {
			args := []string{strings.ToLower(w)}
			if rep, ok := strings.CutSuffix(args[0], "..."); ok {
				args = []string{rep + "-1", rep + "-2"}
			}
			f.parts = append(f.parts, formPart{args: args})
			continue
		}
		name = strings.TrimPrefix(name, "--")
		def := flagNamed(cmd, name)
		if def == nil {
			t.Fatalf("README form %q: %s has no flag --%s", text, strings.Join(f.path, " "), name)
		}
		if def.TakesValue() && !hasValue && i+1 < len(words) { // --workspace W
			value, i = words[i+1], i+1
		}
		value, _, _ = strings.Cut(value, "|") // rolling|recreate|...: the first
		f.parts = append(f.parts, formPart{flag: name, value: value})
	}
	return f
}

func leaf(app *cli.App, path []string) *cli.Command {
	var c *cli.Command
	cmds := app.Commands
	for _, name := range path {
		if c = findCommand(cmds, name); c == nil {
			return nil
		}
		cmds = c.Subcommands
	}
	return c
}

func flagNamed(cmd *cli.Command, name string) cli.DocGenerationFlag {
	for _, fl := range cmd.Flags {
		if slices.Contains(fl.Names(), name) {
			if d, ok := fl.(cli.DocGenerationFlag); ok {
				return d
			}
		}
	}
	return nil
}

// invocation is the form's arguments and flags in one order, with flags
// written as "--name value" or, with eq, "--name=value".
func (f readmeForm) invocation(cmd *cli.Command, order string, eq bool) []string {
	var flags, args [][]string
	var written []string
	for _, p := range f.parts {
		if p.flag == "" {
			args = append(args, p.args)
			written = append(written, p.args...)
			continue
		}
		tok := []string{"--" + p.flag}
		if flagNamed(cmd, p.flag).TakesValue() {
			tok = []string{"--" + p.flag, p.value}
			if eq {
				tok = []string{"--" + p.flag + "=" + p.value}
			}
		}
		flags = append(flags, tok)
		written = append(written, tok...)
	}
	out := slices.Clone(f.path)
	switch order {
	case "as written":
		return append(out, written...)
	case "flags first":
		return append(append(out, slices.Concat(flags...)...), slices.Concat(args...)...)
	case "flags first, then --":
		return append(append(append(out, slices.Concat(flags...)...), "--"), slices.Concat(args...)...)
	case "flags last":
		return append(append(out, slices.Concat(args...)...), slices.Concat(flags...)...)
	case "flags between":
		if len(args) < 2 {
			return nil
		}
		return append(append(append(out, args[0]...), slices.Concat(flags...)...), slices.Concat(args[1:]...)...)
	}
	panic(order)
}

// parsed is what a command's action sees: its arguments, and the value of
// each flag the form names, as the flag's own type.
type parsed struct {
	args  []string
	flags map[string]any
}

// want is what every invocation of f must parse to.
func (f readmeForm) want(cmd *cli.Command) parsed {
	p := parsed{args: []string{}, flags: map[string]any{}}
	for _, part := range f.parts {
		p.args = append(p.args, part.args...)
		if part.flag == "" {
			continue
		}
		switch def := flagNamed(cmd, part.flag).(type) {
		case *cli.BoolFlag:
			p.flags[part.flag] = true
		case *cli.DurationFlag:
			d, err := time.ParseDuration(part.value)
			if err != nil {
				panic(err)
			}
			p.flags[part.flag] = d
		case *cli.StringFlag:
			p.flags[part.flag] = part.value
		default:
			panic(fmt.Sprintf("a %T in the README's forms", def))
		}
	}
	return p
}

// TestREADMEForms: every form of the README's CLI table parses, with its
// flags as written, before the arguments, after them, between them and as
// --flag=value, to the same arguments and typed flag values; each
// command's --help shows its form as the README writes it, and lists the
// flags the form names in the form's order; and every command has a form.
func TestREADMEForms(t *testing.T) {
	var got parsed
	app := newApp(&bytes.Buffer{}, &bytes.Buffer{})
	var leaves []string
	var record func(prefix string, cmds []*cli.Command)
	record = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			if len(c.Subcommands) > 0 {
				record(prefix+c.Name+" ", c.Subcommands)
				if c.Action == nil {
					continue
				}
			}
			if c.Name != "worker" {
				// caravan worker is what a task runs, in no table.
				leaves = append(leaves, prefix+c.Name)
			}
			c.Action = func(ctx *cli.Context) error {
				got = parsed{args: ctx.Args().Slice(), flags: map[string]any{}}
				for _, name := range ctx.FlagNames() {
					if ctx.IsSet(name) {
						got.flags[name] = ctx.Value(name)
					}
				}
				return nil
			}
		}
	}
	record("", app.Commands)

	forms := readmeForms(t, app.App)
	for _, f := range forms {
		cmd := leaf(app.App, f.path)
		t.Run(strings.Join(f.path, "_"), func(t *testing.T) {
			if cmd.UsageText != f.text {
				t.Errorf("--help shows %q, the README %q", cmd.UsageText, f.text)
			}
			var named, defined []string
			for _, p := range f.parts {
				if p.flag != "" {
					named = append(named, p.flag)
				}
			}
			for _, fl := range cmd.Flags {
				if slices.Contains(named, fl.Names()[0]) {
					defined = append(defined, fl.Names()[0])
				}
			}
			if !slices.Equal(named, defined) {
				t.Errorf("--help lists the flags %v, the README %v", defined, named)
			}
			want := f.want(cmd)
			for _, order := range []string{"as written", "flags first", "flags first, then --", "flags last", "flags between"} {
				for _, eq := range []bool{false, true} {
					args := f.invocation(cmd, order, eq)
					if args == nil {
						continue
					}
					got = parsed{}
					if err := app.Run(append([]string{"caravan"}, args...)); err != nil {
						t.Errorf("caravan %s: %v", strings.Join(args, " "), err)
						continue
					}
					// Flags the form does not name keep their defaults.
					for name := range got.flags {
						if _, ok := want.flags[name]; !ok && !slices.ContainsFunc(f.parts, func(p formPart) bool { return p.flag == name }) {
							delete(got.flags, name)
						}
					}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("caravan %s:\n got %#v\nwant %#v", strings.Join(args, " "), got, want)
					}
				}
			}
			var out bytes.Buffer
			help := newApp(&out, &out)
			if err := help.Run(append(append([]string{"caravan"}, f.path...), "--help")); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "USAGE:\n   "+f.text+"\n") {
				t.Errorf("caravan %s --help lacks the usage %q:\n%s", strings.Join(f.path, " "), f.text, out.String())
			}
		})
	}
	for _, l := range leaves {
		if !slices.ContainsFunc(forms, func(f readmeForm) bool { return strings.Join(f.path, " ") == l }) {
			t.Errorf("caravan %s has no form in README.md's CLI table", l)
		}
	}
}
