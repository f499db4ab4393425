package main

import (
	"context"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// cliApp is the CLI: urfave/cli's App, whose Run first moves each
// command's flags ahead of its arguments (flagsFirst), so that the forms
// the README shows, `caravan deploy app.hcl --strategy canary` and
// `caravan app stop hello --yes`, parse as they read.
type cliApp struct{ *cli.App }

func (a cliApp) Run(args []string) error { return a.RunContext(context.Background(), args) }

func (a cliApp) RunContext(ctx context.Context, args []string) error {
	return a.App.RunContext(ctx, flagsFirst(a.App, args))
}

// flagsFirst returns args (the program's name, then its arguments) with
// the flags given to a command after its arguments moved ahead of them:
// Go's flag package, and so urfave/cli v2, stops looking for flags at a
// command's first argument.
//
// Tokens are read against the command's own flag definitions, so a flag's
// value (`--tag v2`, `--data -`) is never taken for an argument and a
// boolean (`--yes`) never takes the next token; `--flag=value` is one
// token; `--` ends the flags, and what follows it stays an argument
// whatever it looks like. urfave/cli then parses the flags with those same
// definitions: a duration is a time.Duration, and a bad one is refused
// with the flag's name. A flag no definition names moves alone, so
// urfave/cli still reports it. Flags between a group and its subcommand
// (`caravan --addr URL app stop ...`) belong to that level and stay put.
func flagsFirst(app *cli.App, args []string) []string {
	if len(args) == 0 {
		return args
	}
	out := []string{args[0]}
	rest := args[1:]
	flags, cmds := app.Flags, app.Commands
	var cur *cli.Command
	for hasCommands(cmds) {
		// A group: its own flags, then the name of one of its commands.
		i := 0
		for i < len(rest) && isFlag(rest[i]) {
			i += flagWidth(flags, rest[i])
		}
		i = min(i, len(rest))
		out, rest = append(out, rest[:i]...), rest[i:]
		if len(rest) == 0 {
			return out
		}
		cmd := findCommand(cmds, rest[0])
		if cmd == nil && cur != nil && cur.Action != nil {
			// A command with subcommands of its own (call, call get):
			// what is not one of them is its arguments.
			break
		}
		if cmd == nil || cmd.Name == "help" || cmd.SkipFlagParsing {
			// A mistyped name (urfave/cli says so), urfave/cli's help, or
			// a command that reads its arguments raw.
			return append(out, rest...)
		}
		out, rest = append(out, rest[0]), rest[1:]
		flags, cmds, cur = cmd.Flags, cmd.Subcommands, cmd
	}
	// A command: its flags wherever they are, then "--" and its arguments.
	var given, positional []string
	for i := 0; i < len(rest); i++ {
		switch tok := rest[i]; {
		case tok == "--":
			positional = append(positional, rest[i+1:]...)
			i = len(rest)
		case isFlag(tok):
			n := min(flagWidth(flags, tok), len(rest)-i)
			given = append(given, rest[i:i+n]...)
			i += n - 1
		default:
			positional = append(positional, tok)
		}
	}
	out = append(out, given...)
	if len(positional) > 0 {
		out = append(append(out, "--"), positional...)
	}
	return out
}

// isFlag says whether tok is a flag as Go's flag package reads one:
// "-name" or "--name", with or without "=value"; "-" alone (standard
// input, by convention) and "--" are not.
func isFlag(tok string) bool {
	return len(tok) > 1 && tok[0] == '-' && tok != "--"
}

// flagWidth is how many tokens the flag tok starts: 2 for a flag of flags
// that takes a value given as the next token, else 1 (a boolean,
// "--name=value", a flag no definition names).
func flagWidth(flags []cli.Flag, tok string) int {
	name := strings.TrimPrefix(tok[1:], "-")
	if strings.Contains(name, "=") {
		return 1
	}
	for _, f := range flags {
		if !slices.Contains(f.Names(), name) {
			continue
		}
		if v, ok := f.(interface{ TakesValue() bool }); ok && !v.TakesValue() {
			return 1
		}
		return 2
	}
	return 1
}

// hasCommands says whether a command with subcommands cmds is a group:
// urfave/cli gives every command it has run a help subcommand, which does
// not make it one.
func hasCommands(cmds []*cli.Command) bool {
	return slices.ContainsFunc(cmds, func(c *cli.Command) bool { return c.Name != "help" })
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
