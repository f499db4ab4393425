package taskcmd

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// Main runs app (a *cli.App, or caravan's wrapper of one) on args and exits as caravan's binaries do: with the
// exit code of a cli.ExitCoder (1 for any other error), printing the
// error unless its message is empty (a command that already printed what
// went wrong, such as HCL diagnostics).
func Main(app interface{ Run([]string) error }, args []string) {
	err := app.Run(args)
	if err == nil {
		return
	}
	code := 1
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "Error:", msg)
	}
	os.Exit(code)
}
