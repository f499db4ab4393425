package orchestrator

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
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

// A canary or blue-green rollout of an autoscaled function starts its
// canaries beside the running count: blue-green a full set, canary the
// spec's number, clamped to it; neither promotes on its own.
func TestCarryCountsOfSplitRollouts(t *testing.T) {
	cases := []struct {
		deploy       string
		running      int
		wantCanaries int
	}{
		{"strategy = \"blue-green\"", 3, 3},
		{"strategy = \"blue-green\"", 0, 0},
		{"strategy = \"canary\"\n    canaries = 2", 3, 2},
		{"strategy = \"canary\"\n    canaries = 2", 1, 1},
		{"strategy = \"canary\"", 0, 0},
	}
	for _, c := range cases {
		src := "app \"hello\" {\n  workspace = \"dev\"\n  deploy {\n    " + c.deploy + "\n  }\n" + scaledSpec[len("app \"hello\" {\n  workspace = \"dev\"\n"):]
		app, diags := spec.Parse([]byte(src), "app.hcl")
		if diags.HasErrors() {
			t.Fatalf("%s\n%s", diags, src)
		}
		r, err := jobs.Render(app, router.DefaultConfig)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Routes[0].Proxied || r.Routes[0].Preview == nil || !r.Routes[0].Preview.Proxied {
			t.Fatalf("%s: the autoscaled route and its preview must be proxied", c.deploy)
		}
		current := &nomad.Job{Stop: ptr(false), TaskGroups: []*nomad.TaskGroup{{Name: ptr("web"), Count: ptr(c.running)}}}
		carryCounts(r.Job, current, app, r.Routes)
		for _, tg := range r.Job.TaskGroups {
			if *tg.Name != "web" {
				continue
			}
			if u := tg.Update; *tg.Count != c.running || *u.Canary != c.wantCanaries || *u.AutoPromote {
				t.Errorf("%s at %d: count %d canary %d auto_promote %v, want count %d canary %d, no auto_promote",
					c.deploy, c.running, *tg.Count, *u.Canary, *u.AutoPromote, c.running, c.wantCanaries)
			}
			// Canaries carry the canary tag alone: the proxy keeps the
			// live version's requests from them.
			if s := tg.Services[0]; len(s.Tags) != 0 || !slices.Equal(s.CanaryTags, []string{jobs.CanaryTag}) {
				t.Errorf("%s: tags %v canary tags %v", c.deploy, s.Tags, s.CanaryTags)
			}
		}
		// The preview's routers are published with the route's.
		pairs, err := proxiedKV("traefik", app, "dev--hello", r.Routes)
		if err != nil {
			t.Fatal(err)
		}
		if p := r.Routes[0].Preview; pairs["traefik/http/routers/"+p.Router+"/service"] != router.DefaultProxyService {
			t.Errorf("%s: the preview's router %s is not published", c.deploy, p.Router)
		}
		if keys := proxiedKeys("traefik", r.Routes); len(keys) != len(pairs) {
			t.Errorf("%s: %d keys, %d pairs", c.deploy, len(keys), len(pairs))
		}
	}
}

// A deploy that the autoscaler's scaling beats to Nomad registers again
// with the count as it is now; one whose job changed otherwise fails.
func TestRegisterRetriesAfterTheAutoscalerScaled(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version bool // the job's meta changed too, not only its count
		wantErr bool
	}{
		{name: "a count changed", wantErr: false},
		{name: "the version changed", version: true, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarnessFor(t, proxiedRouter)
			h.mustDeploy([]byte(scaledSpec))
			scaled := 0
			h.nomad.beforeRegister = func(f *fakeNomad, job *nomad.Job) {
				if scaled > 0 {
					return
				}
				scaled++
				j := copyJob(f.jobs[*job.ID])
				for _, tg := range j.TaskGroups {
					if *tg.Name == "web" {
						tg.Count = ptr(3)
					}
				}
				if tc.version {
					j.Meta = maps.Clone(j.Meta)
					j.Meta["caravan.other"] = "x"
				}
				idx := f.bump()
				j.JobModifyIndex = &idx
				f.jobs[*job.ID] = j
			}
			_, err := h.deploy([]byte(strings.Replace(scaledSpec, "max_containers = 4", "max_containers = 5", 1)))
			if (err != nil) != tc.wantErr {
				t.Fatalf("deploy: %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				if !errors.Is(err, ErrJobModified) && !strings.Contains(err.Error(), "conflicting job modify index") {
					t.Errorf("deploy: %v, want the conflict", err)
				}
				return
			}
			if got := counts(h.nomad.jobs["dev--hello"])["web"]; got != 3 {
				t.Errorf("web's count after the retried deploy = %d, want 3 (the autoscaler's)", got)
			}
		})
	}
}
