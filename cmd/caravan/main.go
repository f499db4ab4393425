// Command caravan deploys HCL app specs to Nomad, with web endpoints served
// by Traefik. Each verb lives in a file of its own; each parses flags, calls
// one function of the orchestrator (through caravan server) or devstack, and
// prints.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newApp(os.Stdout, os.Stderr).Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
