package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caravanhq/caravan/proxy"
	consul "github.com/hashicorp/consul/api"
)

// ProxyDrainer is Drainer over Consul (where the proxies register) and the
// proxies' admin APIs.
type ProxyDrainer struct {
	Consul *consul.Client
	// HTTP defaults to a client without timeout: each request has the
	// caller's deadline.
	HTTP *http.Client
}

var _ Drainer = (*ProxyDrainer)(nil)

// nomadServicePrefix begins the Consul service ID of every service Nomad
// registers for an allocation: _nomad-task-<alloc>-<workload>-<service>-<port>
// (nomad client/serviceregistration.MakeAllocServiceID).
const nomadServicePrefix = "_nomad-task-"

// allocInstances lists the containers of allocation alloc in a proxy's load
// report, as function and instance (Consul service ID). alloc is a full
// allocation ID (a UUID): a shorter one would match others.
func allocInstances(r proxy.Report, alloc string) [][2]string {
	if len(alloc) != 36 {
		return nil
	}
	prefix := nomadServicePrefix + alloc + "-"
	var out [][2]string
	for _, fl := range r.Functions {
		for _, in := range fl.Instances {
			if strings.HasPrefix(in.ID, prefix) {
				out = append(out, [2]string{fl.Function, in.ID})
			}
		}
	}
	return out
}

// DrainAlloc drains alloc's containers at every proxy registered in Consul
// (passing or not: a failing proxy may still hold requests), at once, and
// waits for them. A proxy that does not know the allocation (or forgot it:
// it served its last request) counts as drained; one that cannot be
// reached counts as Failed.
func (d *ProxyDrainer) DrainAlloc(ctx context.Context, alloc string, wait time.Duration) (DrainAnswer, error) {
	entries, _, err := d.Consul.Health().Service(proxy.ServiceName, "", false, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return DrainAnswer{}, fmt.Errorf("consul: proxies: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var (
		mu  sync.Mutex
		ans DrainAnswer
		wg  sync.WaitGroup
	)
	for _, e := range entries {
		if e.Service == nil || e.Service.Meta[proxy.MetaAdmin] == "" {
			continue
		}
		admin := strings.TrimSuffix(e.Service.Meta[proxy.MetaAdmin], "/")
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := d.drainAt(ctx, admin, alloc, wait)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				ans.Failed++
				return
			}
			ans.Proxies++
			ans.InFlight += n
		}()
	}
	wg.Wait()
	return ans, nil
}

// drainAt drains alloc at the proxy whose admin API is at admin.
func (d *ProxyDrainer) drainAt(ctx context.Context, admin, alloc string, wait time.Duration) (int, error) {
	var report proxy.Report
	if err := d.do(ctx, http.MethodGet, admin+proxy.LoadPath, &report); err != nil {
		return 0, err
	}
	var (
		mu    sync.Mutex
		total int
		first error
		wg    sync.WaitGroup
	)
	for _, fi := range allocInstances(report, alloc) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := url.Values{"function": {fi[0]}, "instance": {fi[1]}, "wait": {wait.String()}}
			var res proxy.DrainResult
			err := d.do(ctx, http.MethodPost, admin+proxy.DrainPath+"?"+q.Encode(), &res)
			mu.Lock()
			defer mu.Unlock()
			var nf *notFound
			switch {
			case err == nil:
				total += res.InFlight
			case errors.As(err, &nf):
				// Forgotten in between: it served its last request.
			case first == nil:
				first = err
			}
		}()
	}
	wg.Wait()
	return total, first
}

type notFound struct{ url string }

func (e *notFound) Error() string { return e.url + ": 404" }

func (d *ProxyDrainer) do(ctx context.Context, method, u string, into any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	c := d.HTTP
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return &notFound{url: u}
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%s %s: %s", method, u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}
