package spec_test

import (
	"testing"
	"time"

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

func init() {
	badCases = append(badCases,
		badCase{name: "enter on a function that is not callable", src: `app "hello" {
  workspace = "dev"
  function "web" {
    command = "server"
    enter {}
  }
}
`, summary: "Enter block on a function without warm workers", line: 5, col: 5, detail: "Add callable = true"},
		badCase{name: "enter on an isolated callable", src: callableSpec("isolated = true\n    enter {}"), summary: "Enter block on a function without warm workers", line: 7, col: 5, detail: "Remove isolated = true"},
		badCase{name: "enter on a docker callable", src: `app "hello" {
  workspace = "dev"
  function "echo" {
    image    = "alpine"
    callable = true
    enter {}
  }
  function "web" {
    command = "server"
  }
}
`, summary: "Enter block on a function without warm workers", line: 6, col: 5, detail: "Use driver raw_exec or exec"},
		badCase{name: "enter with a bad ready_timeout", src: callableSpec("enter {\n      ready_timeout = \"2h\"\n    }"), summary: "Invalid ready_timeout", line: 7, col: 23},
		badCase{name: "enter with a ready_timeout not a duration", src: callableSpec("enter {\n      ready_timeout = \"soon\"\n    }"), summary: "Invalid ready_timeout", line: 7, col: 23},
	)
}

// TestParseEnter: an enter block's ready_timeout is parsed once, with its
// default when unset.
func TestParseEnter(t *testing.T) {
	for _, c := range []struct {
		attrs string
		want  time.Duration
	}{
		{"enter {}", spec.DefaultReadyTimeout},
		{"enter {\n      ready_timeout = \"5m\"\n    }", 5 * time.Minute},
	} {
		app, diags := spec.Parse([]byte(callableSpec(c.attrs)), "test.hcl")
		if diags.HasErrors() {
			t.Fatal(formatDiags(diags))
		}
		echo := app.Functions[0]
		if echo.Enter == nil || echo.Enter.Ready != c.want || !echo.Warm() {
			t.Errorf("%s: enter %+v, want ready %s", c.attrs, echo.Enter, c.want)
		}
	}
}
