package main

import (
	"io"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/orchestrator"
)

// TestFlagsAfterArguments: the README's forms as written, flags after the
// arguments, reach the server with their values.
func TestFlagsAfterArguments(t *testing.T) {
	deployed := orchestrator.DeployResult{App: "hello", Workspace: "dev", Version: 2, Changed: true}
	for _, tc := range []struct {
		name  string
		args  []string
		route string
		resp  any
		want  []string // in the request line
	}{
		{"deploy", []string{"deploy", "../../examples/hello.hcl", "--strategy", "canary", "--tag", "v2", "--timeout", "90s"},
			"POST /v1/deploy", deployed, []string{`"strategy":"canary"`, `"tag":"v2"`, `"timeout":"1m30s"`}},
		{"deploy with =", []string{"deploy", "../../examples/hello.hcl", "--strategy=blue-green", "--timeout=2m"},
			"POST /v1/deploy", deployed, []string{`"strategy":"blue-green"`, `"timeout":"2m0s"`}},
		{"app stop", []string{"app", "stop", "hello", "--yes"},
			"POST /v1/apps/hello/stop", orchestrator.AppRecord{App: "hello", Workspace: "dev"}, []string{"POST /v1/apps/hello/stop"}},
		{"app stop -y", []string{"app", "stop", "hello", "-y", "--workspace", "dev"},
			"POST /v1/apps/hello/stop", orchestrator.AppRecord{App: "hello", Workspace: "dev"}, []string{`"workspace":"dev"`}},
		{"app rollback", []string{"app", "rollback", "hello", "--strategy", "recreate", "v3", "--timeout", "1m"},
			"POST /v1/apps/hello/rollback", deployed, []string{`"version":3`, `"strategy":"recreate"`, `"timeout":"1m0s"`}},
		{"app rollover", []string{"app", "rollover", "hello", "--strategy", "canary"},
			"POST /v1/apps/hello/rollover", deployed, []string{`"strategy":"canary"`}},
		{"run", []string{"run", "shop", "nightly", "--timeout", "1s"},
			"POST /v1/apps/shop/run", orchestrator.RunResult{Function: "nightly", Status: "succeeded"}, []string{`"function":"nightly"`, `"timeout":"1s"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, seen := fakeServer(t, map[string]any{tc.route: tc.resp})
			_, errOut, err := runCLI(t, append([]string{"--addr", srv.URL, "--token", "cvn_x"}, tc.args...)...)
			if err != nil {
				t.Fatalf("%s: %v\n%s", strings.Join(tc.args, " "), err, errOut)
			}
			if len(*seen) != 1 {
				t.Fatalf("requests: %q", *seen)
			}
			for _, want := range tc.want {
				if !strings.Contains((*seen)[0], want) {
					t.Errorf("request %q lacks %s", (*seen)[0], want)
				}
			}
		})
	}
}

func TestFlagsFirst(t *testing.T) {
	// An app that has run has help subcommands everywhere: leaves stay leaves.
	app := newApp(io.Discard, io.Discard)
	for _, args := range [][]string{{"deploy", "--help"}, {"app", "stop", "--help"}, {"call", "--help"}} {
		if err := app.Run(append([]string{"caravan"}, args...)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		// Flags after the arguments move ahead of them, "--" between.
		{"deploy app.hcl --strategy canary --tag v2", "deploy --strategy canary --tag v2 -- app.hcl"},
		{"deploy app.hcl --timeout=5m", "deploy --timeout=5m -- app.hcl"},
		{"deploy --tag v2 app.hcl", "deploy --tag v2 -- app.hcl"},
		{"deploy --tag v2", "deploy --tag v2"},
		// A boolean takes no value; a value may look like a flag or an argument.
		{"app stop hello --yes", "app stop --yes -- hello"},
		{"app stop -y hello", "app stop -y -- hello"},
		{"app stop hello --yes=false", "app stop --yes=false -- hello"},
		{"call calc sum --data - --timeout 1m", "call --data - --timeout 1m -- calc sum"},
		{"call calc --data --timeout sum", "call --data --timeout -- calc sum"},
		{"deploy app.hcl --tag", "deploy --tag -- app.hcl"},
		{"app rollback hello --strategy recreate v3", "app rollback --strategy recreate -- hello v3"},
		// "--" ends the flags; "-" is an argument.
		{"validate a.hcl -- --b.hcl", "validate -- a.hcl --b.hcl"},
		{"validate - a.hcl", "validate -- - a.hcl"},
		// Unknown flags move alone, for urfave/cli to refuse; help too.
		{"deploy app.hcl --bogus x", "deploy --bogus -- app.hcl x"},
		{"deploy app.hcl --help", "deploy --help -- app.hcl"},
		// A group's own flags stay where they are.
		{"--addr http://x --token t app stop hello --yes", "--addr http://x --token t app stop --yes -- hello"},
		{"--addr http://x deploy", "--addr http://x deploy"},
		{"help deploy", "help deploy"},
		{"app help stop --yes", "app help stop --yes"},
		{"nosuch a --b", "nosuch a --b"},
		{"", ""},
	} {
		got := strings.Join(flagsFirst(app.App, append([]string{"caravan"}, strings.Fields(tc.in)...))[1:], " ")
		if got != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

// TestBadFlagValueSaysSo: a value a typed flag cannot take, before or
// after the arguments, is refused with the flag's name, and nothing is sent.
func TestBadFlagValueSaysSo(t *testing.T) {
	srv, seen := fakeServer(t, map[string]any{})
	for _, tc := range []struct {
		args       []string
		flag, want string
	}{
		{[]string{"call", "calc", "sum", "--timeout", "5x"}, "-timeout", `"5x"`},
		{[]string{"call", "--timeout", "5x", "calc", "sum"}, "-timeout", `"5x"`},
		{[]string{"call", "calc", "sum", "--timeout=5x"}, "-timeout", `"5x"`},
		{[]string{"deploy", "../../examples/hello.hcl", "--timeout", "soon"}, "-timeout", `"soon"`},
		{[]string{"run", "shop", "nightly", "--timeout", "1"}, "-timeout", `"1"`},
		{[]string{"app", "stop", "hello", "--yes=maybe"}, "-yes", `"maybe"`},
	} {
		out, _, err := runCLI(t, append([]string{"--addr", srv.URL}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), "invalid") || !strings.Contains(err.Error(), tc.want) ||
			!strings.Contains(err.Error(), tc.flag+":") || !strings.Contains(out, "Incorrect Usage") {
			t.Errorf("%s: %v, want the invalid value %s of %s\n%s", strings.Join(tc.args, " "), err, tc.want, tc.flag, out)
		}
	}
	if len(*seen) != 0 {
		t.Fatalf("requests: %q", *seen)
	}
}
