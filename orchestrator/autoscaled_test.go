package orchestrator

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/caravanhq/caravan/autoscale"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

const scaledSpec = `app "hello" {
  workspace = "dev"
  function "web" {
    command = "node"
    min_containers = 0
    max_containers = 4
    web {}
  }
  function "fixed" {
    command = "node"
    min_containers = 2
    web {}
  }
}
`

func renderScaled(t *testing.T) (*spec.App, *jobs.Rendered) {
	t.Helper()
	app, diags := spec.Parse([]byte(scaledSpec), "app.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	r, err := jobs.Render(app, router.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	return app, r
}

func counts(job *nomad.Job) map[string]int {
	out := map[string]int{}
	for _, tg := range job.TaskGroups {
		out[*tg.Name] = *tg.Count
	}
	return out
}

func TestCarryCounts(t *testing.T) {
	cases := []struct {
		name    string
		current map[string]int
		stopped bool
		want    map[string]int
	}{
		{name: "first deploy", want: map[string]int{"web": 0, "fixed": 2}},
		{name: "autoscaled count carried, fixed one rendered", current: map[string]int{"web": 3, "fixed": 5}, want: map[string]int{"web": 3, "fixed": 2}},
		{name: "clamped to the new max", current: map[string]int{"web": 9}, want: map[string]int{"web": 4, "fixed": 2}},
		{name: "a stopped job carries nothing", current: map[string]int{"web": 3}, stopped: true, want: map[string]int{"web": 0, "fixed": 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			app, r := renderScaled(t)
			var current *nomad.Job
			if c.current != nil {
				current = &nomad.Job{Stop: ptr(c.stopped)}
				for name, n := range c.current {
					current.TaskGroups = append(current.TaskGroups, &nomad.TaskGroup{Name: ptr(name), Count: ptr(n)})
				}
			}
			carryCounts(r.Job, current, app, r.Routes)
			got := counts(r.Job)
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("count of %s = %d, want %d", k, got[k], v)
				}
			}
			for _, tg := range r.Job.TaskGroups {
				if *tg.Name != "web" {
					continue
				}
				u := tg.Update
				if *u.MaxParallel != max(*tg.Count, 1) || *u.Canary != *tg.Count || *u.AutoPromote != (*tg.Count > 0) {
					t.Errorf("update max_parallel %d canary %d auto_promote %v for count %d", *u.MaxParallel, *u.Canary, *u.AutoPromote, *tg.Count)
				}
			}
		})
	}
}

func TestProbeableSkipsFunctionsAtZero(t *testing.T) {
	_, r := renderScaled(t)
	var names []string
	for _, rt := range probeable(r) {
		names = append(names, rt.Function)
	}
	if !slices.Equal(names, []string{"fixed"}) {
		t.Errorf("probed %v, want [fixed]", names)
	}
	r.Job.TaskGroups[0].Count = ptr(1)
	if n := len(probeable(r)); n != 2 {
		t.Errorf("with a container, %d routes probed, want 2", n)
	}
}

func TestProxiedKV(t *testing.T) {
	app, r := renderScaled(t)
	pairs, err := proxiedKV("traefik", app, "dev--hello", r.Routes)
	if err != nil {
		t.Fatal(err)
	}
	web := r.Routes[0]
	var rec autoscale.Record
	if err := json.Unmarshal([]byte(pairs[proxy.SettingsKVPrefix+web.Name]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Job != "dev--hello" || rec.Group != "web" || rec.MaxContainers != 4 || rec.MaxInputs != 1 {
		t.Errorf("record %+v", rec)
	}
	if _, err := rec.Config(); err != nil {
		t.Error(err)
	}
	if pairs["traefik/http/routers/"+web.Router+"/service"] != router.DefaultProxyService {
		t.Errorf("router of %s not published", web.Name)
	}
	for k := range pairs {
		if slices.Contains([]string{"fixed"}, k) {
			t.Errorf("the fixed function published %s", k)
		}
	}
	keys := proxiedKeys("traefik", r.Routes)
	if len(keys) != len(pairs) {
		t.Errorf("%d keys, %d pairs", len(keys), len(pairs))
	}
	ops := publishOps(map[string]string{"a": "1"}, []string{"a", "b"})
	if len(ops) != 2 || ops[1].Key != "b" || !ops[1].Delete {
		t.Errorf("publishOps = %+v, want a set then b deleted", ops)
	}
}
