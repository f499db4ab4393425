package autoscaler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// The autoscaler reads and scales a job in its workspace's namespace, with
// check-and-set against the version it read.
func TestClientsScaleInTheJobsNamespace(t *testing.T) {
	var got []string
	var scale nomad.ScalingRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path+" ns="+r.URL.Query().Get("namespace"))
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/versions"):
			w.Write([]byte(`{"Versions":[{"ID":"acme.prod--shop","Version":3,"JobModifyIndex":42,"TaskGroups":[{"Name":"web","Count":2}]}]}`))
		case strings.HasSuffix(r.URL.Path, "/deployment"):
			w.Write([]byte(`{"ID":"d","JobVersion":3,"Status":"successful"}`))
		case r.Method == http.MethodPut:
			json.NewDecoder(r.Body).Decode(&scale)
			w.Write([]byte(`{}`))
		default:
			w.Write([]byte(`{"TaskGroups":{"web":{"Desired":2}}}`))
		}
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
	want := []string{"GET /v1/job/acme.prod--shop/scale ns=caravan-acme", "GET /v1/job/acme.prod--shop/versions ns=caravan-acme",
		"GET /v1/job/acme.prod--shop/deployment ns=caravan-acme", "PUT /v1/job/acme.prod--shop/scale ns=caravan-acme"}
	if !slices.Equal(got, want) {
		t.Errorf("requests %q, want %q", got, want)
	}
	if scale.JobModifyIndex != 42 || scale.Count == nil || *scale.Count != 3 {
		t.Errorf("scale request %+v, want count 3 at job modify index 42", scale)
	}
}

// A scale while a deploy's version waits for its deployment is held back,
// without a write.
func TestClientsScaleWaitsForARegistration(t *testing.T) {
	var puts int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPut:
			puts++
			w.Write([]byte(`{}`))
		case strings.HasSuffix(r.URL.Path, "/versions"):
			now := time.Now().UnixNano()
			fmt.Fprintf(w, `{"Versions":[{"ID":"shop","Version":4,"SubmitTime":%d,"JobModifyIndex":50,"Meta":{"caravan.version":"2"},"TaskGroups":[{"Name":"web","Count":1}]},
				{"ID":"shop","Version":3,"SubmitTime":%d,"JobModifyIndex":42,"Meta":{"caravan.version":"1"},"TaskGroups":[{"Name":"web","Count":1}]}]}`, now, now-int64(time.Minute))
		case strings.HasSuffix(r.URL.Path, "/deployment"):
			w.Write([]byte(`{"ID":"d","JobVersion":3,"Status":"successful"}`))
		}
	}))
	defer srv.Close()
	nc, err := nomad.NewClient(&nomad.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	err = (&Clients{Nomad: nc}).Scale(context.Background(), "shop", "web", 2, "load")
	if !errors.Is(err, ErrJobChanging) || puts != 0 {
		t.Errorf("Scale = %v with %d writes, want ErrJobChanging and none", err, puts)
	}
}
