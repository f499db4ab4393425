package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
)

// First routes (see router.First): while a new app's deploy waits for
// Consul's first passing check, caravan probes each web function's first
// running container itself, at the address Nomad gave it, and the moment
// it answers its health path writes a copy of the function's route to that
// container in Traefik's KV. The deploy counts the function as placed once
// the copy is written (its probe through Traefik still has to answer);
// once Traefik serves the route from Consul's catalog with that container,
// the copy is deleted. Only an app with no previous version gets them: no
// request is taken from anything else.
//
// Every key of a deploy's first routes is held by one Consul session
// (Sessions), so no path leaves one behind: a failed deploy destroys it
// before returning; a successful one hands the routes over in the
// background and destroys it then, or after FirstRouteLimit, or as soon as
// a container behind one stops running; and should the server stop before
// that, Consul deletes the keys once the session lapses
// (FirstRouteSessionTTL, up to twice that). A route of Consul's catalog
// outranks its copy (router.FirstPriorityOffset), so a copy never holds
// traffic back from it.

// FirstRouteSessionTTL is the TTL of the session that holds first routes:
// how long they outlive a server that stops before removing them (Consul
// may take twice as long). Consul's minimum.
const FirstRouteSessionTTL = 10 * time.Second

// FirstRouteLimit bounds how long a first route serves: it is deleted then
// even if Traefik has not taken the function's route from Consul.
const FirstRouteLimit = time.Minute

// txnMaxOps is how many operations Consul takes in one transaction (its
// default txn_max_req_len aside).
const txnMaxOps = 128

// firstProbeEvery is how often a new container is probed directly.
const firstProbeEvery = 20 * time.Millisecond

// firstRoutes are one new app's deploy's first routes.
type firstRoutes struct {
	o      *Orchestrator
	jobID  string
	routes map[string]router.Route // by function; not proxied

	mu        sync.Mutex
	session   string
	ended     bool
	published map[string]firstServer // by function
	written   map[string]chan struct{}
}

// firstServer is the container a first route sends to.
type firstServer struct {
	allocID string
	url     string
}

// newFirstRoutes returns the first routes of rendered (a new app's), or
// nil when the orchestrator cannot publish any (no Sessions, no Proxy to
// see Traefik take over) or no route could have one.
func (o *Orchestrator) newFirstRoutes(rendered *jobs.Rendered) *firstRoutes {
	if o.sessions == nil || o.proxy == nil {
		return nil
	}
	f := &firstRoutes{o: o, jobID: *rendered.Job.ID, routes: map[string]router.Route{},
		published: map[string]firstServer{}, written: map[string]chan struct{}{}}
	for _, r := range rendered.Routes {
		if !r.Proxied {
			f.routes[r.Function] = r
			f.written[r.Function] = make(chan struct{})
		}
	}
	if len(f.routes) == 0 {
		return nil
	}
	return f
}

// writtenFor is closed once function's first route is written; nil (never)
// when it has none.
func (f *firstRoutes) writtenFor(function string) <-chan struct{} {
	if f == nil {
		return nil
	}
	return f.written[function]
}

// run publishes every first route as its container answers, until ctx
// ends. A route it cannot publish is left to Consul, with a log line.
func (f *firstRoutes) run(ctx context.Context) {
	var wg sync.WaitGroup
	for fn := range f.routes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.publish(ctx, fn); err != nil && ctx.Err() == nil {
				f.o.log.Info("no first route; the function takes traffic once Consul's check passes", "job", f.jobID, "function", fn, "reason", err)
			}
		}()
	}
	wg.Wait()
}

// publish waits for a running container of function, probes it until it
// answers its health path, and writes its first route.
func (f *firstRoutes) publish(ctx context.Context, fn string) error {
	r := f.routes[fn]
	server, err := f.o.firstContainer(ctx, f.jobID, fn, r.HealthPath)
	if err != nil {
		return err
	}
	cfg, err := router.First(r, []string{server.url})
	if err != nil {
		return err
	}
	pairs, err := router.KV(f.o.router.KVRoot, cfg)
	if err != nil {
		return err
	}
	session, err := f.sessionID(ctx)
	if err != nil {
		return err
	}
	var ops []KVOp
	for _, k := range slices.Sorted(maps.Keys(pairs)) {
		ops = append(ops, KVOp{Key: k, Value: []byte(pairs[k]), Session: session})
	}
	// One transaction: Traefik never reads half a route.
	if len(ops) > txnMaxOps {
		return fmt.Errorf("first route of %s: %d keys, more than one transaction holds", r.Name, len(ops))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return errors.New("the deploy ended")
	}
	// Under the lock: end waits for the write, so it destroys the session
	// after it (a write after the session ended would fail anyway).
	if err := f.o.consul.WriteKV(ctx, ops); err != nil {
		return fmt.Errorf("writing the first route: %w", err)
	}
	f.published[fn] = server
	close(f.written[fn])
	f.o.log.Debug("first route published", "job", f.jobID, "function", fn, "server", server.url)
	return nil
}

// sessionID creates the deploy's session on first use.
func (f *firstRoutes) sessionID(ctx context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return "", errors.New("the deploy ended")
	}
	if f.session == "" {
		id, err := f.o.sessions.CreateSession(ctx, FirstRouteSessionTTL)
		if err != nil {
			return "", fmt.Errorf("creating the Consul session of first routes: %w", err)
		}
		f.session = id
	}
	return f.session, nil
}

// end destroys the session, deleting every first route written; no route
// is written after it.
func (f *firstRoutes) end(ctx context.Context) error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ended = true
	if f.session == "" {
		return nil
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := f.o.sessions.DestroySession(dctx, f.session); err != nil {
		return fmt.Errorf("removing first routes (Consul deletes them within %s anyway): %w", 2*FirstRouteSessionTTL, err)
	}
	f.session = ""
	return nil
}

// handOver waits, renewing the session, until Traefik serves each
// published first route's function from Consul's catalog with its
// container, then ends the first routes; at the latest after
// FirstRouteLimit, or once a container behind one no longer runs.
func (f *firstRoutes) handOver(ctx context.Context) {
	if f == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), FirstRouteLimit)
	defer cancel()
	defer func() {
		if err := f.end(ctx); err != nil {
			f.o.log.Info("first routes", "job", f.jobID, "error", err)
		}
	}()
	f.mu.Lock()
	f.ended = true // nothing more is published
	published := maps.Clone(f.published)
	session := f.session
	f.mu.Unlock()
	if len(published) == 0 {
		return
	}
	go func() {
		// A copy must never send to a container that is gone.
		f.o.awaitStopped(ctx, f.jobID, published)
		cancel()
	}()
	go func() {
		for sleep(ctx, FirstRouteSessionTTL/3) == nil {
			if err := f.o.sessions.RenewSession(ctx, session); err != nil {
				f.o.log.Info("first routes: renewing their session", "job", f.jobID, "error", err)
			}
		}
	}()
	for fn, s := range published {
		r := f.routes[fn]
		for !f.o.catalogServes(ctx, r, s.url) {
			if sleep(ctx, observeEvery) != nil {
				f.o.log.Debug("first routes end before Traefik serves their routes from Consul", "job", f.jobID, "reason", context.Cause(ctx))
				return
			}
		}
	}
	f.o.log.Debug("first routes handed over to Consul's", "job", f.jobID)
}

// catalogServes reports whether Traefik serves r from its containers' tags
// (Consul's catalog) with server among them.
func (o *Orchestrator) catalogServes(ctx context.Context, r router.Route, server string) bool {
	own, err := o.proxy.RouterService(ctx, r.Router+"@"+catalogProvider)
	if err != nil || own == "" {
		return false
	}
	servers, err := o.proxy.Servers(ctx, router.StableService(r))
	return err == nil && slices.Contains(servers, server)
}

// awaitStopped returns once an allocation of published no longer runs, or
// ctx ends.
func (o *Orchestrator) awaitStopped(ctx context.Context, jobID string, published map[string]firstServer) {
	var index uint64
	for ctx.Err() == nil {
		allocs, last, err := o.nomad.JobAllocations(ctx, jobID, index)
		if err != nil {
			if sleep(ctx, time.Second) != nil {
				return
			}
			continue
		}
		for _, s := range published {
			i := slices.IndexFunc(allocs, func(a *nomad.AllocationListStub) bool { return a.ID == s.allocID })
			if i < 0 || !isStarting(allocs[i]) {
				return
			}
		}
		index = last
	}
}

// isStarting reports whether a is meant to run and runs or is about to:
// its ports are its own from its placement on (the scheduler allots them),
// so whatever answers on them is its container, even before its client
// has reported it running (up to a few hundred milliseconds later).
func isStarting(a *nomad.AllocationListStub) bool {
	return a.DesiredStatus == nomad.AllocDesiredStatusRun &&
		(a.ClientStatus == nomad.AllocClientStatusRunning || a.ClientStatus == nomad.AllocClientStatusPending)
}

// firstContainer waits for an allocation of group fn of job jobID, placed
// and not stopped (see isStarting), whose container answers healthPath 2xx
// at the address Nomad gave it.
func (o *Orchestrator) firstContainer(ctx context.Context, jobID, fn, healthPath string) (firstServer, error) {
	if healthPath == "" {
		healthPath = "/"
	}
	client := &http.Client{Timeout: 500 * time.Millisecond,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.CloseIdleConnections()
	addrs := map[string]string{} // alloc ID → base URL
	var index uint64
	for {
		allocs, last, err := o.nomad.JobAllocations(ctx, jobID, index)
		if err != nil {
			return firstServer{}, err
		}
		for _, a := range allocs {
			if a.TaskGroup != fn || !isStarting(a) {
				continue
			}
			if _, ok := addrs[a.ID]; !ok {
				full, err := o.nomad.Allocation(ctx, a.ID)
				if err != nil {
					return firstServer{}, err
				}
				u, err := allocURL(full)
				if err != nil {
					return firstServer{}, err
				}
				addrs[a.ID] = u
			}
		}
		if len(addrs) > 0 {
			break
		}
		index = last
	}
	// (An allocation placed later, or one that stops meanwhile, is not
	// followed: the handover ends a first route whose container stops, and
	// a container that never answers leaves its function to Consul.)
	for {
		for _, id := range slices.Sorted(maps.Keys(addrs)) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, addrs[id]+healthPath, nil)
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					return firstServer{allocID: id, url: addrs[id]}, nil
				}
			}
		}
		if err := sleep(ctx, firstProbeEvery); err != nil {
			return firstServer{}, err
		}
	}
}

// allocURL is the http:// address of alloc's web port (jobs.PortLabel),
// as Nomad registers it in Consul.
func allocURL(alloc *nomad.Allocation) (string, error) {
	if ar := alloc.AllocatedResources; ar != nil {
		for _, p := range ar.Shared.Ports {
			if p.Label == jobs.PortLabel && p.HostIP != "" && p.Value > 0 {
				return "http://" + net.JoinHostPort(p.HostIP, strconv.Itoa(p.Value)), nil
			}
		}
		for _, n := range ar.Shared.Networks {
			for _, p := range n.DynamicPorts {
				if p.Label == jobs.PortLabel && n.IP != "" && p.Value > 0 {
					return "http://" + net.JoinHostPort(n.IP, strconv.Itoa(p.Value)), nil
				}
			}
		}
	}
	return "", fmt.Errorf("allocation %s has no %q port", alloc.ID, jobs.PortLabel)
}
