package spec_test

import (
	"testing"

	"github.com/caravanhq/caravan/spec"
)

// callableSpec makes the function "echo" callable, with attrs after
// `callable = true` (line 5) from line 6, column 5; "web" keeps the app
// deployable.
func callableSpec(attrs string) string {
	return `app "hello" {
  workspace = "dev"
  function "echo" {
    command  = "node"
    callable = true
    ` + attrs + `
  }
  function "web" {
    command = "server"
  }
}
`
}

func init() {
	badCases = append(badCases,
		badCase{name: "web block on a callable", src: callableSpec("web {}"), summary: "Web block on a callable function", line: 6, col: 5, detail: "Remove the web block"},
		badCase{name: "schedule on a callable", src: callableSpec(`schedule = "0 3 * * *"`), summary: "Schedule on a callable function", line: 6, col: 16, detail: "Remove schedule"},
		badCase{name: "period on a callable", src: callableSpec(`period = "1h"`), summary: "Period on a callable function", line: 6, col: 14, detail: "Remove period"},
		badCase{name: "only callable functions", src: `app "hello" {
  workspace = "dev"
  function "echo" {
    command  = "node"
    callable = true
  }
}
`, summary: "App has only scheduled or callable functions", line: 1, col: 1},
	)
}

func TestParseCallable(t *testing.T) {
	app, diags := spec.Parse([]byte(callableSpec("")), "test.hcl")
	if diags.HasErrors() {
		t.Fatal(formatDiags(diags))
	}
	echo, web := app.Functions[0], app.Functions[1]
	if !echo.Callable || echo.LongRunning() || web.Callable || !web.LongRunning() {
		t.Fatalf("echo callable %v long-running %v; web callable %v long-running %v",
			echo.Callable, echo.LongRunning(), web.Callable, web.LongRunning())
	}
}
