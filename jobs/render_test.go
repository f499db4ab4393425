package jobs_test

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/hashicorp/nomad/api"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// testConfig forwards auth to a caravan server on the default address, as
// a default `caravan server` deploys.
var testConfig = router.Config{Domain: "caravan.localhost", EntryPoint: "websecure", CertResolver: "caravan", DNSCertResolver: "caravan-dns", HTTPSPort: 8443,
	AuthURL: router.DefaultAuthURL, BundleURL: "http://127.0.0.1:7474", ProxyService: router.DefaultProxyService}

func load(t *testing.T, path string) *spec.App {
	t.Helper()
	app, _, diags := spec.LoadFile(path)
	if diags.HasErrors() {
		t.Fatalf("LoadFile(%s): %s", path, diags.Error())
	}
	return app
}

func render(t *testing.T, app *spec.App) *jobs.Rendered {
	t.Helper()
	r, err := jobs.Render(app, testConfig)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	return r
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./jobs/ -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the rendered output (run go test ./jobs/ -update and review the diff); got:\n%s", path, got)
	}
}

func TestRenderGolden(t *testing.T) {
	paths, err := filepath.Glob("../examples/*.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no examples found")
	}
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".hcl")
		t.Run(name, func(t *testing.T) {
			r := render(t, load(t, path))
			job, err := jobs.JSON(r.Job)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", name+".job.json"), job)
			routes, err := jobs.CleanJSON(router.Merge(r.Routes))
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", name+".routes.json"), routes)
		})
	}
}

// bundleIDs are the bundles TestRenderBundles gives its functions.
var bundleIDs = map[string]string{
	"web":     strings.Repeat("a1", 32),
	"nightly": strings.Repeat("a1", 32),
	"sum":     strings.Repeat("a1", 32),
	"site":    strings.Repeat("b2", 32),
}

func bundled(t *testing.T) *spec.App {
	t.Helper()
	app := load(t, "testdata/bundled/app.hcl")
	for _, fn := range app.Functions {
		fn.Bundle = bundleIDs[fn.Name]
	}
	return app
}

// TestRenderBundles: every task of a function with a bundle fetches it
// from caravan server with its checksum, for its own job, into the task's
// directory, where ${spec_dir} points.
func TestRenderBundles(t *testing.T) {
	r := render(t, bundled(t))
	for _, j := range append([]*api.Job{r.Job}, append(r.Periodic, r.Callable...)...) {
		b, err := jobs.JSON(j)
		if err != nil {
			t.Fatal(err)
		}
		golden(t, filepath.Join("testdata", "bundled", strings.ReplaceAll(*j.ID, "dev--bundled", "job")+".json"), b)
	}
	// Without bundles, ${spec_dir} is the spec's directory, as before.
	plain := render(t, load(t, "testdata/bundled/app.hcl"))
	web := plain.Job.TaskGroups[0].Tasks[0]
	if args := web.Config["args"].([]string); args[0] != "testdata/bundled/server.py" || web.Artifacts != nil {
		t.Errorf("without a bundle: args %q, artifacts %v", args, web.Artifacts)
	}
}

// TestBundleChangesItsFunctionOnly: a function's bundle is part of its
// hash, so new code is a new version of that function, and of no other.
func TestBundleChangesItsFunctionOnly(t *testing.T) {
	before := render(t, bundled(t)).FunctionHashes()
	for _, changed := range []string{"web", "nightly", "sum", "site"} {
		app := bundled(t)
		for _, fn := range app.Functions {
			if fn.Name == changed {
				fn.Bundle = strings.Repeat("c3", 32)
			}
		}
		after := render(t, app).FunctionHashes()
		for name, h := range after {
			if (h != before[name]) != (name == changed) {
				t.Errorf("a new bundle for %s: %s's hash %s -> %s", changed, name, before[name], h)
			}
		}
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	for _, name := range []string{"hello", "gpu", "multi"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("..", "examples", name+".hcl")
			a, b := render(t, load(t, path)), render(t, load(t, path))
			ja, err := jobs.JSON(a.Job)
			if err != nil {
				t.Fatal(err)
			}
			jb, err := jobs.JSON(b.Job)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ja, jb) {
				t.Error("two renders of one spec differ")
			}
			if a.SpecHash != b.SpecHash || len(a.SpecHash) != 16 {
				t.Errorf("SpecHash = %q, then %q", a.SpecHash, b.SpecHash)
			}
			for _, oj := range append(a.Periodic, a.Callable...) {
				if oj.Meta[jobs.MetaSpecHash] != a.SpecHash {
					t.Errorf("%s: meta %s = %q, want %q", *oj.ID, jobs.MetaSpecHash, oj.Meta[jobs.MetaSpecHash], a.SpecHash)
				}
			}
			// Rendering the same app value twice must not change it either.
			app := load(t, path)
			c, d := render(t, app), render(t, app)
			if c.SpecHash != d.SpecHash || c.SpecHash != a.SpecHash {
				t.Errorf("re-rendering one app: %q, then %q, want %q", c.SpecHash, d.SpecHash, a.SpecHash)
			}
		})
	}
}

func TestSpecHashTracksChanges(t *testing.T) {
	app := load(t, "../examples/multi.hcl")
	before := render(t, app).SpecHash
	app.Functions[0].Args = append([]string{}, app.Functions[0].Args...)
	app.Functions[0].Args[0] = "server2.js"
	if after := render(t, app).SpecHash; after == before {
		t.Errorf("changing an arg left SpecHash at %q", before)
	}
}

// Nomad counts job meta as every task's meta: a change there replaces every
// container. The app's job must carry nothing that changes with one of its
// functions, so that changing one function leaves the others running.
func TestAppJobMetaIsTheSameWhateverChanges(t *testing.T) {
	app := load(t, "../examples/multi.hcl")
	before := render(t, app)
	for _, fn := range app.Functions {
		fn.Args = append(slices.Clone(fn.Args), "--changed")
	}
	after := render(t, app)
	if after.SpecHash == before.SpecHash {
		t.Fatal("changing every function left the spec hash")
	}
	if !maps.Equal(before.Job.Meta, after.Job.Meta) {
		t.Errorf("the app job's meta changed with its functions:\n%v\n%v", before.Job.Meta, after.Job.Meta)
	}
	for _, tg := range after.Job.TaskGroups {
		if before.FunctionHashes()[*tg.Name] == after.FunctionHashes()[*tg.Name] {
			t.Errorf("function %s changed but its hash did not", *tg.Name)
		}
	}
	// Changing one function changes its hash alone.
	app = load(t, "../examples/multi.hcl")
	app.Functions[0].Args = append(slices.Clone(app.Functions[0].Args), "--changed")
	one := render(t, app).FunctionHashes()
	for fn, h := range before.FunctionHashes() {
		if (h != one[fn]) != (fn == app.Functions[0].Name) {
			t.Errorf("function %s: hash %s, then %s", fn, h, one[fn])
		}
	}
}

func TestHashIgnoresHashAndVersionMeta(t *testing.T) {
	r := render(t, load(t, "../examples/hello.hcl"))
	h, err := jobs.Hash(r.Job)
	if err != nil {
		t.Fatal(err)
	}
	r.Job.Meta[jobs.MetaVersion] = "v1.2.3"
	r.Job.Meta[jobs.MetaSpecHash] = "something else"
	if h2, err := jobs.Hash(r.Job); err != nil || h2 != h {
		t.Errorf("Hash with version meta = %q, %v; want %q", h2, err, h)
	}
	if r.Job.Meta[jobs.MetaVersion] != "v1.2.3" || r.Job.Meta[jobs.MetaSpecHash] != "something else" {
		t.Errorf("Hash changed the job's meta: %v", r.Job.Meta)
	}
	r.Job.Meta[jobs.MetaWorkspace] = "other"
	if h3, _ := jobs.Hash(r.Job); h3 == h {
		t.Error("Hash ignores other meta")
	}
}

// A strategy says how to roll out, not what runs: changing it alone must
// not turn a no-op deploy into a new version. The update block itself does
// change.
func TestHashIgnoresStrategy(t *testing.T) {
	app := load(t, "../examples/hello.hcl")
	rolling := render(t, app)
	app.Deploy = &spec.Deploy{Strategy: spec.StrategyRecreate}
	recreate := render(t, app)
	if rolling.SpecHash != recreate.SpecHash {
		t.Errorf("SpecHash rolling %q != recreate %q", rolling.SpecHash, recreate.SpecHash)
	}
	if recreate.Job.TaskGroups[0].Update.Canary != nil && *recreate.Job.TaskGroups[0].Update.Canary != 0 {
		t.Errorf("recreate renders canaries: %+v", recreate.Job.TaskGroups[0].Update)
	}
	if *rolling.Job.TaskGroups[0].Update.Canary != 1 {
		t.Errorf("rolling renders no canary: %+v", rolling.Job.TaskGroups[0].Update)
	}
	if rolling.Job.TaskGroups[0].Meta[jobs.MetaGroupHash] != recreate.Job.TaskGroups[0].Meta[jobs.MetaGroupHash] {
		t.Error("group hash depends on the strategy")
	}
}

func TestJobID(t *testing.T) {
	if got := jobs.JobID("dev", "", "hello"); got != "dev--hello" {
		t.Errorf("JobID = %q", got)
	}
	if got := jobs.JobID("shop", "staging", "store"); got != "shop.staging--store" {
		t.Errorf("JobID = %q", got)
	}
}

// TestJobIDsNeverCollide: workspace acme-prod and workspace acme with
// environment prod used to share a job ID (acme-prod--app), so one's token
// wrote into the other's records. The environment is joined with a
// character no name can hold; their hostnames stay alike, and the hostname
// claim refuses the second.
func TestJobIDsNeverCollide(t *testing.T) {
	ids := map[string]string{}
	for _, c := range [][3]string{
		{"acme-prod", "", "app"}, {"acme", "prod", "app"}, {"acme", "prod-app", "x"}, {"acme-prod", "app", "x"},
		{"acme", "", "prod--app"}, {"a", "b-c", "d"}, {"a-b", "c", "d"},
	} {
		id := jobs.JobID(c[0], c[1], c[2])
		if prev, ok := ids[id]; ok {
			t.Errorf("JobID%q = %q, as for %s", c, id, prev)
		}
		ids[id] = fmt.Sprintf("%q", c)
	}
}

// TestRenderShape checks, on the rendered structs, what the golden files
// should show, so that a careless -update cannot bless a broken job.
func TestRenderShape(t *testing.T) {
	t.Run("hello", func(t *testing.T) {
		job := render(t, load(t, "../examples/hello.hcl")).Job
		if *job.ID != "dev--hello" || *job.Type != api.JobTypeService {
			t.Errorf("job %q type %q", *job.ID, *job.Type)
		}
		if len(job.TaskGroups) != 1 || *job.TaskGroups[0].Name != "web" {
			t.Fatalf("groups = %d, want one named web", len(job.TaskGroups))
		}
		tg := job.TaskGroups[0]
		if tg.ShutdownDelay == nil || *tg.ShutdownDelay != router.DefaultDrainDelay {
			t.Errorf("ShutdownDelay = %v, want %v (router.DefaultDrainDelay)", tg.ShutdownDelay, router.DefaultDrainDelay)
		}
		u := tg.Update
		if u == nil || u.Canary == nil || *u.Canary != 1 || u.AutoPromote == nil || !*u.AutoPromote || u.AutoRevert == nil || !*u.AutoRevert {
			t.Errorf("Update = %+v, want Canary 1, AutoPromote, AutoRevert", u)
		}
		if len(tg.Services) != 1 {
			t.Fatalf("services = %d, want 1", len(tg.Services))
		}
		svc := tg.Services[0]
		if svc.Name != "dev--hello-web" || svc.Provider != "consul" || svc.PortLabel != jobs.PortLabel {
			t.Errorf("service %q provider %q port %q", svc.Name, svc.Provider, svc.PortLabel)
		}
		if len(svc.Checks) != 1 || svc.Checks[0].Type != "http" || svc.Checks[0].Path != "/" {
			t.Errorf("checks = %+v, want one http check on /", svc.Checks)
		}
		if !slices.Contains(svc.Tags, "traefik.enable=true") {
			t.Errorf("tags %q lack traefik.enable=true", svc.Tags)
		}
		task := tg.Tasks[0]
		if task.Env["PORT"] != spec.PortPlaceholder || task.Env["HOST"] != "${NOMAD_IP_http}" {
			t.Errorf("env = %v", task.Env)
		}
		if n := tg.Networks; len(n) != 1 || len(n[0].DynamicPorts) != 1 || n[0].DynamicPorts[0].Label != "http" {
			t.Errorf("networks = %+v, want one dynamic port labelled http", n)
		}
		if *task.Resources.MemoryMB != 64 || *task.Resources.CPU != 100 {
			t.Errorf("resources = %d MHz %d MiB", *task.Resources.CPU, *task.Resources.MemoryMB)
		}
	})

	t.Run("gpu", func(t *testing.T) {
		job := render(t, load(t, "../examples/gpu.hcl")).Job
		if len(job.TaskGroups) != 2 {
			t.Fatalf("groups = %d, want 2", len(job.TaskGroups))
		}
		embed, batch := job.TaskGroups[0], job.TaskGroups[1]
		for _, tg := range job.TaskGroups {
			if u := tg.Update; u.Canary != nil || u.AutoPromote != nil {
				t.Errorf("group %s: recreate update has canaries: %+v", *tg.Name, u)
			}
		}
		devs := embed.Tasks[0].Resources.Devices
		if len(devs) != 1 || devs[0].Name != jobs.GPUDevice || *devs[0].Count != 2 {
			t.Fatalf("embed devices = %+v, want 2 nvidia/gpu", devs)
		}
		c := devs[0].Constraints
		if len(c) != 1 || c[0].LTarget != "${device.model}" || c[0].Operand != "regexp" || !strings.Contains(c[0].RTarget, "H100") {
			t.Errorf("embed constraints = %+v", c)
		}
		if len(devs[0].Affinities) != 0 {
			t.Errorf("a single model has affinities: %+v", devs[0].Affinities)
		}
		if p := embed.Networks[0].DynamicPorts; len(p) != 1 || p[0].To != 8000 || p[0].Value != 0 {
			t.Errorf("embed ports = %+v, want one dynamic port To 8000", p)
		}
		if got := embed.Tasks[0].Config["ports"]; !equalStrings(got, []string{"http"}) {
			t.Errorf("docker ports = %v", got)
		}
		if s := embed.Scaling; s == nil || *s.Min != 1 || *s.Max != 4 {
			t.Errorf("embed scaling = %+v, want 1..4", s)
		}
		bdevs := batch.Tasks[0].Resources.Devices
		if len(bdevs) != 1 || *bdevs[0].Count != 1 || len(bdevs[0].Affinities) != 2 {
			t.Fatalf("batch devices = %+v, want 1 GPU with 2 affinities", bdevs)
		}
		if a := bdevs[0].Affinities; *a[0].Weight <= *a[1].Weight || *a[1].Weight <= 0 {
			t.Errorf("affinity weights %d, %d do not prefer the first model", *a[0].Weight, *a[1].Weight)
		}
		if len(batch.Services) != 0 || batch.ShutdownDelay != nil || len(batch.Networks) != 0 {
			t.Error("the batch function has no web block but got web settings")
		}
	})

	t.Run("multi", func(t *testing.T) {
		r := render(t, load(t, "../examples/multi.hcl"))
		if *r.Job.ID != "shop.staging--store" || r.Job.Meta[jobs.MetaEnvironment] != "staging" {
			t.Errorf("job %q meta %v", *r.Job.ID, r.Job.Meta)
		}
		names := map[string]string{}
		for _, tg := range r.Job.TaskGroups {
			for _, s := range tg.Services {
				names[*tg.Name] = s.Name
			}
		}
		if names["frontend"] != "shop-staging--store-frontend" || names["api"] != "shop-staging--api" || names["worker"] != "" {
			t.Errorf("service names = %v", names)
		}
		if c := *r.Job.TaskGroups[0].Count; c != 2 {
			t.Errorf("frontend count = %d, want 2", c)
		}
		if u := r.Job.TaskGroups[0].Update; *u.Canary != 2 || *u.MaxParallel != 2 {
			t.Errorf("frontend update = %+v, want 2 canaries", u)
		}
	})
}

func TestGPUModelRegexp(t *testing.T) {
	app := load(t, "../examples/gpu.hcl")
	rtarget := render(t, app).Job.TaskGroups[0].Tasks[0].Resources.Devices[0].Constraints[0].RTarget
	re, err := regexp.Compile(rtarget)
	if err != nil {
		t.Fatalf("constraint %q is not a regexp: %v", rtarget, err)
	}
	for model, want := range map[string]bool{
		"NVIDIA H100 80GB HBM3": true, "H100": true, "NVIDIA H100-SXM": true, "nvidia h100": true,
		"NVIDIA H1000": false, "NVIDIA GH100X": false, "NVIDIA A100": false,
	} {
		if re.MatchString(model) != want {
			t.Errorf("%q matches %s: %v, want %v", model, rtarget, !want, want)
		}
	}
}

func TestJSONDropsNulls(t *testing.T) {
	out, err := jobs.CleanJSON(map[string]any{"b": nil, "a": []any{map[string]any{"x": nil, "y": 1}}})
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"a\": [\n    {\n      \"y\": 1\n    }\n  ]\n}\n"
	if string(out) != want {
		t.Errorf("CleanJSON = %q, want %q", out, want)
	}
}

func equalStrings(v any, want []string) bool {
	got, ok := v.([]string)
	return ok && slices.Equal(got, want)
}

// A canary version of autoscaled functions at zero renders as a job of
// its own whose services are the functions' previews.
func TestRenderCanaryGolden(t *testing.T) {
	app := load(t, "../examples/autoscale.hcl")
	app.Deploy = &spec.Deploy{Strategy: spec.StrategyCanary}
	job, err := jobs.RenderCanary(app, testConfig, []string{"web"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := jobs.JSON(job)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "autoscale.canary.job.json"), b)
	if *job.ID != "dev--autoscale--canary" || job.TaskGroups[0].Services[0].Name != "dev--autoscale-web--canary" {
		t.Errorf("job %s, service %s", *job.ID, job.TaskGroups[0].Services[0].Name)
	}
	if u := job.TaskGroups[0].Update; *u.Canary != 0 || *job.TaskGroups[0].Count != 0 {
		t.Errorf("canary job group: count %d, update canaries %d; want 0 and 0", *job.TaskGroups[0].Count, *u.Canary)
	}
	// The agent and drain URLs are the canary job's, which it is signed for.
	for _, a := range job.TaskGroups[0].Tasks[0].Artifacts {
		if !strings.Contains(*a.GetterSource, "job=dev--autoscale--canary") {
			t.Errorf("artifact %s is not the canary job's", *a.GetterSource)
		}
	}
	if _, err := jobs.RenderCanary(load(t, "../examples/hello.hcl"), testConfig, []string{"web"}); err == nil {
		t.Error("RenderCanary of a function that is not autoscaled did not fail")
	}
}

// TestRenderGoldenProxyInTraefik renders examples/autoscale.hcl for the
// proxy inside Traefik (--proxy-plugin caravan): its routers end in the
// caravan plugin and name noop@internal, and its job is the same as with
// the standalone proxies.
func TestRenderGoldenProxyInTraefik(t *testing.T) {
	cfg := testConfig
	cfg.ProxyPlugin = "caravan"
	app := load(t, "../examples/autoscale.hcl")
	r, err := jobs.Render(app, cfg)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	routes, err := jobs.CleanJSON(router.Merge(r.Routes))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "autoscale.intraefik.routes.json"), routes)
	job, err := jobs.JSON(r.Job)
	if err != nil {
		t.Fatal(err)
	}
	standalone, err := jobs.JSON(render(t, load(t, "../examples/autoscale.hcl")).Job)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(job, standalone) {
		t.Errorf("the job differs with the proxy inside Traefik:\n%s", job)
	}
}
