//go:build bench

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
)

// registerDirect is the stack's floor for a new app: the job caravan
// renders for src, registered straight with Nomad's API (no caravan server,
// no records, no checks but the clock's), timed from the spec until every
// URL answers 200 through Traefik over verified TLS. Its job is purged
// before it returns.
func registerDirect(t *testing.T, src string) time.Duration {
	t.Helper()
	began := time.Now()
	app, diags := spec.Parse([]byte(src), "floor.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	// What the tests' caravan server renders with (see startServer).
	rc := router.DefaultConfig
	rc.Domain, rc.HTTPSPort, rc.AuthURL = env.stack.Domain, env.stack.Ports.TraefikWebsecure, router.AuthURL(env.server.Addr())
	r, err := jobs.Render(app, rc)
	if err != nil {
		t.Fatal(err)
	}
	ensureNamespace(t, app.Workspace)
	if _, _, err := env.nomad.Jobs().Register(r.Job, nil); err != nil {
		t.Fatalf("registering %s: %v", *r.Job.ID, err)
	}
	defer env.nomad.Jobs().Deregister(*r.Job.ID, true, nsw(*r.Job.ID))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(r.Routes))
	for i, rt := range r.Routes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = untilVerified200(ctx, rt.URL+"/")
		}()
	}
	wg.Wait()
	took := time.Since(began)
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return took
}

// untilVerified200 polls url every 20 ms until it answers 200 over a
// certificate that verifies (env.https), or ctx ends.
func untilVerified200(ctx context.Context, url string) error {
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := env.https.Do(req)
		if err == nil {
			drain(resp)
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("GET %s: no 200 over verified TLS: %v", url, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
