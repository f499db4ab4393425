// Command caravan deploys HCL app specs to Nomad, with web endpoints served
// by Traefik. Each verb lives in a file of its own; each parses flags, calls
// one function of the orchestrator (through caravan server) or devstack, and
// prints.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	err := newApp(os.Stdout, os.Stderr).Run(os.Args)
	if err == nil {
		return
	}
	code := 1
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	// Commands that already printed what went wrong (diagnostics) exit
	// with an empty message.
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "Error:", msg)
	}
	os.Exit(code)
}
