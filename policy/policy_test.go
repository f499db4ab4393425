package policy

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/spec"
)

// app loads an app spec of workspace ws whose one function, a worker, has
// the body fn.
func app(t *testing.T, ws, fn string) *spec.App {
	t.Helper()
	src := "app \"shop\" {\n  workspace = \"" + ws + "\"\n  function \"web\" {\n" + fn + "\n  }\n}\n"
	a, diags := spec.Parse([]byte(src), "app.hcl")
	if diags.HasErrors() {
		t.Fatalf("spec: %v", diags)
	}
	return a
}

func mustParse(t *testing.T, src string) *Policy {
	t.Helper()
	p, diags := Parse([]byte(src), "policy.hcl")
	if diags.HasErrors() {
		t.Fatalf("policy: %v", diags)
	}
	return p
}

const testPolicy = `
workspace "dev" {
  drivers            = ["raw_exec", "exec", "docker"]
  max_cpu            = 4000
  max_memory         = 8192
  max_gpus           = 2
  max_containers     = 20
  max_app_containers = 30
}

workspace "*" {
  max_memory = 1024
  max_gpus   = 0
}

workspace "nodocker" {
  drivers = ["exec"]
}
`

func TestCheck(t *testing.T) {
	file := mustParse(t, testPolicy)
	strict := mustParse(t, `workspace "dev" { drivers = ["raw_exec"] }`)
	for _, c := range []struct {
		name   string
		p      *Policy
		ws, fn string
		// want is the limits broken, in order; empty: allowed.
		want []string
		// rules is the block that applies ("": none).
		rules string
	}{
		{"raw_exec allowed", file, "dev", `command = "node"`, nil, "dev"},
		{"exec allowed", file, "dev", `driver = "exec"` + "\n" + `command = "node"`, nil, "dev"},
		{"docker allowed", file, "dev", `image = "nginx"`, nil, "dev"},
		{"raw_exec by default under *", file, "other", `command = "node"`, []string{"drivers"}, "*"},
		{"exec under *", file, "other", `driver = "exec"` + "\n" + `command = "node"`, nil, "*"},
		{"docker under *", file, "other", `image = "nginx"`, nil, "*"},
		{"docker not in the block's drivers", file, "nodocker", `image = "nginx"`, []string{"drivers"}, "nodocker"},
		{"raw_exec nowhere in the built-in policy", Default(), "dev", `command = "node"`, []string{"drivers"}, "*"},
		{"docker in the built-in policy", Default(), "dev", `image = "nginx"`, nil, "*"},
		{"a workspace no block covers", strict, "other", `command = "node"`, []string{"workspace"}, ""},

		{"cpu at the limit", file, "dev", `command = "x"` + "\n" + `resources { cpu = 4000 }`, nil, "dev"},
		{"cpu over", file, "dev", `command = "x"` + "\n" + `resources { cpu = 4001 }`, []string{"max_cpu"}, "dev"},
		{"cpu over the built-in", Default(), "dev", `image = "x"` + "\n" + `resources { cpu = 16001 }`, []string{"max_cpu"}, "*"},
		{"memory at the limit", file, "dev", `command = "x"` + "\n" + `resources { memory = 8192 }`, nil, "dev"},
		{"memory over", file, "dev", `command = "x"` + "\n" + `resources { memory = 8193 }`, []string{"max_memory"}, "dev"},
		{"memory from * in a block that leaves it unset", file, "nodocker", `driver = "exec"` + "\n" + `command = "x"` + "\n" + `resources { memory = 2048 }`, []string{"max_memory"}, "nodocker"},
		{"default memory (128) under *", file, "other", `image = "x"`, nil, "*"},
		{"gpus at the limit", file, "dev", `command = "x"` + "\n" + `resources { gpu = "H100:2" }`, nil, "dev"},
		{"gpus over", file, "dev", `command = "x"` + "\n" + `resources { gpu = "H100:3" }`, []string{"max_gpus"}, "dev"},
		{"one gpu where * allows none", file, "other", `image = "x"` + "\n" + `resources { gpu = "any" }`, []string{"max_gpus"}, "*"},
		{"min_containers over", file, "dev", `command = "x"` + "\n" + `min_containers = 21`, []string{"max_containers"}, "dev"},
		{"max_containers over", file, "dev", `command = "x"` + "\n" + `max_containers = 21`, []string{"max_containers"}, "dev"},
		{"max_containers at the limit", file, "dev", `command = "x"` + "\n" + `min_containers = 20` + "\n" + `max_containers = 20`, nil, "dev"},
		{"everything at once", file, "other", `command = "x"` + "\n" + `resources {` + "\n" + `cpu = 20000` + "\n" + `memory = 2000` + "\n" + `}`,
			[]string{"drivers", "max_cpu", "max_memory"}, "*"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, vs := c.p.Check(app(t, c.ws, c.fn))
			var got []string
			for _, v := range vs {
				got = append(got, v.Limit)
				if v.Limit != "workspace" && v.Limit != "max_app_containers" && v.Function != "web" {
					t.Errorf("violation %q names function %q, want web", v, v.Function)
				}
				if !strings.Contains(v.String(), v.Limit) && v.Limit != "workspace" {
					t.Errorf("violation %q does not name its limit %s", v, v.Limit)
				}
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("violations %v (%v), want %v", got, vs, c.want)
			}
			switch {
			case c.rules == "" && r != nil:
				t.Errorf("rules %v, want none", r)
			case c.rules != "" && (r == nil || r.Workspace != c.rules):
				t.Errorf("rules %v, want workspace %q", r, c.rules)
			}
		})
	}
}

func TestCheckCountsTheAppsContainers(t *testing.T) {
	p := mustParse(t, `workspace "*" {
  drivers            = ["raw_exec"]
  max_app_containers = 6
}`)
	src := `app "shop" {
  workspace = "dev"
  function "web" {
    command        = "x"
    min_containers = 2
    max_containers = 4
    web {}
  }
  function "worker" {
    command = "x"
  }
  function "nightly" {
    command  = "x"
    schedule = "0 3 * * *"
  }
  function "sum" {
    command  = "x"
    callable = true
    isolated = true
  }
  function "warm" {
    command        = "x"
    callable       = true
    min_containers = 3
  }
}
`
	a, diags := spec.Parse([]byte(src), "app.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if n := Containers(a); n != 10 {
		t.Fatalf("Containers = %d, want 10 (4 web, 1 worker, 1 scheduled, 1 isolated callable, 3 warm workers)", n)
	}
	_, vs := p.Check(a)
	if len(vs) != 1 || vs[0].Limit != "max_app_containers" || vs[0].Function != "" ||
		!strings.Contains(vs[0].Why, "10 containers") || !strings.Contains(vs[0].Why, "max_app_containers = 6") {
		t.Fatalf("violations %v, want the app's 10 containers over 6", vs)
	}
}

func TestRulesNameTheirSource(t *testing.T) {
	p := mustParse(t, testPolicy)
	if got := p.For("dev").String(); got != `workspace "dev" (policy.hcl:2)` {
		t.Errorf("dev: %s", got)
	}
	if got := p.For("nobody").String(); got != `workspace "*" (policy.hcl:11)` {
		t.Errorf("*: %s", got)
	}
	if got := Default().For("dev").String(); got != `workspace "*" (built-in)` {
		t.Errorf("built-in: %s", got)
	}
}

func TestParseDiagnostics(t *testing.T) {
	for _, c := range []struct {
		name, src string
		// want is "line:summary" of each error.
		want []string
	}{
		{"syntax", "workspace \"dev\" {\n  max_cpu = = 3\n}\n", []string{"2:Invalid expression"}},
		{"unknown attribute", "workspace \"dev\" {\n  max_disk = 3\n}\n", []string{"2:Unsupported argument"}},
		{"wrong type", "workspace \"dev\" {\n  max_cpu = \"lots\"\n}\n", []string{"2:Unsuitable value type"}},
		{"unknown driver", "workspace \"dev\" {\n  drivers = [\"exec\", \"qemu\"]\n}\n", []string{"2:Unknown driver"}},
		{"negative", "workspace \"*\" {\n  max_gpus = -1\n}\n", []string{"2:Negative limit"}},
		{"bad name", "workspace \"Dev Team\" {\n}\n", []string{"1:Invalid workspace name"}},
		{"duplicate", "workspace \"dev\" {\n}\nworkspace \"dev\" {\n}\n", []string{"3:Duplicate workspace block"}},
		{"empty", "# nothing\n", []string{"1:Empty policy"}},
		{"several at once", "workspace \"dev\" {\n  drivers = [\"lxc\"]\n}\nworkspace \"x\" {\n  max_cpu = -5\n}\n",
			[]string{"2:Unknown driver", "5:Negative limit"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, diags := Parse([]byte(c.src), "policy.hcl")
			if p != nil {
				t.Errorf("a policy with errors was returned")
			}
			var got []string
			for _, d := range diags {
				if d.Subject == nil || d.Subject.Filename != "policy.hcl" {
					t.Errorf("%s: no file:line (%v)", d.Summary, d.Subject)
					continue
				}
				got = append(got, strconv.Itoa(d.Subject.Start.Line)+":"+d.Summary)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("diagnostics %v, want %v", got, c.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	if p, diags := Load("/nonexistent/policy.hcl"); p != nil || !diags.HasErrors() {
		t.Fatalf("Load of a missing file: %v, %v", p, diags)
	}
}

func TestDefaultsApplyOnce(t *testing.T) {
	p := mustParse(t, testPolicy)
	nd := p.For("nodocker")
	want := Rules{Workspace: "nodocker", Drivers: []string{"exec"}, MaxCPU: Builtin.MaxCPU, MaxMemory: 1024, MaxGPUs: 0,
		MaxContainers: Builtin.MaxContainers, MaxAppContainers: Builtin.MaxAppContainers, source: "policy.hcl:16"}
	if !slices.Equal(nd.Drivers, want.Drivers) || nd.MaxCPU != want.MaxCPU || nd.MaxMemory != want.MaxMemory || nd.MaxGPUs != 0 ||
		nd.MaxContainers != want.MaxContainers || nd.MaxAppContainers != want.MaxAppContainers || nd.source != want.source {
		t.Errorf("nodocker = %+v, want %+v", *nd, want)
	}
	// The built-in policy's drivers are its own copy.
	d := Default()
	d.For("x").Drivers[0] = "raw_exec"
	if Builtin.Drivers[0] == "raw_exec" {
		t.Error("Default shares Builtin's drivers")
	}
}
