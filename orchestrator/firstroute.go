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
// Consul's first passing check, caravan writes a copy of each web
// function's route to its first container, at the address Nomad gave it,
// in Traefik's KV as soon as Nomad places it: Traefik has applied the
// copy (about 60-150 ms here) by the time the process listens, so the
// route answers the moment it does. (Before, a request to the new
// hostname is refused, 502, as it would answer 404 with no route: nothing
// serves it yet.) caravan probes the container itself meanwhile, and the
// deploy counts the function as placed once it answers its health path
// and Nomad runs it (its probe through Traefik still has to answer); once
// Traefik serves the route from Consul's catalog with that container, the
// copy is deleted. Only an app with no previous version gets them: no
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
	answered  map[string]chan struct{}
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
		published: map[string]firstServer{}, answered: map[string]chan struct{}{}}
	for _, r := range rendered.Routes {
		if !r.Proxied {
			f.routes[r.Function] = r
			f.answered[r.Function] = make(chan struct{})
		}
	}
	if len(f.routes) == 0 {
		return nil
	}
	return f
}

// answeredFor is closed once the container of function's first route
// answers its health path; nil (never) when it has none.
func (f *firstRoutes) answeredFor(function string) <-chan struct{} {
	if f == nil {
		return nil
	}
	return f.answered[function]
}

// run publishes every first route as its container is placed, until ctx
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

// publish waits for Nomad to place a container of function, writes its
// first route to the container's allotted address at once (Traefik has
// applied it by the time the process listens, so the route answers the
// moment it does; before that, its requests are refused, as a hostname
// nothing serves yet is), then probes the container until it answers its
// health path, and closes its answered channel.
func (f *firstRoutes) publish(ctx context.Context, fn string) error {
	r := f.routes[fn]
	server, err := f.o.placedContainer(ctx, f.jobID, fn)
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
	if f.ended {
		f.mu.Unlock()
		return errors.New("the deploy ended")
	}
	// Under the lock: end waits for the write, so it destroys the session
	// after it (a write after the session ended would fail anyway).
	if err := f.o.consul.WriteKV(ctx, ops); err != nil {
		f.mu.Unlock()
		return fmt.Errorf("writing the first route: %w", err)
	}
	f.published[fn] = server
	f.mu.Unlock()
	f.o.log.Debug("first route published", "job", f.jobID, "function", fn, "server", server.url)
	if err := answers(ctx, server.url, r.HealthPath); err != nil {
		return err
	}
	close(f.answered[fn])
	f.o.log.Debug("first route's container answers", "job", f.jobID, "function", fn, "server", server.url)
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

// placedContainer waits for an allocation of group fn of job jobID,
// placed and not stopped (see isStarting), and returns it with the
// address Nomad gave it (the first such by ID).
func (o *Orchestrator) placedContainer(ctx context.Context, jobID, fn string) (firstServer, error) {
	var index uint64
	for {
		allocs, last, err := o.nomad.JobAllocations(ctx, jobID, index)
		if err != nil {
			return firstServer{}, err
		}
		var ids []string
		for _, a := range allocs {
			if a.TaskGroup == fn && isStarting(a) {
				ids = append(ids, a.ID)
			}
		}
		if len(ids) > 0 {
			id := slices.Min(ids)
			full, err := o.nomad.Allocation(ctx, id)
			if err != nil {
				return firstServer{}, err
			}
			u, err := allocURL(full)
			if err != nil {
				return firstServer{}, err
			}
			return firstServer{allocID: id, url: u}, nil
		}
		index = last
	}
}

// answers probes the container at base until it answers healthPath 2xx
// (every firstProbeEvery), or ctx ends. (A container that never answers
// leaves its function to Consul's checks; the handover ends a first route
// whose container stops.)
func answers(ctx context.Context, base, healthPath string) error {
	if healthPath == "" {
		healthPath = "/"
	}
	client := &http.Client{Timeout: 500 * time.Millisecond,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.CloseIdleConnections()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+healthPath, nil)
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
		}
		if err := sleep(ctx, firstProbeEvery); err != nil {
			return err
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
