//go:build bench

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caravanhq/caravan/orchestrator"
	"github.com/caravanhq/caravan/router"
	consul "github.com/hashicorp/consul/api"
	"github.com/traefik/traefik/v3/pkg/config/dynamic"
)

// TestBenchKVRoute prints how long Traefik takes to serve a router caravan
// writes to its KV (a first route, a split), as its API reports it: the
// share of a deploy's time that is Traefik's own. Each route is written in
// one transaction and Traefik's API polled every 5 ms until it lists it;
// alone (1 s apart, beyond providersThrottleDuration) and in threes 50 ms
// apart (three functions' first routes, as a new app's deploy writes them).
func TestBenchKVRoute(t *testing.T) {
	api := orchestrator.TraefikAPI{Addr: env.stack.TraefikAPI()}
	rc := router.DefaultConfig
	ctx := context.Background()
	write := func(name string) time.Time {
		cfg := &dynamic.Configuration{HTTP: &dynamic.HTTPConfiguration{
			Routers: map[string]*dynamic.Router{name: {EntryPoints: []string{rc.EntryPoint},
				Rule: "Host(`" + name + ".kvbench.test`)", Service: name}},
			Services: map[string]*dynamic.Service{name: {LoadBalancer: &dynamic.ServersLoadBalancer{
				Servers: []dynamic.Server{{URL: "http://127.0.0.1:9"}}}}},
		}}
		pairs, err := router.KV(rc.KVRoot, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var ops consul.KVTxnOps
		for k, v := range pairs {
			ops = append(ops, &consul.KVTxnOp{Verb: consul.KVSet, Key: k, Value: []byte(v)})
		}
		t.Cleanup(func() {
			env.consul.KV().DeleteTree(rc.KVRoot+"/http/routers/"+name+"/", nil)
			env.consul.KV().DeleteTree(rc.KVRoot+"/http/services/"+name+"/", nil)
		})
		began := time.Now()
		if ok, _, _, err := env.consul.KV().Txn(ops, nil); err != nil || !ok {
			t.Fatalf("writing %s: %v", name, err)
		}
		return began
	}
	seen := func(name string, began time.Time) time.Duration {
		deadline := began.Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if s, err := api.RouterService(ctx, name+"@consul"); err == nil && s != "" {
				return time.Since(began)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("Traefik never served %s", name)
		return 0
	}
	var alone, third []time.Duration
	for i := range 10 {
		name := fmt.Sprintf("kvbench-alone-%d", i)
		alone = append(alone, seen(name, write(name)))
		time.Sleep(time.Second)
	}
	for i := range 5 {
		var names []string
		var starts []time.Time
		for j := range 3 {
			name := fmt.Sprintf("kvbench-three-%d-%d", i, j)
			names, starts = append(names, name), append(starts, write(name))
			time.Sleep(50 * time.Millisecond)
		}
		third = append(third, seen(names[2], starts[2]))
		time.Sleep(time.Second)
	}
	am, ax := stats(alone)
	tm, tx := stats(third)
	fmt.Printf("\nTraefik KV route: %s\n", benchSetup())
	fmt.Printf("%-44s median %8s  max %8s  (%d routes)\n    one transaction written to Consul KV, 1 s after the previous, until Traefik's API lists the router (polled every 5 ms)\n",
		"a KV router written alone until served", am.Round(time.Millisecond), ax.Round(time.Millisecond), len(alone))
	fmt.Printf("%-44s median %8s  max %8s  (%d runs)\n    three routers written 50 ms apart, from the third's write until Traefik lists it (providersThrottleDuration holds changes that close together)\n",
		"the third of three KV routers 50 ms apart", tm.Round(time.Millisecond), tx.Round(time.Millisecond), len(third))
}
