package main

import (
	"fmt"

	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/hcl/v2"
	"github.com/urfave/cli/v2"
)

func validateCommand() *cli.Command {
	return &cli.Command{
		Name:      "validate",
		Usage:     "Check app specs and print every problem with its source line",
		ArgsUsage: "FILE...",
		UsageText: "caravan validate FILE...",
		Description: `Loads each spec and reports every mistake in one pass, with file:line:col,
including the files its functions' code bundles could not hold (a symlink out of
the directory, a device, a tree over the limits).

Exit codes: 0 all specs are valid (warnings may be printed), 1 a spec has errors.`,
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return cli.Exit("validate needs at least one spec file, e.g. caravan validate app.hcl", 1)
			}
			failed := 0
			for _, path := range c.Args().Slice() {
				app, src, diags := spec.LoadFile(path)
				var b *bundles
				if !diags.HasErrors() {
					var bd hcl.Diagnostics
					b, bd = collectBundles(path, app)
					diags = append(diags, bd...)
				}
				if len(diags) > 0 {
					_ = printDiags(c.App.ErrWriter, diags, map[string][]byte{path: src})
				}
				errs, warns := countErrors(diags)
				if errs > 0 {
					failed++
					fmt.Fprintf(c.App.ErrWriter, "%s: %d error(s), %d warning(s)\n", path, errs, warns)
					continue
				}
				web := 0
				for _, fn := range app.Functions {
					if fn.Web != nil {
						web++
					}
				}
				fmt.Fprintf(c.App.Writer, "%s: valid: app %q in workspace %q, %d function(s), %d web, %s\n",
					path, app.Name, app.Workspace, len(app.Functions), web, b.describe())
			}
			if failed > 0 {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}
