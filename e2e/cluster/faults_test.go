package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// TestClusterLostClient: under load, a Nomad client is lost: its agent
// and every task below it die at once (SIGKILL, nothing deregisters).
// Nomad marks the node down, the app's allocations come back on the other
// client, and the routes follow (Consul's checks of the dead containers
// fail, Traefik drops them). It prints the requests that failed and when.
func TestClusterLostClient(t *testing.T) {
	const job = "e2e--survivor"
	purge(t, job)
	res := deploy(t, env.client, "survivor.hcl", nodeServer("survivor", "up\n", 2), api.DeployBody{})
	url := res.Functions[0].URL
	answers(t, url, "up\n")
	if on, err := onNodes(job); err != nil || on["nomad-client-0"] != 1 || on["nomad-client-1"] != 1 {
		t.Fatalf("containers per client: %v (%v), want one on each", on, err)
	}

	stop := make(chan struct{})
	l := runLoad(context.Background(), url+"/", 50, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-l.done
	}()
	eventually(t, time.Minute, "100 requests before the fault", func() error {
		if n := l.sent.Load(); n < 100 {
			return fmt.Errorf("%d sent", n)
		}
		return nil
	})
	sentBefore, failedBefore := l.sent.Load(), l.failed.Load()

	lost := env.nodes["nomad-client-0"]
	killed := time.Now()
	if err := env.stack.Kill("nomad-client-0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restartClient(t, "nomad-client-0") })

	eventually(t, 2*time.Minute, "Nomad marks the lost client down", func() error {
		n, _, err := env.nomad.Nodes().Info(lost, nil)
		if err != nil {
			return err
		}
		if n.Status != "down" {
			return fmt.Errorf("node is %s", n.Status)
		}
		return nil
	})
	down := time.Since(killed)
	eventually(t, 2*time.Minute, "both containers run on the other client", func() error {
		on, err := onNodes(job)
		if err != nil {
			return err
		}
		if on["nomad-client-1"] != 2 {
			return fmt.Errorf("containers per client: %v", on)
		}
		return nil
	})
	replaced := time.Since(killed)
	// Routes have followed once no request has failed for 5s.
	eventually(t, time.Minute, "no failed request for 5s", func() error {
		if last := l.lastFailure(); !last.IsZero() && time.Since(last) < 5*time.Second {
			return fmt.Errorf("a request failed %s ago", time.Since(last).Round(time.Millisecond))
		}
		return nil
	})
	answers(t, url, "up\n")
	close(stop)
	<-l.done
	lastFail := "none failed"
	if last := l.lastFailure(); last.After(killed) {
		lastFail = "the last failed " + last.Sub(killed).Round(time.Millisecond).String() + " after the kill"
	}
	t.Logf("lost client: %d requests at 50/s, %d before the kill (%d failed); %d failed after it (first: %v); %s; node down after %s, both containers on the other client after %s",
		l.sent.Load(), sentBefore, failedBefore, l.failed.Load()-failedBefore, l.firstErrors, lastFail,
		down.Round(time.Millisecond), replaced.Round(time.Millisecond))
}

// restartClient starts a killed Nomad client again with its data
// directory and waits until it is ready (and its node eligible).
func restartClient(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.stack.Restart(ctx, name); err != nil {
		t.Logf("restarting %s: %v", name, err)
		return
	}
	eventually(t, 2*time.Minute, name+" is ready again", func() error {
		ready, err := env.stack.ReadyClients(ctx)
		if err != nil {
			return err
		}
		if _, ok := ready[name]; !ok {
			return fmt.Errorf("%s is not ready", name)
		}
		return nil
	})
}
