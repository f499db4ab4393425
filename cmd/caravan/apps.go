package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

func appRefFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "workspace", Usage: "the app's workspace, when the name alone is ambiguous"},
		&cli.StringFlag{Name: "environment", Usage: "the app's environment"},
	}
}

func changeBody(c *cli.Context) api.ChangeBody {
	b := api.ChangeBody{Workspace: c.String("workspace"), Environment: c.String("environment")}
	if c.IsSet("strategy") {
		b.Strategy = c.String("strategy")
	}
	if c.IsSet("timeout") {
		b.Timeout = c.Duration("timeout").String()
	}
	return b
}

func oneApp(c *cli.Context, verb string) (string, error) {
	if c.NArg() < 1 {
		return "", cli.Exit(fmt.Sprintf("%s needs an app name, e.g. caravan app %s hello", verb, verb), 1)
	}
	return c.Args().First(), nil
}

func appCommand() *cli.Command {
	rollout := []cli.Flag{
		&cli.StringFlag{Name: "strategy", Usage: "rolling (default: no failed requests), recreate, canary or blue-green"},
		&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "how long to wait for the new version to be healthy"},
	}
	return &cli.Command{
		Name:  "app",
		Usage: "List, inspect and change deployed apps",
		Subcommands: []*cli.Command{
			{
				Name:      "list",
				UsageText: "caravan app list [--json]",
				Usage:     "List the apps in your workspace with their state, version and URLs",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action:    appList,
			},
			{
				Name:      "history",
				UsageText: "caravan app history APP",
				Usage:     "Show every version of an app: when, who, how, and whether it went live",
				ArgsUsage: "APP",
				Flags:     append(appRefFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
				Action:    appHistory,
			},
			{
				Name:      "url",
				UsageText: "caravan app url APP FUNCTION",
				Usage:     "Print the URL of a web function",
				ArgsUsage: "APP FUNCTION",
				Flags:     appRefFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return cli.Exit("url takes an app and a function, e.g. caravan app url hello web", 1)
					}
					u, err := client(c).URL(c.Context, c.Args().Get(0), c.Args().Get(1), changeBody(c))
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					fmt.Fprintln(c.App.Writer, u)
					return nil
				},
			},
			{
				Name:      "logs",
				UsageText: "caravan app logs APP [--serve]",
				Usage:     "Follow the logs of every running container of an app",
				ArgsUsage: "APP",
				Flags:     append(appRefFlags(), &cli.BoolFlag{Name: "serve", Usage: "the app's `caravan serve` copy"}),
				Action: func(c *cli.Context) error {
					app, err := oneApp(c, "logs")
					if err != nil {
						return err
					}
					ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
					defer stop()
					ref := changeBody(c)
					ref.Serve = c.Bool("serve")
					if err := client(c).Logs(ctx, app, ref, c.App.Writer); err != nil && ctx.Err() == nil {
						return cli.Exit(err.Error(), 1)
					}
					return nil
				},
			},
			{
				Name:      "rollover",
				UsageText: "caravan app rollover APP [--strategy ...]",
				Usage:     "Replace every container with a fresh one of the same spec, as a new version",
				ArgsUsage: "APP",
				Flags:     append(appRefFlags(), rollout...),
				Action: rolloutAction("rollover", func(c *cli.Context, cl *api.Client, app string, body api.ChangeBody) (*orchestrator.DeployResult, error) {
					return cl.Rollover(c.Context, app, body)
				}),
			},
			{
				Name:      "rollback",
				UsageText: "caravan app rollback APP [VERSION]",
				Usage:     "Deploy an earlier version's spec again, as a new version",
				ArgsUsage: "APP [VERSION]",
				Description: `Without VERSION, goes back to the version that was live before the current
one. Any version in the app's history can be named, however old.`,
				Flags: append(appRefFlags(), rollout...),
				Action: rolloutAction("rollback", func(c *cli.Context, cl *api.Client, app string, body api.ChangeBody) (*orchestrator.DeployResult, error) {
					if c.NArg() > 1 {
						if _, err := fmt.Sscan(strings.TrimPrefix(c.Args().Get(1), "v"), &body.Version); err != nil || body.Version < 1 {
							return nil, fmt.Errorf("%q is not a version number", c.Args().Get(1))
						}
					}
					return cl.Rollback(c.Context, app, body)
				}),
			},
			{
				Name:      "promote",
				UsageText: "caravan app promote APP",
				Usage:     "Send all traffic to an app's canary version and retire the previous one",
				ArgsUsage: "APP",
				Description: `The canary version becomes live: its containers take every request while
Nomad replaces the previous version's containers, then the traffic split
is removed. Recorded in the app's history.`,
				Flags: appRefFlags(),
				Action: rolloutAction("promote", func(c *cli.Context, cl *api.Client, app string, body api.ChangeBody) (*orchestrator.DeployResult, error) {
					return cl.Promote(c.Context, app, body)
				}),
			},
			{
				Name:      "abort",
				UsageText: "caravan app abort APP",
				Usage:     "Send all traffic of an app's canary back to the live version and remove the canaries",
				ArgsUsage: "APP",
				Flags:     appRefFlags(),
				Action: rolloutAction("abort", func(c *cli.Context, cl *api.Client, app string, body api.ChangeBody) (*orchestrator.DeployResult, error) {
					return cl.Abort(c.Context, app, body)
				}),
			},
			{
				Name:      "stop",
				UsageText: "caravan app stop APP [--yes]",
				Usage:     "Stop an app for good: its containers, services and routes go away",
				ArgsUsage: "APP",
				Description: `Purges the app's Nomad job; its URLs answer 404. The history is kept, and
deploying the same name again starts a new history. Asks for confirmation
unless --yes is given.`,
				Flags:  append(appRefFlags(), &cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask for confirmation"}),
				Action: appStop,
			},
		},
	}
}

// rolloutAction runs a change that rolls out a new version of APP and
// prints it as deploy does.
func rolloutAction(verb string, call func(*cli.Context, *api.Client, string, api.ChangeBody) (*orchestrator.DeployResult, error)) cli.ActionFunc {
	return func(c *cli.Context) error {
		app, err := oneApp(c, verb)
		if err != nil {
			return err
		}
		res, err := call(c, client(c), app, changeBody(c))
		if err != nil {
			return cli.Exit(verb+" failed: "+err.Error(), 1)
		}
		switch verb {
		case "promote":
			fmt.Fprintf(c.App.Writer, "✓ Promoted version %d of app %s: it takes all traffic; the previous version's containers are gone (%s).\n",
				res.Version, res.App, res.Duration.Round(100*time.Millisecond))
		case "abort":
			fmt.Fprintf(c.App.Writer, "✓ Aborted the canary (version %d) of app %s: all traffic is back on the live version; the canaries are gone (%s).\n",
				res.Version, res.App, res.Duration.Round(100*time.Millisecond))
		default:
			printDeploy(c.App.Writer, res)
		}
		return nil
	}
}

func appList(c *cli.Context) error {
	apps, err := client(c).Apps(c.Context)
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, apps)
	}
	if len(apps) == 0 {
		fmt.Fprintln(c.App.Writer, "No apps deployed. Deploy one with: caravan deploy app.hcl")
		return nil
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKSPACE\tAPP\tSTATE\tVERSION\tLAST CHANGE\tFUNCTIONS")
	for _, a := range apps {
		var fns []string
		for _, f := range a.Functions {
			s := f.Name + " (" + containersColumn(f) + ")"
			if f.Schedule != "" {
				s = fmt.Sprintf("%s (on %q", f.Name, f.Schedule)
				if f.LastRun != nil {
					s += fmt.Sprintf(", last run %s", f.LastRun.Status)
				}
				s += ")"
			}
			if f.Callable {
				s = f.Name + " (callable)"
			}
			if f.URL != "" {
				s += " " + f.URL
			}
			fns = append(fns, s)
		}
		ws := a.Workspace
		if a.Environment != "" {
			ws += "/" + a.Environment
		}
		state := string(a.State)
		if a.State == orchestrator.StateFailed && a.Version > 0 {
			state = fmt.Sprintf("failed (v%d failed, v%d serves)", a.LatestVersion, a.Version)
		}
		if c := a.Canary; c != nil {
			state = fmt.Sprintf("canary (v%d takes %d%%)", c.Version, c.Traffic)
		}
		version := "-"
		if a.Version > 0 {
			version = fmt.Sprint(a.Version)
		}
		name := a.App
		if a.Serve {
			name += " (serve)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ws, name, state, version,
			a.DeployedAt.Local().Format(time.DateTime), strings.Join(fns, ", "))
	}
	return tw.Flush()
}

// containersColumn says how many containers of a long-running function
// run ("2 running"; "1 of 3 running" while the count is not reached) and,
// for an autoscaled one, its load at the proxies ("4 in flight, 2
// queued"; "load unknown" when no proxy answered).
func containersColumn(f api.FunctionSummary) string {
	s := fmt.Sprintf("%d running", f.Running)
	if f.Desired != f.Running || f.Autoscaled {
		s = fmt.Sprintf("%d of %d running", f.Running, f.Desired)
	}
	if !f.Autoscaled {
		return s
	}
	l := f.Load
	if l == nil {
		return s + ", load unknown"
	}
	s += fmt.Sprintf(", %d in flight, %d queued", l.InFlight, l.Queued)
	if l.Proxies < l.ProxiesKnown {
		s += fmt.Sprintf(" (%d of %d proxies answered)", l.Proxies, l.ProxiesKnown)
	}
	return s
}

func appHistory(c *cli.Context) error {
	app, err := oneApp(c, "history")
	if err != nil {
		return err
	}
	h, err := client(c).History(c.Context, app, changeBody(c))
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, h)
	}
	fmt.Fprintf(c.App.Writer, "App %s (workspace %s): %s", h.App.App, h.App.Workspace, h.App.State)
	if h.App.LiveVersion > 0 {
		fmt.Fprintf(c.App.Writer, ", version %d live", h.App.LiveVersion)
	}
	fmt.Fprintln(c.App.Writer)
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tWHEN\tWHO\tKIND\tSTRATEGY\tSTATUS\tSPEC\tCODE\tGIT\tTAG")
	for i := len(h.Versions) - 1; i >= 0; i-- {
		v := h.Versions[i]
		kind := string(v.Kind)
		if v.Kind == orchestrator.KindRollback {
			kind = fmt.Sprintf("rollback to v%d", v.RollbackOf)
		}
		if v.Status == orchestrator.StatusFailed {
			kind += " (failure)"
		}
		git := "-"
		if v.GitCommit != "" {
			git = v.GitCommit[:min(len(v.GitCommit), 12)]
			if v.GitDirty {
				git += "-dirty"
			}
		}
		tag := v.Tag
		if v.Error != "" {
			tag = strings.TrimSpace(tag + " " + v.Error)
		}
		fmt.Fprintf(tw, "v%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Version, v.StartedAt.Local().Format(time.DateTime),
			who(v.Who, v.WhoID), kind, v.Strategy, v.Status, v.SpecHash, codeColumn(v), git, tag)
		for _, e := range v.Events {
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t\t\t\t\t\t\n", e.At.Local().Format(time.DateTime), who(e.Who, e.WhoID), e.What)
		}
	}
	return tw.Flush()
}

// codeColumn says what code a version runs: "-" without bundles, else
// the functions whose code it changed ("new: web, worker") or "same".
func codeColumn(v *orchestrator.VersionRecord) string {
	switch {
	case len(v.Bundles) == 0:
		return "-"
	case len(v.CodeChanged) > 0:
		return "new: " + strings.Join(v.CodeChanged, ", ")
	case v.Version == 1 || v.Kind == orchestrator.KindRollback:
		return "bundled"
	}
	return "same"
}

// who is a token's name with its ID, which tells apart two tokens of one
// name (`caravan token list --all` shows revoked ones too).
func who(name, id string) string {
	if id == "" {
		return name
	}
	return name + " (" + id + ")"
}

func appStop(c *cli.Context) error {
	app, err := oneApp(c, "stop")
	if err != nil {
		return err
	}
	if !c.Bool("yes") {
		in, ok := c.App.Reader.(*os.File)
		if !ok || !term.IsTerminal(int(in.Fd())) {
			return cli.Exit("app stop is destructive and there is no terminal to confirm on: pass --yes", 1)
		}
		fmt.Fprintf(c.App.ErrWriter, "Stop app %s? Its containers stop and its URLs stop answering. Type the app name to confirm: ", app)
		line, _ := bufio.NewReader(in).ReadString('\n')
		if strings.TrimSpace(line) != app {
			return cli.Exit("not stopped", 1)
		}
	}
	rec, err := client(c).Stop(c.Context, app, changeBody(c))
	if err != nil {
		return cli.Exit("stop failed: "+err.Error(), 1)
	}
	fmt.Fprintf(c.App.Writer, "✓ Stopped app %s (workspace %s). Deploying it again starts a new history.\n", rec.App, rec.Workspace)
	return nil
}
