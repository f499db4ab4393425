//go:build bench

package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// benchTree writes a 50 MiB tree (random bytes: gzip cannot shrink it)
// and a server that answers marker.
func benchTree(t *testing.T, marker string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "model.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, 50<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	js := fmt.Sprintf(`require("http").createServer((q, s) => s.end(%q)).listen(process.env.PORT, process.env.HOST);`, marker+"\n")
	os.WriteFile(filepath.Join(dir, "server.js"), []byte(js), 0o644)
	return dir
}

// packUploadDeploy does what `caravan deploy` does, timed in-process:
// collect, hash, ask which bundles the server lacks, pack and upload
// those, deploy.
func packUploadDeploy(t *testing.T, dir, app string) (*api.DeployResult, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	id, uploaded := uploadBundle(ctx, t, dir)
	spec := fmt.Sprintf(bundledSpec, app)
	res, err := env.client.DeployBody(ctx, api.DeployBody{Filename: filepath.Join(dir, app+".hcl"), Spec: spec, Bundles: map[string]string{"web": id}})
	if err != nil {
		t.Fatal(err)
	}
	return res, uploaded
}

// fetchTime is how long the artifact hook of job's allocation took: from
// its "Downloading Artifacts" event to the task's next event.
func fetchTime(t *testing.T, job string) time.Duration {
	t.Helper()
	allocs, _, err := env.nomad.Jobs().Allocations(job, false, nsq(job))
	if err != nil || len(allocs) == 0 {
		t.Fatalf("allocations of %s: %v", job, err)
	}
	a, _, err := env.nomad.Allocations().Info(allocs[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs := a.TaskStates["web"].Events
	for i, e := range evs {
		if e.Type == "Downloading Artifacts" && i+1 < len(evs) {
			return time.Duration(evs[i+1].Time - e.Time)
		}
	}
	t.Fatalf("no artifact download in %s's events", job)
	return 0
}

// TestBenchBundles prints what a code bundle costs a deploy: a cold
// 50 MiB tree (pack, upload, deploy, fetched by Nomad), an unchanged one,
// and the same app without a bundle, in one run.
func TestBenchBundles(t *testing.T) {
	const runs = 3
	var cold, unchanged, plain, fetch []time.Duration
	for i := range runs {
		app := fmt.Sprintf("bigcode%d", i)
		purge(t, "e2e--"+app)
		dir := benchTree(t, app)
		began := time.Now()
		res, uploaded := packUploadDeploy(t, dir, app)
		if !uploaded || !res.Changed {
			t.Fatal("the cold deploy uploaded nothing or changed nothing")
		}
		answers(t, res.Functions[0].URL, app+"\n")
		cold = append(cold, time.Since(began))
		fetch = append(fetch, fetchTime(t, "e2e--"+app))

		began = time.Now()
		if res, uploaded := packUploadDeploy(t, dir, app); uploaded || res.Changed {
			t.Fatal("the unchanged tree uploaded or changed something")
		}
		unchanged = append(unchanged, time.Since(began))

		plainApp := fmt.Sprintf("nocode%d", i)
		purge(t, "e2e--"+plainApp)
		began = time.Now()
		res = deploy(t, plainApp+".hcl", nodeServer(plainApp, plainApp+"\n", false), api.DeployBody{})
		answers(t, res.Functions[0].URL, plainApp+"\n")
		plain = append(plain, time.Since(began))
		for _, a := range []string{app, plainApp} {
			env.client.Stop(context.Background(), a, api.ChangeBody{Workspace: "e2e"})
		}
	}
	report := func(name string, ds []time.Duration, how string) {
		m, x := stats(ds)
		fmt.Printf("%-44s median %8s  max %8s  (%d runs)\n    %s\n", name, m.Round(time.Millisecond), x.Round(time.Millisecond), len(ds), how)
	}
	fmt.Printf("\ncaravan bundle bench: %s\n", benchSetup())
	report("50 MiB tree, cold: pack+upload+deploy", cold,
		"collect, hash, ask, pack and stream the upload (verified, spooled, stored), deploy until the URL answers 200; random bytes, so gzip saves nothing")
	report("artifact fetch in the allocation's start", fetch, "Nomad's task events: from Downloading Artifacts to the next event (fetch, checksum, unpack of 50 MiB)")
	report("50 MiB tree, unchanged: hash+ask+deploy", unchanged, "collect, hash, ask the server (it has it), deploy: a no-op")
	report("same app without a bundle, deploy", plain, "the same one-function app with its code inline, no bundle, same run")
}
