package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
	"github.com/traefik/traefik/v3/pkg/config/label"
	"github.com/urfave/cli/v2"
)

// flagsConfig is the routes' configuration a command's flags give.
func flagsConfig(t *testing.T, cmd *cli.Command, args ...string) (router.Config, *cli.Context) {
	t.Helper()
	var cfg router.Config
	var ctx *cli.Context
	app := &cli.App{Commands: []*cli.Command{{Name: "x", Flags: cmd.Flags, Action: func(c *cli.Context) error {
		cfg, ctx = routerConfig(c), c
		return nil
	}}}}
	if err := app.Run(append([]string{"caravan", "x"}, args...)); err != nil {
		t.Fatal(err)
	}
	return cfg, ctx
}

// TestRenderUsesTheConfigADefaultServerDeploys: router and middleware
// names hash their settings, the forwardAuth address among them, so render
// must render with the address a default server gives Traefik.
func TestRenderUsesTheConfigADefaultServerDeploys(t *testing.T) {
	rendered, _ := flagsConfig(t, renderCommand())
	deployed, c := flagsConfig(t, serverCommand())
	// What server.New does with an empty AuthURL, on the default listener.
	if deployed.AuthURL == "" {
		deployed.AuthURL = router.AuthURL(c.String("listen"))
	}
	if rendered != deployed {
		t.Fatalf("render's configuration:\n%+v\nthe default server's:\n%+v", rendered, deployed)
	}
	if rendered.AuthURL != router.DefaultAuthURL {
		t.Fatalf("render's forwardAuth address is %q, want %q", rendered.AuthURL, router.DefaultAuthURL)
	}
	out, _, err := runCLI(t, "render", "--routes", "../../examples/multi.hcl")
	if err != nil || !strings.Contains(out, `"address": "`+router.DefaultAuthURL+`?workspace=shop"`) {
		t.Fatalf("render --routes: %v; the forwardAuth address is not the default server's:\n%s", err, out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "127.0.0.1:9000"}, "http://127.0.0.1:9000/v1/auth/proxy"},
		{[]string{"--listen", "127.0.0.1:9000", "--auth-url", "http://auth.internal/x"}, "http://auth.internal/x"},
		// Known only once the server listens; server.New fills it in.
		{[]string{"--listen", "127.0.0.1:0"}, ""},
		{[]string{"--listen", ":7474"}, ""},
	} {
		if got, _ := flagsConfig(t, serverCommand(), tc.args...); got.AuthURL != tc.want {
			t.Errorf("server %v: AuthURL %q, want %q", tc.args, got.AuthURL, tc.want)
		}
	}
}

// TestRenderRoutesAreTheJobsTags: `render --routes` prints exactly what
// the tags of the job `render` prints decode to, names included.
func TestRenderRoutesAreTheJobsTags(t *testing.T) {
	paths, _ := filepath.Glob("../../examples/*.hcl")
	if len(paths) == 0 {
		t.Fatal("no examples")
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			// Without proxies every route is in the containers' tags
			// (a proxied route is in Traefik's KV instead).
			routes, _, err := runCLI(t, "render", "--proxy-service=", "--routes", path)
			if err != nil {
				t.Fatal(err)
			}
			job, _, err := runCLI(t, "render", "--proxy-service=", path)
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Job struct {
					TaskGroups []struct{ Services []struct{ Tags []string } }
				}
			}
			// The app's job comes first; periodic and callable jobs have no routes.
			if err := json.NewDecoder(strings.NewReader(job)).Decode(&doc); err != nil {
				t.Fatal(err)
			}
			merged := &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{
				Routers: map[string]*dynamic.Router{}, Services: map[string]*dynamic.Service{}}}
			for _, g := range doc.Job.TaskGroups {
				for _, s := range g.Services {
					labels := map[string]string{}
					for _, tag := range s.Tags {
						if k, v, ok := strings.Cut(tag, "="); ok && k != "traefik.enable" {
							labels[k] = v
						}
					}
					conf, err := label.DecodeConfiguration(labels)
					if err != nil {
						t.Fatal(err)
					}
					merged = router.Merge([]router.Route{{Config: merged}, {Config: conf}})
				}
			}
			fromTags, err := jobs.CleanJSON(merged.HTTP)
			if err != nil {
				t.Fatal(err)
			}
			// Traefik's decoder fills its defaults in (a load balancer's
			// strategy, for one): put what render printed through the same
			// encoder and decoder before comparing.
			var printed dynamic.Configuration
			if err := json.Unmarshal([]byte(routes), &printed); err != nil {
				t.Fatal(err)
			}
			labels, err := label.EncodeConfiguration(&printed)
			if err != nil {
				t.Fatal(err)
			}
			decoded, err := label.DecodeConfiguration(labels)
			if err != nil {
				t.Fatal(err)
			}
			fromRender, err := jobs.CleanJSON(decoded.HTTP)
			if err != nil {
				t.Fatal(err)
			}
			if string(fromTags) != string(fromRender) {
				t.Fatalf("render --routes decodes to:\n%s\nthe job's tags decode to:\n%s", fromRender, fromTags)
			}
		})
	}
}
