package orchestrator

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/caravanhq/caravan/router"
)

// firstHarness is a harness whose orchestrator publishes first routes,
// whose proxy lists only passing containers (as Traefik does), and whose
// new shop app's container is an HTTP server answering status, registered
// in Consul failing its check until the test says otherwise. It returns
// the container's URL.
func firstHarness(t *testing.T, status int) (*harness, string) {
	h := newHarness(t)
	h.o.sessions = h.consul
	h.proxy.passingOnly = true
	container := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
	t.Cleanup(container.Close)
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(container.URL, "http://"))
	p, _ := strconv.Atoi(port)
	h.nomad.onRegister = func(job *nomad.Job, dep *nomad.Deployment) {
		dep.Status = nomad.DeploymentStatusRunning
		dep.TaskGroups["web"].HealthyAllocs = 0
	}
	h.nomad.onPlaced = func(allocs []*nomad.Allocation) {
		for _, a := range allocs {
			a.AllocatedResources = &nomad.AllocatedResources{Shared: nomad.AllocatedSharedResources{
				Ports: []nomad.PortMapping{{Label: "http", Value: p, HostIP: host}}}}
			h.consul.register(shopService, fakeInstance{Instance: Instance{ID: "_nomad-task-" + a.ID, Address: host, Port: p}})
		}
	}
	return h, container.URL
}

// firstKeys are the KV keys of first routes.
func (h *harness) firstKeys() []string {
	var out []string
	for _, k := range h.consul.keys() {
		if strings.Contains(k, router.FirstSuffix) {
			out = append(out, k)
		}
	}
	return out
}

// awaitNoFirstRoute fails the test unless every first route and its
// session are gone within 10 seconds.
func (h *harness) awaitNoFirstRoute(why string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(h.firstKeys()) > 0 || h.consul.liveSessions() > 0 {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: first route keys %v, %d sessions left", why, h.firstKeys(), h.consul.liveSessions())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewAppServesFromItsFirstRouteUntilConsulsRouteTakesOver(t *testing.T) {
	h, container := firstHarness(t, http.StatusOK)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Its check never passed: the deploy returns on the first route.
	if _, err := h.o.Deploy(ctx, ci, DeployRequest{Spec: shopSpec("hi"), Timeout: 10 * time.Second}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	svc := testRouter.KVRoot + "/http/services/" + shopService + router.FirstSuffix + "/loadBalancer/servers/0/url"
	if got := h.consul.kv[svc]; got != container {
		t.Fatalf("first route's server = %q, want %q; first route keys: %v", got, container, h.firstKeys())
	}
	for _, k := range h.firstKeys() {
		if h.consul.held[k] == "" {
			t.Errorf("key %s is not held by a session: a stopped server would leave it behind", k)
		}
	}
	// Consul's route takes over: the copy goes.
	h.consul.setPassing(shopService, true)
	h.awaitNoFirstRoute("after Traefik served the route from Consul")
}

func TestFailedNewAppLeavesNoFirstRoute(t *testing.T) {
	h, _ := firstHarness(t, http.StatusOK)
	// The probe through the proxy fails once the first route is written.
	h.prober.onProbe = func(router.Route) {
		deadline := time.Now().Add(5 * time.Second)
		for len(h.firstKeys()) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	h.prober.fail["web"] = errors.New("502 Bad Gateway")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.o.Deploy(ctx, ci, DeployRequest{Spec: shopSpec("hi"), Timeout: 10 * time.Second}); err == nil {
		t.Fatal("deploy succeeded; its probe failed")
	}
	// Gone before the deploy returned, not later.
	if keys, n := h.firstKeys(), h.consul.liveSessions(); len(keys) > 0 || n > 0 {
		t.Fatalf("a failed deploy left first route keys %v and %d sessions", keys, n)
	}
}

func TestFirstRouteGoesWithItsContainer(t *testing.T) {
	h, _ := firstHarness(t, http.StatusOK)
	if _, err := h.o.Deploy(context.Background(), ci, DeployRequest{Spec: shopSpec("hi"), Timeout: 10 * time.Second}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if len(h.firstKeys()) == 0 {
		t.Fatal("no first route")
	}
	// The container dies before its check ever passed.
	h.nomad.mu.Lock()
	for _, a := range h.nomad.allocs {
		a.ClientStatus = nomad.AllocClientStatusFailed
		a.ModifyIndex = h.nomad.bump()
	}
	h.nomad.mu.Unlock()
	h.awaitNoFirstRoute("after its container stopped")
}

// A first route is written as soon as Nomad places its container, but a
// container that does not answer its health path 2xx does not count as
// placed: the deploy waits for its check to pass in Consul.
func TestAContainerThatDoesNotAnswerIsNotPlacedByItsFirstRoute(t *testing.T) {
	h, container := firstHarness(t, http.StatusServiceUnavailable)
	done := make(chan error, 1)
	go func() {
		_, err := h.o.Deploy(context.Background(), ci, DeployRequest{Spec: shopSpec("hi"), Timeout: 10 * time.Second})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("deploy returned (%v) before its container answered or passed its check", err)
	case <-time.After(200 * time.Millisecond):
	}
	svc := testRouter.KVRoot + "/http/services/" + shopService + router.FirstSuffix + "/loadBalancer/servers/0/url"
	if got := h.canaryKV(svc); got != container {
		t.Errorf("first route's server = %q, want the placed container %q", got, container)
	}
	h.consul.setPassing(shopService, true)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("deploy: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("deploy did not return once its check passed")
	}
	h.awaitNoFirstRoute("after Traefik served the route from Consul")
}

func TestAllocURL(t *testing.T) {
	for _, tc := range []struct {
		name  string
		alloc *nomad.Allocation
		want  string
	}{
		{"group port", &nomad.Allocation{AllocatedResources: &nomad.AllocatedResources{Shared: nomad.AllocatedSharedResources{
			Ports: []nomad.PortMapping{{Label: "other", Value: 1, HostIP: "10.0.0.1"}, {Label: "http", Value: 25000, HostIP: "10.0.0.2"}}}}}, "http://10.0.0.2:25000"},
		{"network's dynamic port", &nomad.Allocation{AllocatedResources: &nomad.AllocatedResources{Shared: nomad.AllocatedSharedResources{
			Networks: []*nomad.NetworkResource{{IP: "::1", DynamicPorts: []nomad.Port{{Label: "http", Value: 25001}}}}}}}, "http://[::1]:25001"},
		{"none", &nomad.Allocation{}, ""},
	} {
		got, err := allocURL(tc.alloc)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("%s: allocURL = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

// TestFirstRouteOfAContainerNomadHasNotCalledRunning: a container that
// answers on its allocation's port gets its first route before its client
// reports it running.
func TestFirstRouteOfAContainerNomadHasNotCalledRunning(t *testing.T) {
	h, container := firstHarness(t, http.StatusOK)
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(container, "http://"))
	p, _ := strconv.Atoi(port)
	h.nomad.mu.Lock()
	a := h.nomad.addAlloc("dev--shop", "web", "", nomad.AllocClientStatusPending)
	a.AllocatedResources = &nomad.AllocatedResources{Shared: nomad.AllocatedSharedResources{
		Ports: []nomad.PortMapping{{Label: "http", Value: p, HostIP: host}}}}
	h.nomad.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := h.o.placedContainer(ctx, "dev--shop", "web")
	if err != nil || got.url != container || got.allocID != a.ID {
		t.Fatalf("placedContainer = %+v, %v; want %s of %s", got, err, container, a.ID)
	}
	if err := answers(ctx, got.url, "/"); err != nil {
		t.Fatalf("answers: %v", err)
	}
}
