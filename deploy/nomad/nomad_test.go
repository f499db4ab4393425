// Package nomad holds the Nomad job files that run caravan on the
// cluster it drives (the *.nomad.hcl files beside this one; README,
// "Running caravan on your cluster"). Its test holds them to what
// Nomad's HCL2 jobspec parser and the default workload identity accept
// without a live agent; e2e/cluster parses, plans and runs them on a
// cluster.
package nomad

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// files are the job files and the job each defines.
var files = map[string]string{
	"caravan-server.nomad.hcl": "caravan-server",
	"caravan-proxy.nomad.hcl":  "caravan-proxy",
	"traefik.nomad.hcl":        "traefik",
	"nats.nomad.hcl":           "nats",
}

func TestEveryFileIsListed(t *testing.T) {
	got, _ := filepath.Glob("*.nomad.hcl")
	var want []string
	for f := range files {
		want = append(want, f)
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("job files %v, the test knows %v: add the new one to files", got, want)
	}
}

var (
	nomadVarRef = regexp.MustCompile(`nomadVar "([^"]*)"`)
	// A UUID (Nomad's and Consul's tokens) or a PEM block written inline.
	inlineSecret = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|-----BEGIN`)
)

// Each file is one job of its name, every var.X it uses is declared and
// every declared variable used, it reads only its own Nomad Variable
// (nomad/jobs/<job>, what the default workload identity may read), and
// it holds no secret inline.
func TestJobFiles(t *testing.T) {
	for file, job := range files {
		t.Run(file, func(t *testing.T) {
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			f, diags := hclsyntax.ParseConfig(src, file, hcl.InitialPos)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			body := f.Body.(*hclsyntax.Body)
			declared := map[string]bool{}
			var jobs []string
			for _, b := range body.Blocks {
				switch b.Type {
				case "variable":
					declared[b.Labels[0]] = true
					if _, ok := b.Body.Attributes["type"]; !ok {
						t.Errorf("%s: variable %q has no type", b.DefRange(), b.Labels[0])
					}
				case "job":
					jobs = append(jobs, b.Labels[0])
				case "locals":
				default:
					t.Errorf("%s: unexpected block %s", b.DefRange(), b.Type)
				}
			}
			if !slices.Equal(jobs, []string{job}) {
				t.Errorf("jobs %v, want [%s]", jobs, job)
			}
			used := map[string]bool{}
			hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
				e, ok := n.(*hclsyntax.ScopeTraversalExpr)
				if !ok || e.Traversal.RootName() != "var" || len(e.Traversal) < 2 {
					return nil
				}
				name := e.Traversal[1].(hcl.TraverseAttr).Name
				used[name] = true
				if !declared[name] {
					t.Errorf("%s: var.%s is not declared", e.SrcRange, name)
				}
				return nil
			})
			for v := range declared {
				if !used[v] {
					t.Errorf("variable %q is declared but not used", v)
				}
			}
			if _, ok := declared["namespace"]; !ok {
				t.Error("no variable namespace: the operator chooses where caravan's own jobs go")
			}
			for _, m := range nomadVarRef.FindAllStringSubmatch(string(src), -1) {
				if m[1] != "nomad/jobs/"+job {
					t.Errorf("reads Nomad Variable %q: the task's workload identity may read nomad/jobs/%s only", m[1], job)
				}
			}
			if loc := inlineSecret.FindIndex(src); loc != nil {
				t.Errorf("an inline secret at byte %d: secrets come from the job's Nomad Variable", loc[0])
			}
		})
	}
}
