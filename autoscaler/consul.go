package autoscaler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caravanhq/caravan/autoscale"
	"github.com/caravanhq/caravan/internal/leader"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/proxy"
	consul "github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	nomad "github.com/hashicorp/nomad/api"
)

// Clients is Backend over Consul, Nomad and the proxies' admin APIs.
type Clients struct {
	Consul *consul.Client
	Nomad  *nomad.Client
	// HTTP reads the proxies' load (default: a client without timeout;
	// each read has the caller's deadline).
	HTTP *http.Client
	Log  hclog.Logger
}

var _ Backend = (*Clients)(nil)

// Functions reads the records under proxy.SettingsKVPrefix; one that does
// not parse is skipped (and logged).
func (c *Clients) Functions(ctx context.Context) ([]Function, error) {
	pairs, _, err := c.Consul.KV().List(proxy.SettingsKVPrefix, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul: autoscaled functions: %w", err)
	}
	var out []Function
	for _, p := range pairs {
		svc := strings.TrimPrefix(p.Key, proxy.SettingsKVPrefix)
		var rec autoscale.Record
		err := json.Unmarshal(p.Value, &rec)
		var cfg autoscale.Config
		if err == nil {
			cfg, err = rec.Config()
		}
		if err != nil {
			if c.Log != nil {
				c.Log.Warn("skipping an autoscaling record", "key", p.Key, "error", err)
			}
			continue
		}
		out = append(out, Function{Service: svc, Job: rec.Job, Group: rec.Group, Config: cfg})
	}
	return out, nil
}

// Proxies lists the passing instances of proxy.ServiceName, by their
// proxy.MetaAdmin.
func (c *Clients) Proxies(ctx context.Context) ([]string, error) {
	entries, _, err := c.Consul.Health().Service(proxy.ServiceName, "", true, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul: proxies: %w", err)
	}
	var out []string
	for _, e := range entries {
		if e.Service != nil && e.Service.Meta[proxy.MetaAdmin] != "" {
			out = append(out, e.Service.Meta[proxy.MetaAdmin])
		}
	}
	return out, nil
}

func (c *Clients) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Clients) Load(ctx context.Context, admin string) (proxy.Report, error) {
	return proxy.FetchLoad(ctx, c.http(), admin)
}

func (c *Clients) WatchLoad(ctx context.Context, admin string, index uint64, wait time.Duration) (proxy.Report, error) {
	return proxy.WatchLoad(ctx, c.http(), admin, index, wait)
}

// Count is the group's desired count in Nomad's scale status.
func (c *Clients) Count(ctx context.Context, job, group string) (int, bool, error) {
	st, _, err := c.Nomad.Jobs().ScaleStatus(job, (&nomad.QueryOptions{Namespace: jobs.NamespaceOfJob(job)}).WithContext(ctx))
	if err != nil {
		var ue nomad.UnexpectedResponseError
		if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("nomad: scale status of %s: %w", job, err)
	}
	if st.JobStopped {
		return 0, false, nil
	}
	g, ok := st.TaskGroups[group]
	if !ok {
		return 0, false, nil
	}
	return g.Desired, true, nil
}

// Scale asks Nomad for n containers of group, with check-and-set against
// the job version it read: not while a deploy's registration waits for
// its deployment (registrationPending), and not when the job changed
// since (ErrJobChanging either way).
func (c *Clients) Scale(ctx context.Context, job, group string, n int, reason string) error {
	ns := jobs.NamespaceOfJob(job)
	q := (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx)
	versions, _, _, err := c.Nomad.Jobs().Versions(job, false, q)
	if err != nil {
		return fmt.Errorf("nomad: versions of %s: %w", job, err)
	}
	dep, _, err := c.Nomad.Jobs().LatestDeployment(job, q)
	if err != nil {
		return fmt.Errorf("nomad: deployment of %s: %w", job, err)
	}
	if why := registrationPending(versions, dep, time.Now()); why != "" {
		return fmt.Errorf("%w: %s", ErrJobChanging, why)
	}
	var index uint64
	for _, v := range versions {
		if v != nil && v.JobModifyIndex != nil && *v.JobModifyIndex > index {
			index = *v.JobModifyIndex
		}
	}
	req := &nomad.ScalingRequest{
		Count:          ptr(int64(n)),
		Target:         map[string]string{"Job": job, "Group": group},
		Message:        "caravan autoscaler: " + reason,
		JobModifyIndex: index,
	}
	_, _, err = c.Nomad.Jobs().ScaleWithRequest(job, req, (&nomad.WriteOptions{Namespace: ns}).WithContext(ctx))
	switch {
	case err == nil:
		return nil
	case blockedByDeployment(err):
		return fmt.Errorf("%w: %v", ErrDeploymentActive, err)
	case strings.Contains(err.Error(), "conflicting job modify index"):
		return fmt.Errorf("%w: it changed since it was read", ErrJobChanging)
	}
	return err
}

func ptr[T any](v T) *T { return &v }

// Settle: see Backend and settle.go.
func (c *Clients) Settle(ctx context.Context, job, service string) (bool, string, error) {
	ns := jobs.NamespaceOfJob(job)
	q := (&nomad.QueryOptions{Namespace: ns}).WithContext(ctx)
	dep, _, err := c.Nomad.Jobs().LatestDeployment(job, q)
	if err != nil {
		return false, "", fmt.Errorf("nomad: deployment of %s: %w", job, err)
	}
	if dep == nil || dep.Status != nomad.DeploymentStatusRunning {
		return false, "no running deployment", nil
	}
	versions, _, _, err := c.Nomad.Jobs().Versions(job, false, q)
	if err != nil {
		return false, "", fmt.Errorf("nomad: versions of %s: %w", job, err)
	}
	allocs, _, err := c.Nomad.Deployments().Allocations(dep.ID, q)
	if err != nil {
		return false, "", fmt.Errorf("nomad: allocations of deployment %s: %w", dep.ID, err)
	}
	entries, _, err := c.Consul.Health().Service(service, "", true, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, "", fmt.Errorf("consul: containers of %s: %w", service, err)
	}
	passing := map[string]bool{}
	for _, e := range entries {
		if e.Service != nil {
			if id := allocOfService(e.Service.ID); id != "" {
				passing[id] = true
			}
		}
	}
	ids, why := settleable(dep, versions, allocs, passing)
	if ids == nil {
		return false, why, nil
	}
	if _, _, err := c.Nomad.Deployments().SetAllocHealth(dep.ID, ids, nil, (&nomad.WriteOptions{Namespace: ns}).WithContext(ctx)); err != nil {
		return false, "", fmt.Errorf("nomad: marking %d containers of deployment %s healthy: %w", len(ids), dep.ID, err)
	}
	return true, fmt.Sprintf("its %d containers pass their checks in Consul", len(ids)), nil
}

// blockedByDeployment reports Nomad's refusal to scale during a
// deployment. Nomad answers it as a plain HTTP error whose text is all
// that tells it apart (structs.ErrJobScalingBlockedByActiveDeployment), so
// this one place reads the text.
func blockedByDeployment(err error) bool {
	return strings.Contains(err.Error(), "scaling blocked due to active deployment")
}

// LeaderKey is the Consul lock the active autoscaler holds.
const LeaderKey = "caravan/autoscaler/leader"

// RunLeader runs s while this server holds LeaderKey, taking it again
// whenever it is free, until ctx ends: one autoscaler is active across
// servers, and another takes over within the lock's TTL when it stops
// (leader.Run).
func RunLeader(ctx context.Context, cc *consul.Client, s *Scaler, log hclog.Logger) {
	leader.Run(ctx, leader.ConsulLock(cc, LeaderKey, "caravan autoscaler", "10s"), func(ctx context.Context) {
		// A fresh Scaler's windows: nothing scales down before a whole
		// window has been watched by this leader. It wakes on s's Wake.
		s.fresh().Run(ctx)
	}, log)
}
