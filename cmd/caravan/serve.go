package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/hcl/v2"
	"github.com/urfave/cli/v2"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "Run an ephemeral copy of an app that redeploys when its files change",
		ArgsUsage: "FILE",
		UsageText: "caravan serve FILE",
		Description: `Deploys a copy of the app with its own "-dev" hostnames (the deployed app of
the same name is never touched), streams its logs, and watches the spec, the
files of its functions' bundles and the files its command and args name by
absolute path: on a change it uploads the changed bundles and redeploys within a
couple of seconds. Ctrl-C removes everything it created.

Exit codes: 0 stopped by Ctrl-C, 1 the first deploy failed.`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "poll", Value: 300 * time.Millisecond, Usage: "how often to look for changes"},
		},
		Action: serve,
	}
}

// watched returns the spec file, the files of its functions' bundles (b,
// nil: none) and every existing file its functions' command and args name
// by absolute path.
func watched(path string, app *spec.App, b *bundles) []string {
	files := []string{path}
	if b != nil {
		for _, bt := range b.trees {
			for _, f := range bt.tree.Files {
				files = append(files, f.Abs)
			}
		}
	}
	if app != nil {
		for _, fn := range app.Functions {
			for _, a := range append([]string{fn.Command}, fn.Args...) {
				if filepath.IsAbs(a) {
					if st, err := os.Stat(a); err == nil && st.Mode().IsRegular() {
						files = append(files, a)
					}
				}
			}
		}
	}
	slices.Sort(files)
	return slices.Compact(files)
}

// fingerprint changes when any of files changes.
func fingerprint(files []string) string {
	var fp string
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			fp += fmt.Sprintf("%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
		} else {
			fp += f + ":gone;"
		}
	}
	return fp
}

func serve(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("serve takes one spec file, e.g. caravan serve app.hcl", 1)
	}
	path, err := filepath.Abs(c.Args().First())
	if err != nil {
		return err
	}
	cl := client(c)
	// The log stream is copied from its own goroutine while this one
	// prints deploys: one lock for both writers (they may be one terminal)
	// keeps every write whole and the writers free of data races.
	var mu sync.Mutex
	out := &lockedWriter{mu: &mu, w: c.App.Writer}
	errOut := &lockedWriter{mu: &mu, w: c.App.ErrWriter}
	// logs counts the log streams still copying; serve waits for them
	// before it returns, so nothing writes to out after serve is done.
	var logs sync.WaitGroup
	defer logs.Wait()
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	var (
		appName   string
		ref       api.ChangeBody
		logCancel context.CancelFunc = func() {}
		deployed  bool
	)
	// deploy loads the spec and deploys it; force rolls the containers
	// over when the spec is unchanged but a file it names changed.
	var current *bundles
	deploy := func(force bool) *spec.App {
		app, src, diags := spec.LoadFile(path)
		var b *bundles
		if !diags.HasErrors() {
			var bd hcl.Diagnostics
			b, bd = collectBundles(path, app)
			diags = append(diags, bd...)
		}
		if len(diags) > 0 {
			_ = printDiags(errOut, diags, map[string][]byte{path: src})
		}
		if diags.HasErrors() {
			fmt.Fprintln(errOut, "✗ The spec has errors; still serving the last good version. Fix and save to retry.")
			return app
		}
		current = b
		dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		if err := b.upload(dctx, cl, out); err != nil {
			fmt.Fprintln(errOut, "✗ Deploy failed:", err)
			return app
		}
		res, err := cl.DeployBody(dctx, api.DeployBody{Filename: path, Spec: string(src), Serve: true, Bundles: b.ids})
		if err == nil && !res.Changed && force {
			res, err = cl.Rollover(dctx, app.Name, api.ChangeBody{Workspace: app.Workspace, Environment: app.Environment, Serve: true})
		}
		if err != nil {
			if !printServerDiags(errOut, err, path, src) {
				fmt.Fprintln(errOut, "✗ Deploy failed:", err)
			}
			return app
		}
		deployed = true
		appName = app.Name
		ref = api.ChangeBody{Workspace: app.Workspace, Environment: app.Environment, Serve: true}
		printDeploy(out, res)
		logCancel()
		var lctx context.Context
		lctx, logCancel = context.WithCancel(ctx)
		logs.Go(func() { _ = cl.Logs(lctx, appName, ref, out) })
		return app
	}

	app := deploy(false)
	if !deployed {
		return cli.Exit("serve: the first deploy failed", 1)
	}
	defer func() {
		logCancel()
		fmt.Fprintln(out, "\n⏹  Stopping the serve copy...")
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := cl.Stop(sctx, appName, ref); err != nil {
			fmt.Fprintln(errOut, "✗ Could not remove the serve copy:", err)
			return
		}
		fmt.Fprintln(out, "✓ Removed everything serve created.")
	}()

	// A file added to a bundle's directory is seen at the next walk.
	watch := func(app *spec.App) []string {
		if app != nil {
			// Only the files' names, sizes and times count here (see
			// fingerprint): the walk reads no file.
			byRoot := func(t *bundle.Tree) (string, error) { return fmt.Sprintf("%p", t), nil }
			if b, diags := walkBundles(path, app, byRoot); !diags.HasErrors() {
				return watched(path, app, b)
			}
		}
		return watched(path, app, current)
	}
	files := watch(app)
	fmt.Fprintf(out, "👀 Watching %d file(s) for changes. Ctrl-C to stop.\n", len(files))
	last := fingerprint(files)
	tick := time.NewTicker(c.Duration("poll"))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		files = watch(app)
		fp := fingerprint(files)
		if fp == last {
			continue
		}
		last = fp
		fmt.Fprintln(out, "↻ Change detected, redeploying...")
		if a := deploy(true); a != nil {
			app = a
			files = watch(a)
			last = fingerprint(files)
		}
	}
}

// lockedWriter serializes writes to w under mu, which writers of one
// output share.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
