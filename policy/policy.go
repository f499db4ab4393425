// Package policy says what a workspace may run: the task drivers its
// functions may use and limits on CPU, memory, GPUs and containers. It is
// pure: Parse loads an operator's policy file (HCL, with diagnostics) and
// Check holds a validated app spec to it. The orchestrator checks every
// version against the policy before anything is numbered, claimed or
// registered.
//
// The reason it exists: raw_exec runs a function as the Nomad agent's user,
// with no isolation from other tenants' tasks, their environment or the
// agent's credentials. A server without a policy file allows no raw_exec
// anywhere (Default).
package policy

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/hcl/v2"
)

// Wildcard is the workspace label of the block every workspace without a
// block of its own gets.
const Wildcard = "*"

// Drivers are the task drivers a policy can allow.
var Drivers = []string{spec.DriverRawExec, spec.DriverExec, spec.DriverDocker}

// Builtin is what Default allows every workspace, and what a block of a
// policy file leaves unset (after its file's workspace "*" block): the
// isolating drivers, no raw_exec, and limits generous enough that only a
// mistake or abuse meets them.
var Builtin = Rules{
	Workspace:        Wildcard,
	Drivers:          []string{spec.DriverExec, spec.DriverDocker},
	MaxCPU:           16_000,
	MaxMemory:        65_536,
	MaxGPUs:          8,
	MaxContainers:    100,
	MaxAppContainers: 200,
}

// Rules are what one workspace (or, for Workspace "*", every workspace
// without a block of its own) may run, with every default applied.
type Rules struct {
	// Workspace is the block's label: a workspace name, or "*".
	Workspace string
	// Drivers a function may use.
	Drivers []string
	// MaxCPU is the most MHz a container may ask for.
	MaxCPU int
	// MaxMemory is the most MiB a container may ask for.
	MaxMemory int
	// MaxGPUs is the most GPUs a container may ask for.
	MaxGPUs int
	// MaxContainers bounds a function's min_containers and max_containers.
	MaxContainers int
	// MaxAppContainers bounds the containers of all of an app's functions
	// together (see Containers).
	MaxAppContainers int

	// source names the rules in errors: "policy.hcl:3" or "built-in".
	source string
}

// String names the rules for an error: `workspace "*" (policy.hcl:3)`.
func (r *Rules) String() string {
	return fmt.Sprintf("workspace %q (%s)", r.Workspace, r.source)
}

// Policy is every workspace's rules.
type Policy struct {
	// Source is the file the policy was read from, or "built-in".
	Source string
	rules  map[string]*Rules
}

// Default is the policy of a server without a policy file: Builtin for
// every workspace.
func Default() *Policy {
	r := Builtin
	r.Drivers = slices.Clone(Builtin.Drivers)
	r.source = "built-in"
	return &Policy{Source: "built-in", rules: map[string]*Rules{Wildcard: &r}}
}

// Name is the policy file's base name, or "built-in", for errors: they
// reach tenants, who need no server paths.
func (p *Policy) Name() string {
	if p.Source == "built-in" {
		return p.Source
	}
	return filepath.Base(p.Source)
}

// For returns workspace's rules: its own block's, else the "*" block's,
// else nil (the policy lets it run nothing).
func (p *Policy) For(workspace string) *Rules {
	if r := p.rules[workspace]; r != nil {
		return r
	}
	return p.rules[Wildcard]
}

// Violation is one thing an app asks for that its workspace's rules do
// not allow.
type Violation struct {
	// Function that asks for it; empty for the app as a whole.
	Function string
	// Limit is the policy attribute it breaks ("drivers", "max_cpu",
	// "max_memory", "max_gpus", "max_containers", "max_app_containers"),
	// or "workspace" when no block covers the workspace.
	Limit string
	// Why says what was asked for and what the limit is.
	Why string
}

func (v Violation) String() string {
	if v.Function == "" {
		return v.Why
	}
	return fmt.Sprintf("function %q: %s", v.Function, v.Why)
}

// Check returns the rules app's workspace is held to (nil when none
// covers it) and every violation of them, in the order of the spec's
// functions. app is a validated spec.
func (p *Policy) Check(app *spec.App) (*Rules, []Violation) {
	r := p.For(app.Workspace)
	if r == nil {
		return nil, []Violation{{Limit: "workspace", Why: fmt.Sprintf(
			"%s has no block for workspace %q and no workspace %q block, so the workspace may run nothing",
			p.Name(), app.Workspace, Wildcard)}}
	}
	var out []Violation
	add := func(fn, limit, format string, args ...any) {
		out = append(out, Violation{Function: fn, Limit: limit, Why: fmt.Sprintf(format, args...)})
	}
	for _, fn := range app.Functions {
		if d := fn.TaskDriver(); !slices.Contains(r.Drivers, d) {
			add(fn.Name, "drivers", "driver %q is not allowed (drivers = %s)", d, quoteList(r.Drivers))
		}
		cpu, mem, gpus := resources(fn)
		if cpu > r.MaxCPU {
			add(fn.Name, "max_cpu", "cpu = %d MHz per container is over max_cpu = %d", cpu, r.MaxCPU)
		}
		if mem > r.MaxMemory {
			add(fn.Name, "max_memory", "memory = %d MiB per container is over max_memory = %d", mem, r.MaxMemory)
		}
		if gpus > r.MaxGPUs {
			add(fn.Name, "max_gpus", "%d GPUs per container is over max_gpus = %d", gpus, r.MaxGPUs)
		}
		if fn.MinContainers != nil && *fn.MinContainers > r.MaxContainers {
			add(fn.Name, "max_containers", "min_containers = %d is over the policy's max_containers = %d", *fn.MinContainers, r.MaxContainers)
		}
		if fn.MaxContainers != nil && *fn.MaxContainers > r.MaxContainers {
			add(fn.Name, "max_containers", "max_containers = %d is over the policy's max_containers = %d", *fn.MaxContainers, r.MaxContainers)
		}
	}
	if n := Containers(app); n > r.MaxAppContainers {
		add("", "max_app_containers", "the app's functions ask for %d containers in all, over max_app_containers = %d", n, r.MaxAppContainers)
	}
	return r, out
}

// Containers is what an app counts against max_app_containers: each
// long-running function's max_containers (its min_containers, at least
// 1, when that is more or max_containers is unset), and one for each
// scheduled function (Nomad runs one run at a time). A warm callable
// function counts its most workers (max_containers, else min_containers,
// at least 1); an isolated one counts
// one, though each call runs a container of its own: its calls are not
// bounded by the policy.
func Containers(app *spec.App) int {
	n := 0
	for _, fn := range app.Functions {
		if fn.Warm() {
			_, most, _, _ := fn.Workers()
			n += most
			continue
		}
		if !fn.LongRunning() {
			n++
			continue
		}
		c := fn.Count()
		if fn.MaxContainers != nil && *fn.MaxContainers > c {
			c = *fn.MaxContainers
		}
		n += c
	}
	return n
}

// resources are a function's CPU (MHz), memory (MiB) and GPUs per
// container, with the renderer's defaults.
func resources(fn *spec.Function) (cpu, mem, gpus int) {
	cpu, mem = jobs.DefaultCPU, jobs.DefaultMemory
	if r := fn.Resources; r != nil {
		if r.CPU != nil {
			cpu = *r.CPU
		}
		if r.Memory != nil {
			mem = *r.Memory
		}
		if r.GPURequest != nil {
			gpus = r.GPURequest.Count
		}
	}
	return cpu, mem, gpus
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// sourceOf names a block in errors by its file's base name and line: the
// message reaches tenants, who need the line, not the server's paths.
func sourceOf(rng hcl.Range) string {
	return fmt.Sprintf("%s:%d", filepath.Base(rng.Filename), rng.Start.Line)
}
