package main

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/urfave/cli/v2"
)

func deployCommand() *cli.Command {
	return &cli.Command{
		Name:      "deploy",
		Usage:     "Deploy an app spec and wait until its web functions answer",
		ArgsUsage: "FILE",
		UsageText: "caravan deploy FILE [--strategy rolling|recreate|canary|blue-green] [--tag TEXT] [--timeout 5m]",
		Description: `Validates the spec locally, sends it to caravan server, and waits until the
new version is healthy in Nomad and every web function answers through Traefik.
An unchanged spec is a no-op. A spec with errors changes nothing; a version that
fails to start is reverted by Nomad and the previous version keeps serving.
With strategy canary, deploy returns once the canaries take their share of
traffic, and prints their preview URLs; 'caravan app promote' or
'caravan app abort' decides. With blue-green, it returns once all traffic has
switched to the new set and the old set is gone.

Exit codes: 0 deployed (or no changes), 1 invalid spec or failed deployment.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "strategy", Usage: "override the spec's rollout: rolling (new containers beside the old, no failed requests), recreate (stop the old first), canary (a share of traffic until app promote) or blue-green (a full new set, then all traffic at once)"},
			&cli.StringFlag{Name: "tag", Usage: "a note (`TEXT`) recorded with the version, shown by caravan app history"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "how long to wait for the new version to be healthy"},
		},
		Action: func(c *cli.Context) error {
			path, src, b, err := specArg(c, "deploy")
			if err != nil {
				return err
			}
			cl := client(c)
			if err := b.upload(c.Context, cl, c.App.Writer); err != nil {
				return cli.Exit("deploy failed: "+err.Error(), 1)
			}
			commit, dirty := gitState(filepath.Dir(path))
			body := api.DeployBody{
				Filename: path, Spec: string(src), Timeout: c.Duration("timeout").String(),
				Strategy: c.String("strategy"), Tag: c.String("tag"), GitCommit: commit, GitDirty: dirty, Bundles: b.ids,
			}
			res, err := cl.DeployBody(c.Context, body)
			if api.ErrorCodeOf(err) == api.CodeBundleMissing {
				// Collected between the upload and the deploy: once more.
				if err = b.upload(c.Context, cl, c.App.Writer); err == nil {
					res, err = cl.DeployBody(c.Context, body)
				}
			}
			if err != nil {
				return serverFailure(c, "deploy", err, path, src)
			}
			if len(res.Warnings) > 0 {
				_ = printDiags(c.App.ErrWriter, orchestrator.FromWire(res.Warnings), map[string][]byte{path: src})
			}
			printDeploy(c.App.Writer, res)
			return nil
		},
	}
}

// gitState is the commit of the git checkout holding dir, and whether it
// has uncommitted changes; empty outside a checkout.
func gitState(dir string) (commit string, dirty bool) {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
	if err != nil {
		return "", false
	}
	status, err := exec.Command("git", "-C", dir, "status", "--porcelain").Output()
	return strings.TrimSpace(string(out)), err == nil && len(bytes.TrimSpace(status)) > 0
}

// printDeploy shows what a deploy did as a tree, as Modal does.
func printDeploy(w io.Writer, res *orchestrator.DeployResult) {
	switch {
	case !res.Changed:
		fmt.Fprintf(w, "✓ No changes: app %s (workspace %s) stays at version %d.\n", res.App, res.Workspace, res.Version)
	case res.Canary != nil:
		fmt.Fprintf(w, "✓ Deployed a canary of app %s (workspace %s).\n", res.App, res.Workspace)
	case res.Kind == orchestrator.KindRollover:
		fmt.Fprintf(w, "✓ Rolled over app %s (workspace %s): every container is new.\n", res.App, res.Workspace)
	case res.Kind == orchestrator.KindRollback:
		fmt.Fprintf(w, "✓ Rolled back app %s (workspace %s).\n", res.App, res.Workspace)
	default:
		fmt.Fprintf(w, "✓ Deployed app %s (workspace %s).\n", res.App, res.Workspace)
	}
	for i, f := range res.Functions {
		branch := "├──"
		if i == len(res.Functions)-1 {
			branch = "└──"
		}
		line := fmt.Sprintf("%s %s %s", branch, f.Change, f.Name)
		if f.CodeChanged {
			line += " (new code)"
		}
		if f.Schedule != "" {
			line += fmt.Sprintf(" (runs on %q, UTC)", f.Schedule)
		}
		if f.Callable {
			line += " (callable: caravan call " + res.App + " " + f.Name + ")"
		}
		if f.MaxContainers > f.Containers {
			line += fmt.Sprintf(" (%d–%d containers, scales with traffic)", f.Containers, f.MaxContainers)
		} else if f.Containers > 0 {
			line += fmt.Sprintf(" (%d container", f.Containers)
			if f.Containers > 1 {
				line += "s"
			}
			line += ")"
		}
		if f.URL != "" {
			line += " => " + f.URL
		}
		fmt.Fprintln(w, line)
		for _, d := range f.CustomDomains {
			pad := "│  "
			if i == len(res.Functions)-1 {
				pad = "   "
			}
			fmt.Fprintf(w, "%s    also https://%s\n", pad, d)
		}
	}
	switch c := res.Canary; {
	case c != nil:
		fmt.Fprintf(w, "✓ Version %d is a canary (spec %s), up in %s: %d%% of traffic goes to it, the rest to the live version.\n",
			res.Version, res.SpecHash, res.Duration.Round(100*time.Millisecond), c.Traffic)
		atZero := c.JobFunctions
		if c.CanaryJob != "" && len(atZero) == 0 {
			atZero = c.Functions
		}
		for _, fn := range c.Functions {
			line := fmt.Sprintf("  preview %s => %s", fn, c.Previews[fn])
			if slices.Contains(atZero, fn) {
				line += " (at zero, in job " + c.CanaryJob + ": its first request starts it)"
			}
			fmt.Fprintln(w, line)
		}
		if !c.PromoteAt.IsZero() {
			fmt.Fprintf(w, "  promoted automatically at %s unless it fails its health checks\n", c.PromoteAt.Local().Format(time.DateTime))
		}
		fmt.Fprintf(w, "Promote it with: caravan app promote %s   Abort it with: caravan app abort %s\n", res.App, res.App)
	case res.Changed:
		fmt.Fprintf(w, "✓ Version %d is live (spec %s) in %s.\n", res.Version, res.SpecHash, res.Duration.Round(100*time.Millisecond))
	}
	if res.Queued > 0 {
		fmt.Fprintf(w, "  (%s of it waiting for its turn to reach Nomad, behind other rollouts of the server)\n", res.Queued.Round(100*time.Millisecond))
	}
}
