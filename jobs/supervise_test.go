package jobs_test

import (
	"testing"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
)

// TestDrainSupervisor: which web tasks run under `caravan task`, and what
// that changes of the task and group.
func TestDrainSupervisor(t *testing.T) {
	const autoscaled = "min_containers = 0\n    max_containers = 3\n"
	for _, tc := range []struct {
		name       string
		fn         string // attributes of function "web"
		strategy   string
		supervised bool
		grace      time.Duration
		installed  string // router.Config.AgentCommand
	}{
		{"autoscaled raw_exec", `command = "node"` + "\n    " + autoscaled, "", true, 20 * time.Second, ""},
		{"autoscaled exec, its own drain_timeout", `command = "node"` + "\n    driver = \"exec\"\n    drain_timeout = \"5s\"\n    " + autoscaled, "recreate", true, 5 * time.Second, ""},
		{"autoscaled, caravan installed on the clients", `command = "node"` + "\n    " + autoscaled, "", true, 20 * time.Second, "/usr/local/bin/caravan"},
		{"autoscaled docker", `image = "nginx"` + "\n    " + autoscaled, "", false, 0, ""},
		{"a fixed count", `command = "node"` + "\n    min_containers = 2\n", "", false, 0, ""},
		{"canary: proxied too", `command = "node"` + "\n    " + autoscaled, "canary", true, 20 * time.Second, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deploy := ""
			if tc.strategy != "" {
				deploy = "deploy {\n    strategy = \"" + tc.strategy + "\"\n  }\n"
			}
			src := "app \"hello\" {\n  workspace = \"dev\"\n  " + deploy + "function \"web\" {\n    " + tc.fn + "\n    web {\n      port = 8080\n    }\n  }\n}\n"
			app, diags := spec.Parse([]byte(src), "test.hcl")
			if diags.HasErrors() {
				t.Fatalf("%s\n%s", diags, src)
			}
			cfg := router.DefaultConfig
			cfg.AgentCommand = tc.installed
			r, err := jobs.Render(app, cfg)
			if err != nil {
				t.Fatal(err)
			}
			tg := r.Job.TaskGroups[0]
			tk := tg.Tasks[0]
			_, hasURL := tk.Env[agent.EnvDrainURL]
			command := agent.Binary
			if tc.installed != "" {
				command = tc.installed
			}
			if got := tk.Config["command"] == command; got != tc.supervised || hasURL != tc.supervised {
				t.Fatalf("supervised = %v (drain URL %v), want %v: %v", got, hasURL, tc.supervised, tk.Config)
			}
			if !tc.supervised {
				if *tg.ShutdownDelay != router.DefaultConfig.Drain() {
					t.Errorf("shutdown_delay = %s, want the fixed %s", *tg.ShutdownDelay, router.DefaultConfig.Drain())
				}
				return
			}
			args := tk.Config["args"].([]string)
			want := []string{"task", "--grace", tc.grace.String(), "--fallback", router.DefaultConfig.Drain().String(), "--", "node"}
			if !equalStrings(args, want) {
				t.Errorf("args = %q, want %q", args, want)
			}
			if *tg.ShutdownDelay != 0 {
				t.Errorf("shutdown_delay = %s, want 0", *tg.ShutdownDelay)
			}
			if *tk.KillTimeout != tc.grace+jobs.ChildKillTimeout {
				t.Errorf("kill_timeout = %s, want %s", *tk.KillTimeout, tc.grace+jobs.ChildKillTimeout)
			}
			if tc.installed != "" {
				if len(tk.Artifacts) != 0 || !agent.Uses(tg, "dev--hello") {
					t.Errorf("artifacts = %v, want none (caravan is installed)", tk.Artifacts)
				}
				return
			}
			if len(tk.Artifacts) != 1 || !agent.Fetches(tg, "dev--hello") {
				t.Errorf("artifacts = %v, want the agent's", tk.Artifacts)
			}
		})
	}
}
