package spec_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/hcl/v2"
)

// The specs below are indented with spaces, never tabs, so that the columns
// in the expectations can be counted by eye: HCL counts a tab as one column.

func TestLoadExamples(t *testing.T) {
	paths, err := filepath.Glob("../examples/*.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no examples found")
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			app, src, diags := spec.LoadFile(path)
			if len(diags) > 0 {
				t.Fatalf("LoadFile(%s) reported diagnostics:\n%s", path, formatDiags(diags))
			}
			if app == nil || len(src) == 0 {
				t.Fatalf("LoadFile(%s) = app %v, %d bytes of source", path, app, len(src))
			}
		})
	}
}

func TestLoadFileMissing(t *testing.T) {
	app, _, diags := spec.LoadFile(filepath.Join(t.TempDir(), "nope.hcl"))
	if app != nil || !diags.HasErrors() || diags[0].Summary != "Cannot read spec file" {
		t.Fatalf("LoadFile(missing) = %v, %s", app, formatDiags(diags))
	}
}

func TestParseGood(t *testing.T) {
	tests := []struct {
		name string
		src  string
	}{
		{"minimal", `
app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
  }
}
`},
		{"everything", `
app "store" {
  workspace   = "shop"
  environment = "staging"
  deploy {
    strategy = "recreate"
  }
  function "api" {
    driver  = "exec"
    command = "/bin/api"
    args    = ["--port", "${port}"]
    env = {
      LOG_LEVEL = "debug"
      _private  = "x"
    }
    min_containers = 2
    max_containers = 5
    resources {
      cpu    = 500
      memory = 256
      gpu    = "any"
    }
    web {
      label               = "api"
      custom_domains      = ["api.example.com", "*.api.example.com", "Shop.Example.com."]
      requires_proxy_auth = true
      health_path         = "/healthz"
    }
  }
  function "site" {
    image = "nginx:1.27"
    web {
      port = 80
    }
  }
}
`},
		{"files blocks", `
app "files" {
  workspace = "dev"
  files {
    exclude = ["tests/", "*.log"]
  }
  function "web" {
    command = "node"
    args    = ["${spec_dir}/server.js"]
    files {
      include = ["server.js", "lib/**"]
    }
  }
  function "img" {
    image = "nginx:1.27"
    files {
      include = ["static"]
    }
  }
}
`},
		{"health_path with a query and escapes", webSpec(`health_path = "/health%20z/~a-b_c.d?full=1&x=%2F"`)},
		// Canary and blue-green splits of an autoscaled function go
		// through caravan's proxy: scaling to zero is no mistake.
		{"scale to zero with a canary rollout", strings.Replace(webScaleSpec("min_containers = 0"), `workspace = "dev"`, "workspace = \"dev\"\n  deploy {\n    strategy = \"canary\"\n  }", 1)},
		{"scale to zero with a blue-green rollout", strings.Replace(webScaleSpec("min_containers = 0\n    max_containers = 3"), `workspace = "dev"`, "workspace = \"dev\"\n  deploy {\n    strategy = \"blue-green\"\n  }", 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, diags := spec.Parse([]byte(tt.src), "test.hcl")
			if len(diags) > 0 {
				t.Fatalf("unexpected diagnostics:\n%s", formatDiags(diags))
			}
			if app == nil {
				t.Fatal("no app")
			}
		})
	}
}

// badCase is a spec with one mistake. The diagnostic with summary must start
// at line:col; others lists the summaries of any further diagnostics the
// mistake is expected to cause, and there must be no more than those.
type badCase struct {
	name    string
	src     string
	summary string
	line    int
	col     int
	detail  string // a substring of the diagnostic's Detail, when set
	warning bool   // the diagnostic is a warning, not an error
	others  []string
}

// gpuSpec puts expr as the gpu attribute; its value starts at 6:13.
func gpuSpec(expr string) string {
	return `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    resources {
      gpu = ` + expr + `
    }
  }
}
`
}

// nameSpec names the app, workspace and function; the app name starts at
// 1:5, the workspace at 2:15 and the function name at 3:12.
func nameSpec(app, workspace, function string) string {
	return `app "` + app + `" {
  workspace = "` + workspace + `"
  function "` + function + `" {
    command = "node"
  }
}
`
}

// filesSpec puts lines in a function's files block, at 5:7.
func filesSpec(lines string) string {
	return `app "hello" {
  workspace = "dev"
  function "web" {
    files {
      ` + lines + `
    }
    command = "node"
  }
}
`
}

var badCases = []badCase{
	{name: "files include with !", src: filesSpec(`include = ["!x"]`), summary: "Invalid files pattern", line: 5, col: 17, detail: "include takes no"},
	{name: "files unclosed class", src: filesSpec(`exclude = ["[ab"]`), summary: "Invalid files pattern", line: 5, col: 17, detail: "unclosed"},
	{name: "files out of the directory", src: filesSpec(`include = ["../secrets"]`), summary: "Invalid files pattern", line: 5, col: 17, detail: "under the spec's directory"},
	{name: "files empty pattern", src: filesSpec(`exclude = [""]`), summary: "Invalid files pattern", line: 5, col: 17},
	{name: "files unknown attribute", src: filesSpec(`ignore = ["x"]`), summary: "Unsupported argument", line: 5, col: 7},
	{name: "syntax error", src: `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node",
  }
}
`, summary: "Unexpected comma after argument", line: 4, col: 21},
	{name: "unknown attribute", src: `app "hello" {
  workspace = "dev"
  region    = "eu"
  function "web" {
    command = "node"
  }
}
`, summary: "Unsupported argument", line: 3, col: 3},
	{name: "unknown top-level attribute", src: `workspace = "dev"
app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
  }
}
`, summary: "Unsupported argument", line: 1, col: 1},
	{name: "unknown block", src: `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    network {
    }
  }
}
`, summary: "Unsupported block type", line: 5, col: 5},
	{name: "wrong type", src: `app "hello" {
  workspace = "dev"
  function "web" {
    command        = "node"
    min_containers = "two"
  }
}
`, summary: "Unsuitable value type", line: 5, col: 23}, // gohcl points inside the quotes
	{name: "missing app", src: `# An empty spec.
`, summary: "Missing app block", line: 1, col: 1},
	{name: "two apps", src: `app "one" {
  workspace = "dev"
  function "web" {
    command = "node"
  }
}

app "two" {
  workspace = "dev"
  function "web" {
    command = "node"
  }
}
`, summary: "More than one app block", line: 8, col: 1},
	{name: "missing workspace", src: `app "hello" {
  function "web" {
    command = "node"
  }
}
`, summary: "Missing workspace", line: 1, col: 1},
	{name: "no functions", src: `app "hello" {
  workspace = "dev"
}
`, summary: "App has no functions", line: 1, col: 1},

	{name: "app name upper case", src: nameSpec("Hello", "dev", "web"), summary: "Invalid app name", line: 1, col: 5, detail: `for example "hello"`},
	{name: "app name underscore", src: nameSpec("hello_world", "dev", "web"), summary: "Invalid app name", line: 1, col: 5, detail: `for example "hello-world"`},
	{name: "app name double hyphen", src: nameSpec("hello--world", "dev", "web"), summary: "Invalid app name", line: 1, col: 5},
	{name: "app name trailing hyphen", src: nameSpec("hello-", "dev", "web"), summary: "Invalid app name", line: 1, col: 5},
	{name: "app name starts with digit", src: nameSpec("1hello", "dev", "web"), summary: "Invalid app name", line: 1, col: 5},
	{name: "app name too long", src: nameSpec(strings.Repeat("a", 64), "dev", "web"), summary: "Invalid app name", line: 1, col: 5},
	{name: "function name upper case", src: nameSpec("hello", "dev", "Web"), summary: "Invalid function name", line: 3, col: 12},
	{name: "function name underscore", src: nameSpec("hello", "dev", "my_web"), summary: "Invalid function name", line: 3, col: 12},
	{name: "function name double hyphen", src: nameSpec("hello", "dev", "my--web"), summary: "Invalid function name", line: 3, col: 12},
	{name: "function name too long", src: nameSpec("hello", "dev", strings.Repeat("f", 64)), summary: "Invalid function name", line: 3, col: 12},
	{name: "workspace upper case", src: nameSpec("hello", "Dev", "web"), summary: "Invalid workspace name", line: 2, col: 15},
	{name: "workspace underscore", src: nameSpec("hello", "my_team", "web"), summary: "Invalid workspace name", line: 2, col: 15},
	{name: "workspace double hyphen", src: nameSpec("hello", "my--team", "web"), summary: "Invalid workspace name", line: 2, col: 15},
	{name: "workspace too long", src: nameSpec("hello", strings.Repeat("w", 64), "web"), summary: "Invalid workspace name", line: 2, col: 15},
	{name: "environment upper case", src: `app "hello" {
  workspace   = "dev"
  environment = "Staging"
  function "web" {
    command = "node"
  }
}
`, summary: "Invalid environment name", line: 3, col: 17},

	{name: "duplicate function", src: `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
  }
  function "web" {
    command = "deno"
  }
}
`, summary: "Duplicate function", line: 6, col: 12, detail: "test.hcl:3,12-17"},

	{name: "unknown strategy", src: strategySpec("yolo"), summary: "Unknown deploy strategy", line: 4, col: 16},
	{name: "canaries without canary", src: strategySpec("rolling\"\n    canaries = \"2"), summary: "Canary setting without a canary strategy", line: 5, col: 16},
	{name: "traffic without canary", src: strategySpec("blue-green\"\n    traffic = \"20"), summary: "Canary setting without a canary strategy", line: 5, col: 15},
	{name: "promote_after without canary", src: strategySpec("recreate\"\n    promote_after = \"5m"), summary: "Canary setting without a canary strategy", line: 5, col: 21},
	{name: "zero canaries", src: strategySpec("canary\"\n    canaries = \"0"), summary: "Invalid canaries", line: 5, col: 16},
	{name: "traffic 100", src: strategySpec("canary\"\n    traffic = \"100"), summary: "Invalid traffic", line: 5, col: 15},
	{name: "traffic 0", src: strategySpec("canary\"\n    traffic = \"0"), summary: "Invalid traffic", line: 5, col: 15},
	{name: "promote_after not a duration", src: strategySpec("canary\"\n    promote_after = \"soon"), summary: "Invalid promote_after", line: 5, col: 21},

	{name: "unknown driver", src: `app "hello" {
  workspace = "dev"
  function "web" {
    driver  = "java"
    command = "node"
  }
}
`, summary: "Unknown driver", line: 4, col: 15},
	{name: "nothing to run", src: `app "hello" {
  workspace = "dev"
  function "web" {
  }
}
`, summary: "Function has nothing to run", line: 3, col: 3},
	{name: "command and image", src: `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    image   = "node:22"
  }
}
`, summary: "Both command and image are set", line: 5, col: 15},
	{name: "docker without image", src: `app "hello" {
  workspace = "dev"
  function "web" {
    driver  = "docker"
    command = "node"
  }
}
`, summary: "The docker driver needs image", line: 4, col: 15},
	{name: "raw_exec without command", src: `app "hello" {
  workspace = "dev"
  function "web" {
    driver = "raw_exec"
    image  = "node:22"
  }
}
`, summary: "The raw_exec driver needs command", line: 4, col: 14},
	{name: "docker web without port", src: `app "hello" {
  workspace = "dev"
  function "web" {
    image = "nginx"
    web {
    }
  }
}
`, summary: "Missing web port", line: 5, col: 5},

	{name: "cpu too low", src: resourcesSpec("cpu = 0"), summary: "Invalid cpu", line: 6, col: 13},
	{name: "cpu too high", src: resourcesSpec("cpu = 1000001"), summary: "Invalid cpu", line: 6, col: 13},
	{name: "memory too low", src: resourcesSpec("memory = 5"), summary: "Invalid memory", line: 6, col: 16},
	{name: "port too high", src: `app "hello" {
  workspace = "dev"
  function "web" {
    image = "nginx"
    web {
      port = 70000
    }
  }
}
`, summary: "Invalid port", line: 6, col: 14},
	{name: "port zero", src: `app "hello" {
  workspace = "dev"
  function "web" {
    image = "nginx"
    web {
      port = 0
    }
  }
}
`, summary: "Invalid port", line: 6, col: 14},
	{name: "fixed port with raw_exec", src: `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    web {
      port = 8080
    }
  }
}
`, summary: "Fixed port with raw_exec", line: 6, col: 14, warning: true},
	{name: "min_containers too high", src: scaleSpec("min_containers = 1001"), summary: "Invalid min_containers", line: 5, col: 22},
	{name: "min_containers negative", src: scaleSpec("min_containers = -1"), summary: "Invalid min_containers", line: 5, col: 22},
	{name: "max_containers zero", src: scaleSpec("max_containers = 0"), summary: "Invalid max_containers", line: 5, col: 22},
	{name: "max below min", src: scaleSpec("min_containers = 3\n    max_containers = 2"), summary: "max_containers below min_containers", line: 6, col: 22},
	{name: "max below default min", src: scaleSpec("min_containers = 0\n    max_containers = 0"), summary: "Invalid max_containers", line: 6, col: 22, others: []string{"Scale to zero not yet supported"}},
	{name: "scale to zero", src: scaleSpec("min_containers = 0"), summary: "Scale to zero not yet supported", line: 5, col: 22, warning: true},

	{name: "gpu count zero", src: gpuSpec(`"H100:0"`), summary: "Invalid gpu", line: 6, col: 13, detail: `count after ':' is a whole number from 1 to 8 (got "H100:0")`},
	{name: "gpu count nine", src: gpuSpec(`"H100:9"`), summary: "Invalid gpu", line: 6, col: 13, detail: `(got "H100:9")`},
	{name: "gpu count not a number", src: gpuSpec(`"H100:x"`), summary: "Invalid gpu", line: 6, col: 13, detail: `(got "H100:x")`},
	{name: "gpu empty string", src: gpuSpec(`""`), summary: "Invalid gpu", line: 6, col: 13, detail: `letters, digits and hyphens (got "")`},
	{name: "gpu bad model", src: gpuSpec(`"H 100"`), summary: "Invalid gpu", line: 6, col: 13, detail: `letters, digits and hyphens (got "H 100")`},
	{name: "gpu any in a list", src: gpuSpec(`["H100", "any"]`), summary: "Invalid gpu", line: 6, col: 13, detail: `stands alone (got "any")`},
	{name: "gpu mixed counts", src: gpuSpec(`["H100:2", "A100"]`), summary: "Invalid gpu", line: 6, col: 13, detail: `same count (got "A100")`},
	{name: "gpu number", src: gpuSpec(`2`), summary: "Invalid gpu", line: 6, col: 13, detail: "(got a number)"},
	{name: "gpu empty list", src: gpuSpec(`[]`), summary: "Invalid gpu", line: 6, col: 13, detail: "(got an empty list)"},
	{name: "gpu list with a number", src: gpuSpec(`["H100", 2]`), summary: "Invalid gpu", line: 6, col: 13, detail: "(got a list with a non-string entry)"},
	{name: "gpu unknown variable", src: gpuSpec(`nvidia`), summary: "Unknown variable", line: 6, col: 13},

	{name: "web on scheduled function", src: `app "hello" {
  workspace = "dev"
  function "nightly" {
    command  = "backup"
    schedule = "0 3 * * *"
    web {
    }
  }
  function "web" {
    command = "server"
  }
}
`, summary: "Web block on a scheduled function", line: 6, col: 5},
	{name: "schedule and period", src: scheduleSpec("schedule = \"0 3 * * *\"\n    period   = \"1h\""), summary: "Both schedule and period are set", line: 6, col: 16},
	{name: "cron with three fields", src: scheduleSpec(`schedule = "* * *"`), summary: "Invalid schedule", line: 5, col: 16, detail: "it has 3 fields, not 5"},
	{name: "cron minute out of range", src: scheduleSpec(`schedule = "61 * * * *"`), summary: "Invalid schedule", line: 5, col: 16},
	{name: "cron bad descriptor", src: scheduleSpec(`schedule = "@sometimes"`), summary: "Invalid schedule", line: 5, col: 16},
	{name: "period too short", src: scheduleSpec(`period   = "30s"`), summary: "Invalid period", line: 5, col: 16},
	{name: "period not a duration", src: scheduleSpec(`period   = "abc"`), summary: "Invalid period", line: 5, col: 16},
	{name: "period that divides no hour or day", src: scheduleSpec(`period   = "7m"`), summary: "Period does not divide an hour or a day", line: 5, col: 16},
	{name: "period of 5h", src: scheduleSpec(`period   = "5h"`), summary: "Period does not divide an hour or a day", line: 5, col: 16},
	{name: "only scheduled functions", src: `app "hello" {
  workspace = "dev"
  function "nightly" {
    command  = "backup"
    schedule = "0 3 * * *"
  }
}
`, summary: "App has only scheduled or callable functions", line: 1, col: 1},

	{name: "env name starts with digit", src: envSpec(`"1X" = "y"`), summary: "Invalid environment variable name", line: 5, col: 11, detail: `"1X"`},
	{name: "env name with hyphen", src: envSpec(`"MY-VAR" = "y"`), summary: "Invalid environment variable name", line: 5, col: 11, detail: `"MY-VAR"`},
	{name: "PORT in env", src: envSpec(`PORT = "80"`), summary: "Reserved environment variable", line: 5, col: 11},

	{name: "relative health_path", src: webSpec(`health_path = "healthz"`), summary: "Invalid health_path", line: 6, col: 21},
	{name: "health_path with a scheme", src: webSpec(`health_path = "http://evil.example/healthz"`), summary: "Invalid health_path", line: 6, col: 21, detail: "does not start with /"},
	{name: "health_path naming a host", src: webSpec(`health_path = "//evil.example/healthz"`), summary: "Invalid health_path", line: 6, col: 21, detail: "names a host"},
	{name: "health_path with a backslash", src: webSpec(`health_path = "/\\evil.example/"`), summary: "Invalid health_path", line: 6, col: 21, detail: "backslash"},
	{name: "health_path with a fragment", src: webSpec(`health_path = "/healthz#x"`), summary: "Invalid health_path", line: 6, col: 21},
	{name: "health_path with a space", src: webSpec(`health_path = "/health z"`), summary: "Invalid health_path", line: 6, col: 21, detail: "space"},
	{name: "health_path with a newline", src: webSpec(`health_path = "/healthz\r\nHost: evil"`), summary: "Invalid health_path", line: 6, col: 21, detail: "control character"},
	{name: "bad label", src: webSpec(`label = "API"`), summary: "Invalid label name", line: 6, col: 15},
	{name: "custom domain with one label", src: webSpec(`custom_domains = ["localhost"]`), summary: "Invalid custom domain", line: 6, col: 24},
	{name: "custom domain wildcard tld", src: webSpec(`custom_domains = ["*.com"]`), summary: "Invalid custom domain", line: 6, col: 24},
	{name: "custom domain underscore", src: webSpec(`custom_domains = ["ok.example.com", "my_app.example.com"]`), summary: "Invalid custom domain", line: 6, col: 24, detail: `"my_app.example.com"`},
	{name: "custom domain leading hyphen", src: webSpec(`custom_domains = ["-app.example.com"]`), summary: "Invalid custom domain", line: 6, col: 24},
	{name: "custom domain inner wildcard", src: webSpec(`custom_domains = ["a.*.example.com"]`), summary: "Invalid custom domain", line: 6, col: 24},
	{name: "same custom domain twice", src: twoWebSpec(`custom_domains = ["www.example.com"]`, `custom_domains = ["WWW.example.com"]`), summary: "Hostname claimed twice", line: 12, col: 24, detail: `"www.example.com" is already routed to function "web"`},
	{name: "same custom domain with trailing dot", src: twoWebSpec(`custom_domains = ["www.example.com"]`, `custom_domains = ["www.example.com."]`), summary: "Hostname claimed twice", line: 12, col: 24},
	{name: "same label twice", src: twoWebSpec(`label = "site"`, `label = "site"`), summary: "Hostname claimed twice", line: 12, col: 15, detail: `"site" is already routed to function "web"`},
	{name: "label equal to another function's name", src: twoWebSpec(`health_path = "/"`, `label = "hello-web"`), summary: "Hostname claimed twice", line: 12, col: 15, detail: `"hello-web" is already routed to function "web"`},
	{name: "name equal to an earlier label", src: twoWebSpec(`label = "hello-www"`, `health_path = "/"`), summary: "Hostname claimed twice", line: 9, col: 12, detail: `"hello-www" is already routed to function "web"`},
}

func strategySpec(strategy string) string {
	return `app "hello" {
  workspace = "dev"
  deploy {
    strategy = "` + strategy + `"
  }
  function "web" {
    command = "node"
  }
}
`
}

// resourcesSpec puts attr, indented, on line 6 of a resources block.
func resourcesSpec(attr string) string {
	return `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    resources {
      ` + attr + `
    }
  }
}
`
}

// scaleSpec puts attrs, indented, from line 5 of a function.
func scaleSpec(attrs string) string {
	return `app "hello" {
  workspace = "dev"
  function "web" {
    command        = "node"
    ` + attrs + `
  }
}
`
}

// scheduleSpec puts attrs, indented, from line 5 of a function.
func scheduleSpec(attrs string) string {
	return `app "hello" {
  workspace = "dev"
  function "nightly" {
    command  = "backup"
    ` + attrs + `
  }
  function "web" {
    command = "server"
  }
}
`
}

// envSpec puts entry in the env map, whose value starts at 5:11.
func envSpec(entry string) string {
	return `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    env = {
      ` + entry + `
    }
  }
}
`
}

// webSpec puts attr, indented, on line 6 of a web block.
func webSpec(attr string) string {
	return `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    web {
      ` + attr + `
    }
  }
}
`
}

// twoWebSpec has two web functions, "web" and "www", whose web blocks hold
// attr1 (line 6) and attr2 (line 12).
func twoWebSpec(attr1, attr2 string) string {
	return `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    web {
      ` + attr1 + `
    }
  }
  function "www" {
    command = "deno"
    web {
      ` + attr2 + `
    }
  }
}
`
}

func TestParseBad(t *testing.T) {
	runBad(t, badCases)
}

func runBad(t *testing.T, cases []badCase) {
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			app, diags := spec.Parse([]byte(tt.src), "test.hcl")
			var found *hcl.Diagnostic
			var got []string
			for _, d := range diags {
				got = append(got, d.Summary)
				if d.Summary == tt.summary && found == nil {
					found = d
				}
			}
			if found == nil {
				t.Fatalf("no %q diagnostic; got:\n%s", tt.summary, formatDiags(diags))
			}
			want := append([]string{tt.summary}, tt.others...)
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("diagnostics = %q, want %q:\n%s", got, want, formatDiags(diags))
			}
			if found.Subject == nil {
				t.Fatalf("%q has no subject", tt.summary)
			}
			if s := found.Subject.Start; s.Line != tt.line || s.Column != tt.col {
				t.Errorf("%q at %d:%d, want %d:%d", tt.summary, s.Line, s.Column, tt.line, tt.col)
			}
			if found.Subject.Filename != "test.hcl" {
				t.Errorf("subject file = %q, want test.hcl", found.Subject.Filename)
			}
			if tt.detail != "" && !strings.Contains(found.Detail, tt.detail) {
				t.Errorf("detail %q does not contain %q", found.Detail, tt.detail)
			}
			wantSeverity := hcl.DiagError
			if tt.warning {
				wantSeverity = hcl.DiagWarning
			}
			if found.Severity != wantSeverity {
				t.Errorf("severity = %v, want %v", found.Severity, wantSeverity)
			}
			if tt.warning {
				if diags.HasErrors() {
					t.Errorf("a warning alone must leave the spec usable:\n%s", formatDiags(diags))
				}
				if app == nil {
					t.Error("no app returned with only warnings")
				}
			}
		})
	}
}

func TestParseReportsEveryMistake(t *testing.T) {
	src := `app "Hello" {
  workspace = "dev"
  deploy {
    strategy = "yolo"
  }
  function "web" {
    command = "node"
    resources {
      cpu = 0
    }
  }
}
`
	_, diags := spec.Parse([]byte(src), "test.hcl")
	want := map[string]hcl.Pos{
		"Invalid app name":        {Line: 1, Column: 5},
		"Unknown deploy strategy": {Line: 4, Column: 16},
		"Invalid cpu":             {Line: 9, Column: 13},
	}
	if len(diags) != len(want) {
		t.Fatalf("got %d diagnostics, want %d:\n%s", len(diags), len(want), formatDiags(diags))
	}
	for _, d := range diags {
		pos, ok := want[d.Summary]
		if !ok {
			t.Errorf("unexpected diagnostic %q", d.Summary)
			continue
		}
		if d.Subject.Start.Line != pos.Line || d.Subject.Start.Column != pos.Column {
			t.Errorf("%q at %d:%d, want %d:%d", d.Summary, d.Subject.Start.Line, d.Subject.Start.Column, pos.Line, pos.Column)
		}
	}
}

func TestGPUForms(t *testing.T) {
	tests := []struct {
		expr   string
		models []string
		count  int
	}{
		{`"any"`, nil, 1},
		{`"ANY"`, nil, 1},
		{`"any:4"`, nil, 4},
		{`["any"]`, nil, 1},
		{`"H100"`, []string{"H100"}, 1},
		{`"h100:2"`, []string{"H100"}, 2},
		{`"H100:8"`, []string{"H100"}, 8},
		{`"rtx-4090"`, []string{"RTX-4090"}, 1},
		{`["H100", "A100"]`, []string{"H100", "A100"}, 1},
		{`["H100:2", "a100:2"]`, []string{"H100", "A100"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			app, diags := spec.Parse([]byte(gpuSpec(tt.expr)), "test.hcl")
			if len(diags) > 0 {
				t.Fatalf("unexpected diagnostics:\n%s", formatDiags(diags))
			}
			got := app.Functions[0].Resources.GPURequest
			if got == nil {
				t.Fatal("GPURequest is nil")
			}
			if !slices.Equal(got.Models, tt.models) || got.Count != tt.count {
				t.Errorf("GPURequest = %+v, want Models %q Count %d", *got, tt.models, tt.count)
			}
		})
	}
}

func TestNoGPU(t *testing.T) {
	app, diags := spec.Parse([]byte(resourcesSpec("cpu = 200")), "test.hcl")
	if len(diags) > 0 {
		t.Fatalf("unexpected diagnostics:\n%s", formatDiags(diags))
	}
	if r := app.Functions[0].Resources; r.GPURequest != nil {
		t.Errorf("GPURequest = %+v, want nil without a gpu attribute", *r.GPURequest)
	}
}

func TestPortVariable(t *testing.T) {
	src := `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    args    = ["--listen", "127.0.0.1:${port}"]
    env = {
      LISTEN = "${port}"
    }
  }
}
`
	app, diags := spec.Parse([]byte(src), "test.hcl")
	if len(diags) > 0 {
		t.Fatalf("unexpected diagnostics:\n%s", formatDiags(diags))
	}
	fn := app.Functions[0]
	if want := "127.0.0.1:" + spec.PortPlaceholder; fn.Args[1] != want {
		t.Errorf("args[1] = %q, want %q", fn.Args[1], want)
	}
	if fn.Env["LISTEN"] != spec.PortPlaceholder {
		t.Errorf("env LISTEN = %q, want %q", fn.Env["LISTEN"], spec.PortPlaceholder)
	}
}

func TestDefaults(t *testing.T) {
	app, diags := spec.Parse([]byte(nameSpec("hello", "dev", "web")), "test.hcl")
	if len(diags) > 0 {
		t.Fatalf("unexpected diagnostics:\n%s", formatDiags(diags))
	}
	fn := app.Functions[0]
	if got := app.DeployStrategy(); got != spec.StrategyRolling {
		t.Errorf("DeployStrategy() = %q, want rolling", got)
	}
	if got := fn.TaskDriver(); got != spec.DriverRawExec {
		t.Errorf("TaskDriver() = %q, want raw_exec", got)
	}
	if got := fn.Count(); got != 1 {
		t.Errorf("Count() = %d, want 1", got)
	}
	if fn.Scheduled() {
		t.Error("Scheduled() = true")
	}
	if got := (&spec.Function{Image: "nginx"}).TaskDriver(); got != spec.DriverDocker {
		t.Errorf("TaskDriver() with image = %q, want docker", got)
	}
	if got := (&spec.Web{}).HealthCheckPath(); got != "/" {
		t.Errorf("HealthCheckPath() = %q, want /", got)
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"a": true, "hello": true, "hello-world": true, "a1": true, strings.Repeat("a", 63): true,
		"": false, "1a": false, "-a": false, "a-": false, "a--b": false, "A": false, "a_b": false, "a.b": false,
		strings.Repeat("a", 64): false,
	} {
		if got := spec.ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestValidDomain(t *testing.T) {
	for d, want := range map[string]bool{
		"example.com": true, "api.example.com": true, "*.example.com": true, "Example.COM": true,
		"example.com.": true, "xn--bcher-kva.example": true,
		"": false, "localhost": false, "*.com": false, "*": false, "a.*.example.com": false,
		"-a.example.com": false, "a_b.example.com": false, "a..example.com": false,
		strings.Repeat("a", 64) + ".com": false,
	} {
		if got := spec.ValidDomain(d); got != want {
			t.Errorf("ValidDomain(%q) = %v, want %v", d, got, want)
		}
	}
}

func formatDiags(diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		b.WriteString("  " + sev + ": ")
		if d.Subject != nil {
			b.WriteString(d.Subject.String() + ": ")
		}
		b.WriteString(d.Summary + "; " + d.Detail + "\n")
	}
	return b.String()
}

func TestFilesOf(t *testing.T) {
	src := `app "a" {
  workspace = "dev"
  files {
    exclude = ["x"]
  }
  function "plain" {
    command = "node"
  }
  function "own" {
    command = "node"
    files {
      include = ["src"]
    }
  }
  function "none" {
    command = "node"
    files {
      include = []
    }
  }
  function "image" {
    image = "nginx"
  }
  function "image-files" {
    image = "nginx"
    files {}
  }
}
`
	app, diags := spec.Parse([]byte(src), "a.hcl")
	if diags.HasErrors() {
		t.Fatal(formatDiags(diags))
	}
	for _, tc := range []struct {
		fn      string
		bundled bool
		exclude []string
		include []string
	}{
		{"plain", true, []string{"x"}, nil},
		{"own", true, nil, []string{"src"}},
		{"none", false, nil, []string{}},
		{"image", false, nil, nil},
		{"image-files", true, nil, nil},
	} {
		var fn *spec.Function
		for _, f := range app.Functions {
			if f.Name == tc.fn {
				fn = f
			}
		}
		files, bundled := app.FilesOf(fn)
		if bundled != tc.bundled {
			t.Errorf("%s: bundled %v, want %v", tc.fn, bundled, tc.bundled)
		}
		if files != nil && (!slices.Equal(files.Exclude, tc.exclude) || !slices.Equal(files.Include, tc.include)) {
			t.Errorf("%s: files %+v", tc.fn, files)
		}
	}
}
