// Command caravan deploys HCL app specs to Nomad, with web endpoints served
// by Traefik. Each verb lives in a file of its own; each parses flags, calls
// one function of the orchestrator (through caravan server) or devstack, and
// prints.
package main

import (
	"os"

	"github.com/caravanhq/caravan/internal/taskcmd"
)

func main() { taskcmd.Main(newApp(os.Stdout, os.Stderr), os.Args) }
