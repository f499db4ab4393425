// Command library deploys an app spec with caravan's orchestrator used as a
// Go library (the equivalent of Modal's app.deploy()), without caravan
// server in between:
//
//	NOMAD_ADDR=http://127.0.0.1:4646 CONSUL_HTTP_ADDR=127.0.0.1:8500 \
//	  CARAVAN_POLICY=~/.local/state/caravan/dev/policy.hcl \
//	  go run ./examples/library examples/hello.hcl
//
// CARAVAN_POLICY names the policy file the deploy is held to, as caravan
// server's --policy does (hello.hcl uses raw_exec, which the local stack's
// policy allows its workspace dev); without it, the built-in policy allows
// no raw_exec.
//
// CARAVAN_DOMAIN, CARAVAN_HTTPS_PORT and CARAVAN_AUTH_URL are the route
// settings, as caravan server's --domain, --https-port and --auth-url: the
// cluster's servers' (README, "Several caravan servers"), so that what this
// deploys is rendered as they render it.
//
// `caravan dev status` prints the addresses of the local stack.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/caravanhq/caravan/clientcfg"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/policy"
	"github.com/caravanhq/caravan/router"
	"github.com/hashicorp/hcl/v2"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: library APP.hcl")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	nc, err := clientcfg.Nomad{}.Client() // NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, ...
	if err != nil {
		return err
	}
	cc, err := clientcfg.Consul{}.Client() // CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ...
	if err != nil {
		return err
	}
	routes := router.DefaultConfig
	if d := os.Getenv("CARAVAN_DOMAIN"); d != "" {
		routes.Domain = d
	}
	routes.HTTPSPort, _ = strconv.Atoi(os.Getenv("CARAVAN_HTTPS_PORT"))
	if u := os.Getenv("CARAVAN_AUTH_URL"); u != "" {
		routes.AuthURL = u
	}

	pol := policy.Default()
	if path := os.Getenv("CARAVAN_POLICY"); path != "" {
		var diags hcl.Diagnostics
		if pol, diags = policy.Load(path); diags.HasErrors() {
			return diags
		}
	}

	o, err := orchestrator.New(orchestrator.Config{
		// Create makes the workspace's namespace if missing (a management
		// token, or a Nomad without ACLs, may).
		Nomad:  orchestrator.NomadClient{Client: nc, Namespaces: &orchestrator.Namespaces{Create: true}},
		Consul: orchestrator.ConsulClient{Client: cc},
		Store:  &orchestrator.ConsulStore{Client: cc},
		Router: routes,
		Policy: pol,
	})
	if err != nil {
		return err
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := o.Deploy(ctx, orchestrator.Caller{Name: "library-example", Workspace: "*"},
		orchestrator.DeployRequest{Spec: src, Filename: path, Tag: "from the Go API"})
	if err != nil {
		return err
	}
	fmt.Printf("app %s is at version %d (changed: %v)\n", res.App, res.Version, res.Changed)
	for _, f := range res.Functions {
		fmt.Printf("  %s %s %s\n", f.Change, f.Name, f.URL)
	}
	return nil
}
