package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
)

func history(t *testing.T, app string) *orchestrator.History {
	t.Helper()
	h, err := env.client.History(context.Background(), app, api.ChangeBody{Workspace: "e2e"})
	if err != nil {
		t.Fatalf("history of %s: %v", app, err)
	}
	return h
}

func allocIDs(t *testing.T, jobID string) map[string]bool {
	t.Helper()
	allocs, _, err := env.nomad.Jobs().Allocations(jobID, false, nsq(jobID))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, a := range allocs {
		if a.ClientStatus == "running" && a.DesiredStatus == "run" {
			ids[a.ID] = true
		}
	}
	return ids
}

// TestLifecycle walks one app through deploy, update, rollover, rollback,
// stop and a fresh deploy, checking history at each step.
func TestLifecycle(t *testing.T) {
	const app, job = "life", "e2e--life"
	purge(t, job)
	ctx := context.Background()

	v1 := deploy(t, "life.hcl", nodeServer(app, "v1\n", false), api.DeployBody{Tag: "first", GitCommit: "0123456789abcdef", GitDirty: true})
	url := v1.Functions[0].URL
	v2 := deploy(t, "life.hcl", nodeServer(app, "v2\n", false), api.DeployBody{})
	if v1.Version != 1 || v2.Version != 2 {
		t.Fatalf("versions %d, %d; want 1, 2", v1.Version, v2.Version)
	}
	answers(t, url, "v2\n")

	before := allocIDs(t, job)
	ro, err := env.client.Rollover(ctx, app, api.ChangeBody{Workspace: "e2e"})
	if err != nil || ro.Version != 3 || ro.Kind != orchestrator.KindRollover {
		t.Fatalf("rollover: %+v %v; want version 3", ro, err)
	}
	after := allocIDs(t, job)
	for id := range after {
		if before[id] {
			t.Errorf("allocation %s survived the rollover", id)
		}
	}
	answers(t, url, "v2\n")

	rb, err := env.client.Rollback(ctx, app, api.ChangeBody{Workspace: "e2e", Version: 1})
	if err != nil || rb.Version != 4 {
		t.Fatalf("rollback to 1: %+v %v; want version 4", rb, err)
	}
	answers(t, url, "v1\n")
	// The default rollback goes to the version live before the current one.
	rb, err = env.client.Rollback(ctx, app, api.ChangeBody{Workspace: "e2e"})
	if err != nil || rb.Version != 5 {
		t.Fatalf("default rollback: %+v %v; want version 5", rb, err)
	}
	answers(t, url, "v2\n")

	h := history(t, app)
	want := []struct {
		kind   api.VersionKind
		status api.VersionStatus
		of     int
	}{
		{"deploy", "superseded", 0}, {"deploy", "superseded", 0}, {"rollover", "superseded", 0},
		{"rollback", "superseded", 1}, {"rollback", "live", 3},
	}
	if len(h.Versions) != len(want) {
		t.Fatalf("history has %d versions, want %d: %+v", len(h.Versions), len(want), h.Versions)
	}
	// Names are free text; the token's ID is what tells two "e2e"s apart.
	id, _, _ := strings.Cut(strings.TrimPrefix(env.client.Token, "cvn_"), "_")
	for i, w := range want {
		v := h.Versions[i]
		if v.Version != i+1 || v.Kind != w.kind || v.Status != w.status || v.RollbackOf != w.of || v.Who != "e2e" || v.WhoID != id || v.SpecHash == "" {
			t.Errorf("version %d = %+v, want kind %s status %s rollback_of %d by e2e (%s)", i+1, v, w.kind, w.status, w.of, id)
		}
	}
	if v := h.Versions[0]; v.Tag != "first" || v.GitCommit != "0123456789abcdef" || !v.GitDirty {
		t.Errorf("version 1 lost its tag or git state: %+v", v)
	}

	// A no-op redeploy of the live spec (v2's, via rollback) changes nothing.
	noop := deploy(t, "life.hcl", nodeServer(app, "v2\n", false), api.DeployBody{})
	if noop.Changed || noop.Version != 5 {
		t.Fatalf("redeploying the live spec: changed=%v version=%d, want a no-op at 5", noop.Changed, noop.Version)
	}

	// Stop: routes go away (Traefik answers 404 rather than hanging).
	if _, err := env.client.Stop(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	eventually(t, 30*time.Second, url+" answers 404 after stop", func() error {
		status, _, err := get(t, url)
		if err != nil {
			return err
		}
		if status != http.StatusNotFound {
			return fmt.Errorf("status %d", status)
		}
		return nil
	})
	if _, _, err := env.nomad.Jobs().Info(job, nsq(job)); err == nil {
		t.Error("the Nomad job still exists after stop")
	}
	apps, _ := env.client.Apps(ctx)
	for _, a := range apps {
		if a.JobID == job && a.State != orchestrator.StateStopped {
			t.Errorf("app list after stop: state %s", a.State)
		}
	}
	var apiErr *api.APIError
	// A stopped app is still known: it has no live version to roll over, a
	// conflict with its state.
	if _, err := env.client.Rollover(ctx, app, api.ChangeBody{Workspace: "e2e"}); !errors.As(err, &apiErr) ||
		apiErr.Status != http.StatusConflict || apiErr.Kind != api.CodeConflict {
		t.Errorf("rollover of a stopped app: %v, want 409 conflict", err)
	}

	// Deploying the name again starts a new history.
	again := deploy(t, "life.hcl", nodeServer(app, "again\n", false), api.DeployBody{})
	if again.Version != 1 {
		t.Fatalf("deploy after stop: version %d, want 1 of a new history", again.Version)
	}
	answers(t, url, "again\n")
	if h := history(t, app); len(h.Versions) != 1 || h.App.Generation != 2 {
		t.Fatalf("history after redeploy: generation %d, %d versions; want 2, 1", h.App.Generation, len(h.Versions))
	}
}

// TestRollbackBeyondNomadsHistory rolls back to a version Nomad no longer
// keeps (it tracks six); caravan keeps every version's spec.
func TestRollbackBeyondNomadsHistory(t *testing.T) {
	const app, job = "deep", "e2e--deep"
	purge(t, job)
	var url string
	for i := 1; i <= 8; i++ {
		res := deploy(t, "deep.hcl", nodeServer(app, fmt.Sprintf("v%d\n", i), false), api.DeployBody{})
		url = res.Functions[0].URL
	}
	versions, _, _, err := env.nomad.Jobs().Versions(job, false, nsq(job))
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) >= 8 {
		t.Fatalf("Nomad still tracks all %d versions; the test proves nothing", len(versions))
	}
	res, err := env.client.Rollback(context.Background(), app, api.ChangeBody{Workspace: "e2e", Version: 1})
	if err != nil || res.Version != 9 {
		t.Fatalf("rollback to 1: %+v %v", res, err)
	}
	answers(t, url, "v1\n")
}

// TestConcurrentDeploysOfOneApp: two deploys at once both land, one after
// the other, with versions 2 and 3: none reused, none skipped.
func TestConcurrentDeploysOfOneApp(t *testing.T) {
	const app, job = "race", "e2e--race"
	purge(t, job)
	first := deploy(t, "race.hcl", nodeServer(app, "base\n", false), api.DeployBody{})
	var wg sync.WaitGroup
	results := make([]*orchestrator.DeployResult, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			results[i], errs[i] = env.client.Deploy(ctx, "race.hcl", []byte(nodeServer(app, fmt.Sprintf("racer %d\n", i), false)), 0)
		}()
	}
	wg.Wait()
	got := map[int]bool{}
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("concurrent deploy %d: %v", i, errs[i])
		}
		got[results[i].Version] = true
	}
	if !got[2] || !got[3] {
		t.Fatalf("concurrent deploys got versions %v, want 2 and 3", got)
	}
	h := history(t, app)
	if len(h.Versions) != 3 || h.App.LiveVersion != 3 || first.Version != 1 {
		t.Fatalf("history: %d versions, live %d; want 3, 3", len(h.Versions), h.App.LiveVersion)
	}
	for i, v := range h.Versions {
		if v.Version != i+1 {
			t.Errorf("history position %d holds version %d", i, v.Version)
		}
	}
}

// twoWeb is an app of two web functions, a and b, answering "a <body>" and
// "b <body>", with the given deploy block body.
func twoWeb(app, bodyA, bodyB, deployBlock string) string {
	fn := func(name, body string) string {
		js := fmt.Sprintf(`require("http").createServer((q, s) => s.end(%q)).listen(process.env.PORT, process.env.HOST);`, body)
		return fmt.Sprintf("  function %q {\n    command = \"node\"\n    args = [\"-e\", %q]\n    resources { memory = 64 }\n    web {}\n  }\n", name, js)
	}
	return fmt.Sprintf("app %q {\n  workspace = \"e2e\"\n  deploy {\n    %s\n  }\n", app, deployBlock) +
		fn("a", bodyA) + fn("b", bodyB) + "}\n"
}

// runningByGroup maps each task group of job to its running allocations.
func runningByGroup(t *testing.T, jobID string) map[string][]string {
	t.Helper()
	allocs, _, err := env.nomad.Jobs().Allocations(jobID, false, nsq(jobID))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, a := range allocs {
		if a.ClientStatus == "running" && a.DesiredStatus == "run" {
			out[a.TaskGroup] = append(out[a.TaskGroup], a.ID)
		}
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out
}

// Changing one function replaces its containers and no other's.
func TestUnchangedFunctionsKeepTheirContainers(t *testing.T) {
	const app, job = "pair", "e2e--pair"
	purge(t, job)
	deploy(t, "pair.hcl", twoWeb(app, "a1", "b1", `strategy = "rolling"`), api.DeployBody{})
	before := runningByGroup(t, job)
	res := deploy(t, "pair.hcl", twoWeb(app, "a2", "b1", `strategy = "rolling"`), api.DeployBody{})
	if res.Functions[0].Change != orchestrator.Updated || res.Functions[1].Change != orchestrator.Unchanged {
		t.Fatalf("changes %+v, want a updated and b unchanged", res.Functions)
	}
	answers(t, res.Functions[0].URL, "a2")
	after := runningByGroup(t, job)
	if !slices.Equal(before["b"], after["b"]) {
		t.Errorf("b's containers were replaced though b did not change: %v, then %v", before["b"], after["b"])
	}
	if slices.Equal(before["a"], after["a"]) {
		t.Errorf("a's containers were kept though a changed: %v", after["a"])
	}
	if again := deploy(t, "pair.hcl", twoWeb(app, "a2", "b1", `strategy = "rolling"`), api.DeployBody{}); again.Changed {
		t.Errorf("the same spec again deployed version %d", again.Version)
	}
}

// TestStopReturnsOnceItsURLAnswers404: when `caravan app stop` returns,
// Traefik routes the app's hostname nowhere; no second of 200s after it.
func TestStopReturnsOnceItsURLAnswers404(t *testing.T) {
	purge(t, "e2e--stopped")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := deploy(t, "stopped.hcl", nodeServer("stopped", "up\n", false), api.DeployBody{})
	url := res.Functions[0].URL
	answers(t, url, "up\n")
	began := time.Now()
	if _, err := env.client.Stop(ctx, "stopped", api.ChangeBody{Workspace: "e2e"}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	t.Logf("stop returned after %s", time.Since(began).Round(time.Millisecond))
	status, _, err := get(t, url)
	if err != nil || status != http.StatusNotFound {
		t.Fatalf("GET %s right after stop returned: %d %v, want 404", url, status, err)
	}
}
