package autoscaler

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

// The autoscaler reads and scales a job in its workspace's namespace.
func TestClientsScaleInTheJobsNamespace(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path+" ns="+r.URL.Query().Get("namespace"))
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"TaskGroups":{"web":{"Desired":2}}}`))
	}))
	defer srv.Close()
	nc, err := nomad.NewClient(&nomad.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	c := &Clients{Nomad: nc}
	if n, ok, err := c.Count(context.Background(), "acme.prod--shop", "web"); err != nil || !ok || n != 2 {
		t.Errorf("Count = %d %v %v", n, ok, err)
	}
	if err := c.Scale(context.Background(), "acme.prod--shop", "web", 3, "load"); err != nil {
		t.Error(err)
	}
	want := []string{"GET /v1/job/acme.prod--shop/scale ns=caravan-acme", "PUT /v1/job/acme.prod--shop/scale ns=caravan-acme"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("requests %q, want %q", got, want)
	}
}
