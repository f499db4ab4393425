// Package devstack owns caravan's local stack: it installs pinned builds of
// Nomad, Consul and Traefik, and starts them with Pebble, pebble-challtestsrv
// and caravan server on 127.0.0.1. `caravan dev up` and the e2e tests both
// use it, so the tests run against exactly what a developer runs.
package devstack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Tool is a server binary built from its Go module through a wrapper module
// in the repository's tools/ directory (their go.mod files carry replace
// directives, so `go install` cannot build them).
type Tool struct {
	Name    string
	Version string
	// Package is the main package to build.
	Package string
	// Env is extra build environment.
	Env []string
	// Dir is the wrapper module's directory under tools/ (default Name).
	Dir string
	// Versioned by source: the cached binary's version also carries a hash
	// of the wrapper module's files, so editing them rebuilds it.
	BySource bool
	// Links are caravan's own packages the tool's main imports (paths
	// from the repository's root, such as "./proxy/intraefik"): with
	// BySource, the hash covers every caravan package they depend on, and
	// caravan's go.mod and go.sum.
	Links []string
	// Generate, when set, writes files of the main package into the
	// wrapper module's directory before the build; Generated names them
	// (the hash leaves them out: they are made from what it covers).
	Generate  func(ctx context.Context, dir string) error
	Generated []string
}

// Pinned tools. Changing a version means editing tools/<name>/go.mod too.
var (
	Nomad  = Tool{Name: "nomad", Version: "1.11.2", Package: "github.com/hashicorp/nomad"}
	Consul = Tool{Name: "consul", Version: "1.22.2", Package: "github.com/hashicorp/consul",
		// Consul's nested modules are not in the checksum database; the
		// committed go.sum verifies them instead.
		Env: []string{"GONOSUMDB=github.com/hashicorp/consul"}}
	// Traefik is the pinned Traefik, which the stack runs as caravan's
	// build of it (TraefikCaravan, whose tools/traefik-caravan/go.mod
	// pins this version).
	Traefik = Tool{Name: "traefik", Version: "3.6.12", Package: "github.com/traefik/traefik/v3/cmd/traefik"}
)

// SeaweedFS is a real S3-compatible server (tools/weed) for the S3 bundle
// store's tests; not part of the stack, built by `just seaweedfs`.
var SeaweedFS = Tool{Name: "weed", Version: "7506e5f91cd6", Package: "github.com/seaweedfs/seaweedfs/weed"}

// TraefikCaravan is the Traefik the stack runs: caravan's Traefik build
// (tools/traefik-caravan), Traefik's own main from the pinned module with
// caravan's proxy compiled in as the middleware plugin "caravan" (package
// intraefik), so that autoscaled functions can be proxied inside
// Traefik's process (router.Config.ProxyPlugin). Everything else is the
// pinned Traefik's.
var TraefikCaravan = Tool{Name: "traefik-caravan", Version: Traefik.Version, Package: ".", Dir: "traefik-caravan", BySource: true,
	Links: []string{"./proxy/intraefik"}, Generate: copyTraefikMain, Generated: traefikMainFiles}

// Tools are the three servers the stack builds (Traefik as caravan's
// build of it).
var Tools = []Tool{Nomad, Consul, TraefikCaravan}

// FakeGPUPlugin is caravan's test device plugin (tools/fakegpu), built
// against the same Nomad.
var FakeGPUPlugin = Tool{Name: "caravan-fake-gpu", Version: Nomad.Version, Package: ".", Dir: "fakegpu", BySource: true}

// CacheDir is where built binaries live: $CARAVAN_CACHE_DIR, else
// ~/.cache/caravan.
func CacheDir() string {
	if d := os.Getenv("CARAVAN_CACHE_DIR"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "caravan")
	}
	return filepath.Join(os.TempDir(), "caravan-cache")
}

// BinPath is where t's binary is cached.
func (t Tool) BinPath() string {
	return filepath.Join(CacheDir(), "bin", t.Name+"-"+t.Version)
}

// withSourceHash returns t with a hash of its wrapper module's files in its
// version, for tools built from caravan's own source.
func (t Tool) withSourceHash(toolsDir string) (Tool, error) {
	if !t.BySource {
		return t, nil
	}
	dir := filepath.Join(toolsDir, t.dir())
	entries, err := os.ReadDir(dir)
	if err != nil {
		return t, err
	}
	h := sha256.New()
	for _, e := range entries {
		if e.IsDir() || slices.Contains(t.Generated, e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return t, err
		}
		fmt.Fprintf(h, "%s %d\n", e.Name(), len(b))
		h.Write(b)
	}
	if len(t.Links) > 0 {
		if err := hashLinks(h, filepath.Dir(toolsDir), t.Links); err != nil {
			return t, err
		}
	}
	t.Version += "-" + hex.EncodeToString(h.Sum(nil))[:8]
	return t, nil
}

// hashLinks writes into h caravan's go.mod and go.sum under root and the
// Go files (tests aside) of every caravan package that pkgs depend on.
func hashLinks(h io.Writer, root string, pkgs []string) error {
	cmd := exec.Command("go", append([]string{"list", "-deps", "-f", `{{if .Module}}{{if eq .Module.Path "` + caravanModule + `"}}{{.Dir}}{{end}}{{end}}`}, pkgs...)...)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("listing the caravan packages %v link: %w", pkgs, err)
	}
	files := []string{filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum")}
	for _, d := range strings.Fields(string(out)) {
		gos, err := filepath.Glob(filepath.Join(d, "*.go"))
		if err != nil {
			return err
		}
		for _, f := range gos {
			if !strings.HasSuffix(f, "_test.go") {
				files = append(files, f)
			}
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, f)
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(rel), len(b))
		h.Write(b)
	}
	return nil
}

// caravanModule is caravan's module path.
const caravanModule = "github.com/caravanhq/caravan"

// traefikMainFiles are the files of Traefik's cmd/traefik that
// copyTraefikMain copies (its tests aside).
var traefikMainFiles = []string{"traefik.go", "logger.go", "plugins.go"}

// traefikPluginCall is the one line of Traefik's main that caravan's build
// changes: its plugin builder is wrapped by caravanPlugins (caravan.go).
const (
	traefikPluginCall  = "pluginBuilder, err := createPluginBuilder(staticConfiguration)"
	caravanPluginCall  = "pluginBuilder, err := caravanPlugins(createPluginBuilder(staticConfiguration))"
	traefikModule      = "github.com/traefik/traefik/v3"
	traefikMainPackage = "cmd/traefik"
)

// copyTraefikMain copies cmd/traefik of the Traefik module that dir's
// go.mod pins into dir, with its plugin builder wrapped (traefikPluginCall).
func copyTraefikMain(ctx context.Context, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", traefikModule)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("downloading %s: %w", traefikModule, err)
	}
	var mod struct{ Dir, Version string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("downloading %s: no module directory in %q (%v)", traefikModule, out, err)
	}
	for _, name := range traefikMainFiles {
		b, err := os.ReadFile(filepath.Join(mod.Dir, traefikMainPackage, name))
		if err != nil {
			return err
		}
		if name == "traefik.go" {
			if n := bytes.Count(b, []byte(traefikPluginCall)); n != 1 {
				return fmt.Errorf("%s@%s/%s/%s has %d lines %q, not one: caravan's Traefik build needs updating for this version",
					traefikModule, mod.Version, traefikMainPackage, name, n, traefikPluginCall)
			}
			b = bytes.Replace(b, []byte(traefikPluginCall), []byte(caravanPluginCall), 1)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (t Tool) dir() string {
	if t.Dir != "" {
		return t.Dir
	}
	return t.Name
}

// Installer builds tools into the cache.
type Installer struct {
	// ToolsDir holds the wrapper modules (tools/<name>/go.mod).
	ToolsDir string
	// Out receives progress.
	Out io.Writer
}

// FindToolsDir finds tools/ by walking up from dir to caravan's repository
// root; $CARAVAN_TOOLS_DIR overrides.
func FindToolsDir(dir string) (string, error) {
	if d := os.Getenv("CARAVAN_TOOLS_DIR"); d != "" {
		return d, nil
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "tools", "nomad", "go.mod")); err == nil {
			return filepath.Join(d, "tools"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no tools/nomad/go.mod above %s: run from a caravan checkout or set CARAVAN_TOOLS_DIR", dir)
		}
	}
}

// Ensure returns the path of t's binary, building it first when the cache
// does not have this version. Builds are serialised across processes with a
// lock file, so two stacks starting at once build each tool only once.
func (in *Installer) Ensure(ctx context.Context, t Tool) (string, error) {
	if t.BySource {
		if in.ToolsDir == "" {
			return "", errors.New("devstack: Installer.ToolsDir is not set")
		}
		var err error
		if t, err = t.withSourceHash(in.ToolsDir); err != nil {
			return "", err
		}
	}
	bin := t.BinPath()
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(filepath.Join(CacheDir(), "build.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // built by another process while we waited
	}
	if in.ToolsDir == "" {
		return "", errors.New("devstack: Installer.ToolsDir is not set")
	}
	return bin, in.build(ctx, t, bin)
}

func (in *Installer) build(ctx context.Context, t Tool, bin string) error {
	out := in.Out
	if out == nil {
		out = io.Discard
	}
	dir := filepath.Join(in.ToolsDir, t.dir())
	if t.Generate != nil {
		if err := t.Generate(ctx, dir); err != nil {
			return fmt.Errorf("building %s: %w", t.Name, err)
		}
	}
	fmt.Fprintf(out, "==> building %s %s from its Go module (once; about 5-13 minutes on 2 cores)\n", t.Name, t.Version)
	tmp := bin + ".tmp"
	cmd := exec.CommandContext(ctx, "go", "build", "-v", "-trimpath", "-o", tmp, t.Package)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Env = append(cmd.Env, t.Env...)
	logPath := filepath.Join(CacheDir(), "logs", t.Name+"-"+t.Version+".log")
	_ = os.MkdirAll(filepath.Dir(logPath), 0o755)
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var pkgs atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if !strings.Contains(sc.Text(), " ") {
				pkgs.Add(1)
			}
		}
	}()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("building %s: %w", t.Name, err)
	}
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	for {
		select {
		case <-tick.C:
			fmt.Fprintf(out, "    %s: %d packages compiled, %s elapsed\n", t.Name, pkgs.Load(), time.Since(start).Round(time.Second))
		case err := <-waited:
			pw.Close()
			<-done
			if err != nil {
				os.Remove(tmp)
				return fmt.Errorf("building %s %s failed (%v); the log is %s", t.Name, t.Version, err, logPath)
			}
			if err := os.Rename(tmp, bin); err != nil {
				return err
			}
			fmt.Fprintf(out, "    %s %s built in %s: %s\n", t.Name, t.Version, time.Since(start).Round(time.Second), bin)
			return nil
		}
	}
}

// lockFile takes an exclusive flock on path, waiting for it.
func lockFile(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// LookPebble finds pebble and pebble-challtestsrv, installing Debian's
// pebble package when they are missing and we are root.
func LookPebble(ctx context.Context, out io.Writer) (pebble, chall string, err error) {
	find := func() (string, string, error) {
		p, err1 := exec.LookPath("pebble")
		c, err2 := exec.LookPath("pebble-challtestsrv")
		return p, c, errors.Join(err1, err2)
	}
	if p, c, err := find(); err == nil {
		return p, c, nil
	}
	if os.Geteuid() != 0 {
		return "", "", errors.New("pebble is not installed: run `sudo apt-get install pebble`")
	}
	fmt.Fprintln(out, "==> installing pebble (apt-get install pebble)")
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "pebble"}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
	return find()
}
