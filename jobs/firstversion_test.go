package jobs_test

import (
	"maps"
	"path/filepath"
	"testing"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
)

func TestStartsRoutable(t *testing.T) {
	for _, c := range []struct {
		name  string
		count int
		route router.Route
		want  bool
	}{
		{"one container routed by Traefik", 1, router.Route{}, true},
		{"two containers: a rescheduled one has a sibling that answers", 2, router.Route{}, false},
		{"none", 0, router.Route{}, false},
		{"through caravan's proxies, scaled within the version", 1, router.Route{Proxied: true}, false},
	} {
		if got := jobs.StartsRoutable(c.count, c.route); got != c.want {
			t.Errorf("%s: StartsRoutable(%d, proxied=%v) = %v, want %v", c.name, c.count, c.route.Proxied, got, c.want)
		}
	}
}

// TestMarkFirstVersion: in the multi example's first version only "api"
// (one container, routed by Traefik) starts routable; "frontend" (two
// containers) and "worker" (no route) render as before, and no hash moves.
func TestMarkFirstVersion(t *testing.T) {
	r := render(t, load(t, "../examples/multi.hcl"))
	hashes, spec := r.FunctionHashes(), r.SpecHash
	whole, err := jobs.Hash(r.Job)
	if err != nil {
		t.Fatal(err)
	}
	marked := jobs.MarkFirstVersion(r)
	if len(marked) != 1 || marked[0].Function != "api" {
		t.Fatalf("marked %+v, want the api route alone", marked)
	}
	for _, tg := range r.Job.TaskGroups {
		for _, s := range tg.Services {
			for _, c := range s.Checks {
				want := ""
				if *tg.Name == "api" {
					want = jobs.FirstVersionCheckStatus
				}
				if c.InitialStatus != want {
					t.Errorf("group %s check %q: initial status %q, want %q", *tg.Name, c.Name, c.InitialStatus, want)
				}
			}
		}
	}
	if got := r.FunctionHashes(); !maps.Equal(got, hashes) || r.SpecHash != spec {
		t.Errorf("marking moved the hashes: %v -> %v", hashes, got)
	}
	if again, err := jobs.Hash(r.Job); err != nil || again != whole {
		t.Errorf("Hash after marking = %s %v, want %s: the initial status is not what runs", again, err, whole)
	}
	b, err := jobs.JSON(r.Job)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "multi.first.job.json"), b)

	// The autoscale example's functions go through caravan's proxies.
	if m := jobs.MarkFirstVersion(render(t, load(t, "../examples/autoscale.hcl"))); len(m) != 0 {
		t.Errorf("autoscale: marked %+v, want none", m)
	}
}
