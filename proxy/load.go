package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Report is the answer of a proxy's load endpoint (GET /v1/load on its
// admin address): every function it knows, for the autoscaler, which adds
// the reports of every proxy.
type Report struct {
	At time.Time `json:"at"`
	// Index counts the times a function's queue started at this proxy;
	// GET /v1/load?index=N&wait=D answers once it is past N (or after D).
	Index     uint64         `json:"index"`
	Functions []FunctionLoad `json:"functions"`
}

// FunctionLoad is one function's load at one proxy.
type FunctionLoad struct {
	// Function is its Consul service name.
	Function string `json:"function"`
	// InFlight is how many of its requests containers are serving now;
	// Queued how many wait for room.
	InFlight int `json:"in_flight"`
	Queued   int `json:"queued"`
	// Ready is how many containers may take requests (listed, not
	// draining, not ejected after a failure); Draining how many take none
	// but still serve their last ones.
	Ready    int `json:"ready"`
	Draining int `json:"draining"`
	// Starting is how many containers discovery lists whose checks do
	// not pass yet.
	Starting  int            `json:"starting"`
	MaxInputs int            `json:"max_inputs"`
	Instances []InstanceLoad `json:"instances"`
}

// InstanceLoad is one container's load at one proxy.
type InstanceLoad struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	InFlight int    `json:"in_flight"`
	// Draining: Drain asked, or discovery no longer lists it.
	Draining bool `json:"draining"`
	// Ejected: a request to it failed moments ago.
	Ejected bool `json:"ejected"`
}

// DrainResult is the answer of POST /v1/drain.
type DrainResult struct {
	Function string `json:"function"`
	Instance string `json:"instance"`
	// InFlight is how many requests it still serves at this proxy; Drained
	// is InFlight == 0.
	InFlight int  `json:"in_flight"`
	Drained  bool `json:"drained"`
}

// FetchLoad reads the load report of the proxy whose admin address is
// base (http://host:port).
func FetchLoad(ctx context.Context, client *http.Client, base string) (Report, error) {
	return fetchLoad(ctx, client, base+LoadPath)
}

// WatchLoad is FetchLoad once the report's Index is past index, or after
// wait (at most 5 minutes).
func WatchLoad(ctx context.Context, client *http.Client, base string, index uint64, wait time.Duration) (Report, error) {
	return fetchLoad(ctx, client, fmt.Sprintf("%s%s?index=%d&wait=%s", base, LoadPath, index, wait))
}

func fetchLoad(ctx context.Context, client *http.Client, url string) (Report, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Report{}, err
	}
	res, err := client.Do(req)
	if err != nil {
		return Report{}, fmt.Errorf("proxy load: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return Report{}, fmt.Errorf("proxy load: %s answered %s", url, res.Status)
	}
	var r Report
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return Report{}, fmt.Errorf("proxy load: %w", err)
	}
	return r, nil
}
