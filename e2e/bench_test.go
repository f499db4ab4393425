//go:build bench

package e2e

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/devstack"
)

// benchSetup says what the bench ran on, from the stack's pinned versions
// and this machine, not from a past run's notes.
func benchSetup() string {
	return fmt.Sprintf("real Nomad %s, Consul %s, Traefik %s and Pebble on 127.0.0.1, %d CPUs (runtime.NumCPU) shared by everything",
		devstack.Nomad.Version, devstack.Consul.Version, devstack.Traefik.Version, runtime.NumCPU())
}

// threeFunctions is an app of three web functions.
func threeFunctions(app, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "app %q {\n  workspace = \"e2e\"\n", app)
	for _, fn := range []string{"api", "web", "admin"} {
		js := fmt.Sprintf(`require("http").createServer((q, s) => s.end(%q)).listen(process.env.PORT, process.env.HOST);`, fn+" "+body+"\n")
		fmt.Fprintf(&b, "  function %q {\n    command = \"node\"\n    args = [\"-e\", %q]\n    resources { memory = 64 }\n    web {}\n  }\n", fn, js)
	}
	b.WriteString("}\n")
	return b.String()
}

func stats(ds []time.Duration) (median, max time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

// TestBench prints caravan's figures from real runs on the local stack
// (`just bench`). It asserts nothing about speed.
func TestBench(t *testing.T) {
	const runs = 5
	ctx := context.Background()
	var floor, fresh, noop, rolling []time.Duration
	for i := range runs {
		// The floor first, then caravan, alternating, so both meet the
		// same machine; each a new app of new hostnames.
		purge(t, fmt.Sprintf("e2e--floor%d", i))
		floor = append(floor, registerDirect(t, threeFunctions(fmt.Sprintf("floor%d", i), "v1")))

		app := fmt.Sprintf("bench%d", i)
		purge(t, "e2e--"+app)
		began := time.Now()
		res := deploy(t, app+".hcl", threeFunctions(app, "v1"), api.DeployBody{})
		// Deploy returns once every URL answered through Traefik over
		// verified TLS; check that independently before stopping the clock.
		for _, f := range res.Functions {
			if status, _, err := get(t, f.URL); err != nil || status != 200 {
				t.Fatalf("%s: %d %v", f.URL, status, err)
			}
		}
		fresh = append(fresh, time.Since(began))

		began = time.Now()
		if r := deploy(t, app+".hcl", threeFunctions(app, "v1"), api.DeployBody{}); r.Changed {
			t.Fatal("no-op deploy changed something")
		}
		noop = append(noop, time.Since(began))

		settled(t, "e2e--"+app)
		began = time.Now()
		deploy(t, app+".hcl", threeFunctions(app, "v2"), api.DeployBody{Strategy: "rolling"})
		rolling = append(rolling, time.Since(began))

		if _, err := env.client.Stop(ctx, app, api.ChangeBody{Workspace: "e2e"}); err != nil {
			t.Fatal(err)
		}
	}
	report := func(name string, ds []time.Duration, how string) {
		m, x := stats(ds)
		fmt.Printf("%-44s median %8s  max %8s  (%d runs)\n    %s\n", name, m.Round(time.Millisecond), x.Round(time.Millisecond), len(ds), how)
	}
	fmt.Printf("\ncaravan bench: %s\n", benchSetup())
	report("new 3-function app, direct Nomad registration", floor,
		"the floor: the job caravan renders, registered with Nomad's API, timed from the spec until every URL answers 200 through Traefik over verified TLS (a GET every 20 ms per URL)")
	report("new 3-function app, deploy to all URLs 200", fresh,
		"wall clock around `deploy` (API call: validate, register, Nomad rollout, Traefik route, probe) plus one GET per URL over verified TLS; runs alternate with the direct registration")
	fm, fx := stats(floor)
	cm, cx := stats(fresh)
	fmt.Printf("%-44s median %8.2f  max %8.2f\n    caravan deploy's median over the direct registration's median, and max over max, same run\n",
		"new 3-function app, caravan / direct", cm.Seconds()/fm.Seconds(), cx.Seconds()/fx.Seconds())
	report("no-op deploy (unchanged spec)", noop, "wall clock around the API call that finds the spec hash unchanged")
	report("rolling redeploy of 3 functions", rolling,
		"wall clock around `deploy --strategy rolling` of a changed spec, from a live version Nomad calls stable, until new containers are healthy, promoted, and every URL answers")
}

// settled waits until Nomad's latest deployment of job id is successful: a
// rollout timed from there starts from a stable version, as one does that
// is not deployed within a second or two of the previous one (a version
// deployed sooner first waits for Nomad's verdict on the live one).
func settled(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		dep, _, err := env.nomad.Jobs().LatestDeployment(id, nsq(id))
		if err == nil && dep != nil && dep.Status == "successful" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Nomad's deployment of %s did not succeed within a minute: %+v %v", id, dep, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scaleFromZeroSpec is the spec of app's web function for the benches of
// scaling: node running js, from zero containers up to most, back down
// after window idle, healthy once /healthz answers.
func scaleFromZeroSpec(app, js string, most int, window string) string {
	return fmt.Sprintf(`app %q {
  workspace = "e2e"
  function "web" {
    command = "node"
    args    = ["-e", %s]
    resources {
      memory = 64
    }
    min_containers   = 0
    max_containers   = %d
    scaledown_window = %q
    web {
      health_path = "/healthz"
    }
  }
}
`, app, strconv.Quote(js), most, window)
}
