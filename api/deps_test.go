package api_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The package's reason to exist: a program that imports it links the
// standard library and nothing else of caravan's or anyone's.
func TestStandardLibraryOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg != "github.com/caravanhq/caravan/api" {
			t.Errorf("api depends on %s; it must import the standard library only", pkg)
		}
	}
}
