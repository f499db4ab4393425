package policy

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// file is a policy file as written:
//
//	workspace "dev" {
//	  drivers            = ["raw_exec", "exec", "docker"]
//	  max_cpu            = 4000   # MHz per container
//	  max_memory         = 8192   # MiB per container
//	  max_gpus           = 2      # per container
//	  max_containers     = 20     # a function's min_containers and max_containers
//	  max_app_containers = 40     # all of an app's functions together
//	}
//	workspace "*" { ... }         # every workspace without a block of its own
//
// An attribute a block leaves unset takes the value of the file's
// workspace "*" block, and failing that Builtin's. A workspace with no
// block, in a file with no workspace "*" block, may run nothing.
type file struct {
	Workspaces []*block `hcl:"workspace,block"`
}

type block struct {
	Name             string    `hcl:"name,label"`
	NameRange        hcl.Range `hcl:"name,label_range"`
	Drivers          *[]string `hcl:"drivers,optional"`
	DriversRange     hcl.Range `hcl:"drivers,attr_value_range"`
	MaxCPU           *int      `hcl:"max_cpu,optional"`
	MaxCPURange      hcl.Range `hcl:"max_cpu,attr_value_range"`
	MaxMemory        *int      `hcl:"max_memory,optional"`
	MaxMemoryRange   hcl.Range `hcl:"max_memory,attr_value_range"`
	MaxGPUs          *int      `hcl:"max_gpus,optional"`
	MaxGPUsRange     hcl.Range `hcl:"max_gpus,attr_value_range"`
	MaxContainers    *int      `hcl:"max_containers,optional"`
	MaxContRange     hcl.Range `hcl:"max_containers,attr_value_range"`
	MaxAppContainers *int      `hcl:"max_app_containers,optional"`
	MaxAppContRange  hcl.Range `hcl:"max_app_containers,attr_value_range"`
	DefRange         hcl.Range `hcl:",def_range"`
}

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read the policy file", Detail: err.Error()}}
	}
	return Parse(src, path)
}

// Parse loads a policy file, returning every mistake in it as a
// diagnostic with its range; the policy is nil when there are errors.
func Parse(src []byte, filename string) (*Policy, hcl.Diagnostics) {
	f, diags := hclparse.NewParser().ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, diags
	}
	var raw file
	if ds := gohcl.DecodeBody(f.Body, nil, &raw); ds.HasErrors() {
		return nil, append(diags, ds...)
	}
	seen := map[string]*block{}
	for _, b := range raw.Workspaces {
		diags = append(diags, validate(b)...)
		if first := seen[b.Name]; first != nil {
			diags = append(diags, diagDuplicate(b.NameRange, b.Name, first.DefRange))
			continue
		}
		seen[b.Name] = b
	}
	if len(raw.Workspaces) == 0 {
		diags = append(diags, diagEmpty(filename))
	}
	if diags.HasErrors() {
		return nil, diags
	}
	// Defaults once: Builtin, under the file's "*", under each block.
	base := Builtin
	if star := seen[Wildcard]; star != nil {
		base = merge(Builtin, star)
	}
	p := &Policy{Source: filename, rules: map[string]*Rules{}}
	for name, b := range seen {
		r := merge(base, b)
		p.rules[name] = &r
	}
	return p, diags
}

// merge is b's rules with what it leaves unset taken from under.
func merge(under Rules, b *block) Rules {
	r := under
	r.Workspace, r.source = b.Name, sourceOf(b.DefRange)
	r.Drivers = slices.Clone(under.Drivers)
	if b.Drivers != nil {
		r.Drivers = slices.Clone(*b.Drivers)
	}
	for _, f := range []struct {
		dst *int
		src *int
	}{{&r.MaxCPU, b.MaxCPU}, {&r.MaxMemory, b.MaxMemory}, {&r.MaxGPUs, b.MaxGPUs},
		{&r.MaxContainers, b.MaxContainers}, {&r.MaxAppContainers, b.MaxAppContainers}} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	return r
}

func validate(b *block) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if b.Name != Wildcard && !spec.ValidName(b.Name) {
		diags = append(diags, diagBadWorkspace(b.NameRange, b.Name))
	}
	if b.Drivers != nil {
		for _, d := range *b.Drivers {
			if !slices.Contains(Drivers, d) {
				diags = append(diags, diagBadDriver(b.DriversRange, d))
			}
		}
	}
	for _, l := range []struct {
		name string
		v    *int
		rng  hcl.Range
	}{{"max_cpu", b.MaxCPU, b.MaxCPURange}, {"max_memory", b.MaxMemory, b.MaxMemoryRange}, {"max_gpus", b.MaxGPUs, b.MaxGPUsRange},
		{"max_containers", b.MaxContainers, b.MaxContRange}, {"max_app_containers", b.MaxAppContainers, b.MaxAppContRange}} {
		if l.v != nil && *l.v < 0 {
			diags = append(diags, diagNegative(l.rng, l.name, *l.v))
		}
	}
	return diags
}

// One constructor per kind of mistake.

func diagError(rng hcl.Range, summary, detail string) *hcl.Diagnostic {
	r := rng
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: &r}
}

func diagBadWorkspace(rng hcl.Range, name string) *hcl.Diagnostic {
	return diagError(rng, "Invalid workspace name",
		fmt.Sprintf("%q cannot name a workspace. Use a workspace name as app specs do (lower-case letters, digits and single hyphens), or \"*\" for every workspace without a block of its own.", name))
}

func diagBadDriver(rng hcl.Range, d string) *hcl.Diagnostic {
	return diagError(rng, "Unknown driver",
		fmt.Sprintf("%q is not a driver caravan runs. Use any of %s.", d, quoteList(Drivers)))
}

func diagNegative(rng hcl.Range, attr string, v int) *hcl.Diagnostic {
	return diagError(rng, "Negative limit",
		fmt.Sprintf("%s = %d: a limit is 0 (nothing allowed) or more.", attr, v))
}

func diagDuplicate(rng hcl.Range, name string, first hcl.Range) *hcl.Diagnostic {
	return diagError(rng, "Duplicate workspace block",
		fmt.Sprintf("Workspace %q already has a block at %s. Merge the two.", name, first))
}

func diagEmpty(filename string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Empty policy",
		Detail: strings.TrimSpace(fmt.Sprintf(`%s has no workspace block, so it would let no workspace run anything. Add one, for example:

  workspace "*" {
    drivers = ["exec", "docker"]
  }`, filename)),
		Subject: &hcl.Range{Filename: filename, Start: hcl.Pos{Line: 1, Column: 1}, End: hcl.Pos{Line: 1, Column: 1}}}
}
