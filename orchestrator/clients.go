package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caravanhq/caravan/jobs"
	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// NomadClient adapts the official Nomad client to Nomad. This file is
// the orchestrator's only use of it. Each call about a job is made in the
// job's namespace, jobs.NamespaceOfJob of its ID (its workspace's,
// caravan-<workspace>); calls by allocation, deployment or evaluation ID
// need none (Nomad finds those by ID and checks the ACL of their own
// namespace).
type NomadClient struct {
	Client *nomad.Client
	// Namespaces answers Namespace: whether a workspace's namespace
	// exists, and whether to create it; nil assumes every one exists.
	Namespaces *Namespaces
}

var _ Nomad = NomadClient{}

func q(ctx context.Context, ns string, waitIndex uint64) *nomad.QueryOptions {
	return (&nomad.QueryOptions{Namespace: ns, WaitIndex: waitIndex}).WithContext(ctx)
}

// byID is the namespace of a read by allocation, deployment or
// evaluation ID, which names no job: all of them ("*"). Nomad first checks
// the request's namespace (the default one, for none named: a token of
// deploy/acl's policy may not read there, and such a read is refused)
// and then the object's own, so "*" asks for no more than a read in the
// object's namespace; writes by ID are checked against the object's alone.
const byID = nomad.AllNamespacesNamespace

func w(ctx context.Context, ns string) *nomad.WriteOptions {
	return (&nomad.WriteOptions{Namespace: ns}).WithContext(ctx)
}

func (n NomadClient) Job(ctx context.Context, id string) (*nomad.Job, error) {
	job, _, err := n.Client.Jobs().Info(id, q(ctx, jobs.NamespaceOfJob(id), 0))
	if err != nil {
		var re nomad.UnexpectedResponseError
		if errors.As(err, &re) && re.StatusCode() == 404 {
			return nil, nil
		}
		return nil, fmt.Errorf("reading job %s from Nomad: %w", id, err)
	}
	return job, nil
}

func (n NomadClient) Namespace(ctx context.Context, workspace string) error {
	if n.Namespaces == nil {
		return nil
	}
	return n.Namespaces.Ensure(ctx, n.Client, jobs.Namespace(workspace), workspace)
}

// jobNamespace is the namespace job goes in: the one it names, else its
// ID's.
func jobNamespace(job *nomad.Job) string {
	if job.Namespace != nil && *job.Namespace != "" {
		return *job.Namespace
	}
	return jobs.NamespaceOfJob(*job.ID)
}

func (n NomadClient) Plan(ctx context.Context, job *nomad.Job, diff bool) (*nomad.JobPlanResponse, error) {
	plan, _, err := n.Client.Jobs().PlanOpts(job, &nomad.PlanOptions{Diff: diff}, w(ctx, jobNamespace(job)))
	return plan, err
}

func (n NomadClient) Register(ctx context.Context, job *nomad.Job, modifyIndex uint64) (string, error) {
	opts := &nomad.RegisterOptions{}
	if modifyIndex > 0 {
		opts.EnforceIndex, opts.ModifyIndex = true, modifyIndex
	}
	reg, _, err := n.Client.Jobs().RegisterOpts(job, opts, w(ctx, jobNamespace(job)))
	if err != nil {
		if jobModified(err) {
			return "", fmt.Errorf("%w: %v", ErrJobModified, err)
		}
		return "", err
	}
	return reg.EvalID, nil
}

func (n NomadClient) Revert(ctx context.Context, id string, version uint64) (string, error) {
	reg, _, err := n.Client.Jobs().Revert(id, version, nil, w(ctx, jobs.NamespaceOfJob(id)), "", "")
	if err != nil {
		return "", err
	}
	return reg.EvalID, nil
}

func (n NomadClient) Deregister(ctx context.Context, id string, purge bool) (string, error) {
	evalID, _, err := n.Client.Jobs().Deregister(id, purge, w(ctx, jobs.NamespaceOfJob(id)))
	return evalID, err
}

func (n NomadClient) Jobs(ctx context.Context, prefix string) ([]*nomad.JobListStub, error) {
	qo := q(ctx, jobs.NamespaceOfJob(prefix), 0)
	qo.Prefix = prefix
	stubs, _, err := n.Client.Jobs().ListOptions(&nomad.JobListOptions{Fields: &nomad.JobListFields{Meta: true}}, qo)
	return stubs, err
}

func (n NomadClient) Summary(ctx context.Context, id string) (*nomad.JobSummary, error) {
	s, _, err := n.Client.Jobs().Summary(id, q(ctx, jobs.NamespaceOfJob(id), 0))
	return s, err
}

func (n NomadClient) JobAllocations(ctx context.Context, id string, waitIndex uint64) ([]*nomad.AllocationListStub, uint64, error) {
	allocs, meta, err := n.Client.Jobs().Allocations(id, false, q(ctx, jobs.NamespaceOfJob(id), waitIndex))
	if err != nil {
		return nil, 0, err
	}
	return allocs, meta.LastIndex, nil
}

func (n NomadClient) Allocation(ctx context.Context, id string) (*nomad.Allocation, error) {
	a, _, err := n.Client.Allocations().Info(id, q(ctx, byID, 0))
	return a, err
}

func (n NomadClient) LatestDeployment(ctx context.Context, jobID string) (*nomad.Deployment, error) {
	dep, _, err := n.Client.Jobs().LatestDeployment(jobID, q(ctx, jobs.NamespaceOfJob(jobID), 0))
	return dep, err
}

func (n NomadClient) Deployment(ctx context.Context, id string, waitIndex uint64) (*nomad.Deployment, uint64, error) {
	dep, meta, err := n.Client.Deployments().Info(id, q(ctx, byID, waitIndex))
	if err != nil {
		return nil, 0, err
	}
	return dep, meta.LastIndex, nil
}

func (n NomadClient) DeploymentAllocations(ctx context.Context, id string, waitIndex uint64) ([]*nomad.AllocationListStub, uint64, error) {
	allocs, meta, err := n.Client.Deployments().Allocations(id, q(ctx, byID, waitIndex))
	if err != nil {
		return nil, 0, err
	}
	return allocs, meta.LastIndex, nil
}

func (n NomadClient) FailDeployment(ctx context.Context, id string) error {
	_, _, err := n.Client.Deployments().Fail(id, w(ctx, ""))
	return err
}

func (n NomadClient) SetAllocHealth(ctx context.Context, id string, healthy []string) error {
	_, _, err := n.Client.Deployments().SetAllocHealth(id, healthy, nil, w(ctx, ""))
	return err
}

func (n NomadClient) PromoteDeployment(ctx context.Context, id string) error {
	_, _, err := n.Client.Deployments().PromoteAll(id, w(ctx, ""))
	return err
}

func (n NomadClient) Evaluation(ctx context.Context, id string, waitIndex uint64) (*nomad.Evaluation, uint64, error) {
	eval, meta, err := n.Client.Evaluations().Info(id, q(ctx, byID, waitIndex))
	if err != nil {
		return nil, 0, err
	}
	return eval, meta.LastIndex, nil
}

func (n NomadClient) ForcePeriodic(ctx context.Context, id string) (string, error) {
	evalID, _, err := n.Client.Jobs().PeriodicForce(id, w(ctx, jobs.NamespaceOfJob(id)))
	return evalID, err
}

func (n NomadClient) Dispatch(ctx context.Context, id string, meta map[string]string, payload []byte) (string, string, error) {
	d, _, err := n.Client.Jobs().Dispatch(id, meta, payload, "", w(ctx, jobs.NamespaceOfJob(id)))
	if err != nil {
		return "", "", err
	}
	return d.DispatchedJobID, d.EvalID, nil
}

func (n NomadClient) ReadFile(ctx context.Context, alloc *nomad.Allocation, path string, limit int64) (io.ReadCloser, error) {
	return n.Client.AllocFS().ReadAt(alloc, path, 0, limit, q(ctx, alloc.Namespace, 0))
}

func (n NomadClient) FollowLogs(ctx context.Context, alloc *nomad.Allocation, task, stream string) (<-chan *nomad.StreamFrame, <-chan error) {
	cancel := make(chan struct{})
	go func() { <-ctx.Done(); close(cancel) }()
	return n.Client.AllocFS().Logs(alloc, true, task, stream, nomad.OriginStart, 0, cancel, q(ctx, alloc.Namespace, 0))
}

// ConsulClient adapts the official Consul client to Consul.
type ConsulClient struct {
	Client *consul.Client
}

var _ Consul = ConsulClient{}

func (c ConsulClient) Instances(ctx context.Context, service, tag string, passing bool, waitIndex uint64) ([]Instance, uint64, error) {
	entries, meta, err := c.Client.Health().Service(service, tag, passing, (&consul.QueryOptions{WaitIndex: waitIndex}).WithContext(ctx))
	if err != nil {
		return nil, 0, err
	}
	out := make([]Instance, 0, len(entries))
	for _, e := range entries {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		out = append(out, Instance{ID: e.Service.ID, Address: addr, Port: e.Service.Port})
	}
	return out, meta.LastIndex, nil
}

func (c ConsulClient) WriteKV(ctx context.Context, ops []KVOp) error {
	var txn consul.TxnOps
	for _, op := range ops {
		kv := &consul.KVTxnOp{Verb: consul.KVSet, Key: op.Key, Value: op.Value}
		if op.Session != "" {
			kv = &consul.KVTxnOp{Verb: consul.KVLock, Key: op.Key, Value: op.Value, Session: op.Session}
		}
		if op.Delete {
			kv = &consul.KVTxnOp{Verb: consul.KVDelete, Key: op.Key}
		}
		txn = append(txn, &consul.TxnOp{KV: kv})
	}
	ok, resp, _, err := c.Client.Txn().Txn(txn, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	if !ok {
		return txnErrors(resp)
	}
	return nil
}

var _ Sessions = ConsulClient{}

func (c ConsulClient) CreateSession(ctx context.Context, ttl time.Duration) (string, error) {
	id, _, err := c.Client.Session().Create(&consul.SessionEntry{
		Name:      "caravan first routes",
		TTL:       ttl.String(),
		Behavior:  consul.SessionBehaviorDelete,
		LockDelay: time.Nanosecond, // its keys are never taken again
	}, (&consul.WriteOptions{}).WithContext(ctx))
	return id, err
}

func (c ConsulClient) RenewSession(ctx context.Context, id string) error {
	s, _, err := c.Client.Session().Renew(id, (&consul.WriteOptions{}).WithContext(ctx))
	if err == nil && s == nil {
		err = fmt.Errorf("Consul session %s has ended", id)
	}
	return err
}

func (c ConsulClient) DestroySession(ctx context.Context, id string) error {
	_, err := c.Client.Session().Destroy(id, (&consul.WriteOptions{}).WithContext(ctx))
	return err
}

func (c ConsulClient) DeleteKVTree(ctx context.Context, prefix string) error {
	_, err := c.Client.KV().DeleteTree(prefix, (&consul.WriteOptions{}).WithContext(ctx))
	return err
}

// TraefikAPI reads Traefik's API (api.insecure, or a router to
// api@internal) at Addr, such as "http://127.0.0.1:8081".
type TraefikAPI struct {
	Addr string
	// HTTP defaults to a client with a 5-second timeout.
	HTTP *http.Client
}

var _ Proxy = TraefikAPI{}

// get decodes Traefik's answer for path into out; found is false on 404.
func (t TraefikAPI) get(ctx context.Context, path string, out any) (found bool, err error) {
	hc := t.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(t.Addr, "/")+path, nil)
	if err != nil {
		return false, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("asking Traefik's API: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(out)
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("Traefik's API answered %s for %s", resp.Status, path)
}

func (t TraefikAPI) RouterService(ctx context.Context, router string) (string, error) {
	var rt struct {
		Service string `json:"service"`
	}
	found, err := t.get(ctx, "/api/http/routers/"+url.PathEscape(router), &rt)
	if err != nil || !found {
		return "", err
	}
	return rt.Service, nil
}

func (t TraefikAPI) Servers(ctx context.Context, service string) ([]string, error) {
	var svc struct {
		LoadBalancer *struct {
			Servers []struct {
				URL string `json:"url"`
			} `json:"servers"`
		} `json:"loadBalancer"`
	}
	found, err := t.get(ctx, "/api/http/services/"+url.PathEscape(service), &svc)
	if err != nil || !found || svc.LoadBalancer == nil {
		return nil, err
	}
	urls := []string{}
	for _, s := range svc.LoadBalancer.Servers {
		urls = append(urls, s.URL)
	}
	return urls, nil
}

func (t TraefikAPI) RequestHeader(ctx context.Context, middleware, header string) (string, error) {
	var mw struct {
		Headers *struct {
			CustomRequestHeaders map[string]string `json:"customRequestHeaders"`
		} `json:"headers"`
	}
	found, err := t.get(ctx, "/api/http/middlewares/"+url.PathEscape(middleware), &mw)
	if err != nil || !found || mw.Headers == nil {
		return "", err
	}
	return mw.Headers.CustomRequestHeaders[header], nil
}

// DNSResolver looks TXT records up at Server ("127.0.0.1:8053"), or
// through the system's resolver when Server is empty.
type DNSResolver struct {
	Server string
}

var _ Resolver = DNSResolver{}

func (r DNSResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	res := net.DefaultResolver
	if r.Server != "" {
		res = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, r.Server)
		}}
	}
	// The trailing dot keeps the system's search domains out of it.
	txt, err := res.LookupTXT(ctx, strings.TrimSuffix(name, ".")+".")
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil, nil
	}
	return txt, err
}
