package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// SettingsKVPrefix is where, in Consul KV, a function's Settings are kept
// as JSON (`caravan/proxy/functions/<service>`), for when it has no
// container whose meta says: at zero. Nothing writes it yet; the session
// that wires the proxy in will, at deploy.
const SettingsKVPrefix = "caravan/proxy/functions/"

// settingsRecord is the JSON of a SettingsKVPrefix key.
type settingsRecord struct {
	MaxInputs    int    `json:"max_inputs"`
	QueueMax     int    `json:"queue_max"`
	QueueTimeout string `json:"queue_timeout"`
}

// Consul is Discovery over Consul's health endpoint: the instances of the
// function's service, by blocking query; those whose checks pass take
// requests, the others count as starting.
type Consul struct {
	Client *consul.Client
	// WaitTime bounds each blocking query (default 5 minutes, Consul's
	// most).
	WaitTime time.Duration
}

var _ Discovery = (*Consul)(nil)

// Watch is Discovery.Watch: Health().Service(function, "", false) with
// WaitIndex. Settings come from the first instance's meta that has them,
// else from SettingsKVPrefix+function, else stay nil. A function is known
// when it has instances (passing or not) or a settings record.
func (c *Consul) Watch(ctx context.Context, function string, index uint64) (Snapshot, uint64, error) {
	wait := c.WaitTime
	if wait <= 0 {
		wait = 5 * time.Minute
	}
	q := (&consul.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
	// Every instance, not only passing ones: those whose checks do not
	// pass yet are the containers starting.
	entries, meta, err := c.Client.Health().Service(function, "", false, q)
	if err != nil {
		return Snapshot{}, index, fmt.Errorf("consul: instances of %s: %w", function, err)
	}
	snap := Snapshot{Known: len(entries) > 0}
	var pendingSettings *Settings
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		addr := e.Service.Address
		if addr == "" && e.Node != nil {
			addr = e.Node.Address
		}
		s, hasSettings := SettingsFromMeta(e.Service.Meta)
		in := Instance{ID: e.Service.ID, Addr: net.JoinHostPort(addr, strconv.Itoa(e.Service.Port)), HealthPath: s.HealthPath,
			Canary: slices.Contains(e.Service.Tags, CanaryTag)}
		if e.Checks.AggregatedStatus() != consul.HealthPassing {
			snap.Starting++
			snap.Pending = append(snap.Pending, in)
			// At a cold start only starting containers say the
			// settings; a passing one's meta wins.
			if hasSettings && pendingSettings == nil {
				pendingSettings = &s
			}
			continue
		}
		snap.Instances = append(snap.Instances, in)
		if snap.Settings == nil && hasSettings {
			snap.Settings = &s
		}
	}
	if snap.Settings == nil {
		snap.Settings = pendingSettings
	}
	if snap.Settings == nil {
		kv, _, err := c.Client.KV().Get(SettingsKVPrefix+function, (&consul.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return Snapshot{}, index, fmt.Errorf("consul: settings of %s: %w", function, err)
		}
		if kv != nil {
			snap.Known = true
			var rec settingsRecord
			if json.Unmarshal(kv.Value, &rec) == nil {
				timeout, _ := time.ParseDuration(rec.QueueTimeout)
				snap.Settings = &Settings{MaxInputs: rec.MaxInputs, QueueMax: rec.QueueMax, QueueTimeout: timeout}
			}
		}
	}
	return snap, meta.LastIndex, nil
}

// ServiceName is the Consul service caravan's proxies register as
// (router.ProxyServiceName): caravan server publishes Traefik's service of
// the proxies from its instances (router.ProxyServices), and the
// autoscaler finds each proxy's load report through it. The registration
// carries no Traefik tags.
const ServiceName = "caravan-proxy"

// MetaAdmin is the service meta key of a proxy's admin base URL
// (http://host:port), where the autoscaler reads its load.
const MetaAdmin = "caravan_proxy_admin"

// MetaInTraefik is the service meta key ("true") of a proxy that runs
// inside Traefik's process (package intraefik): Traefik's routers reach
// it through its plugin, not through a data address, so caravan server
// leaves it out of the proxies' failover chain; the autoscaler and the
// drains reach it on its admin address like any other.
const MetaInTraefik = "caravan_proxy_in_traefik"

// Register registers the proxy serving requests on dataAddr with the local
// Consul agent as ServiceName, health-checked every second on adminAddr's
// /healthz, and returns the
// function that deregisters it. A proxy on Nomad needs none of this: its
// job's service block registers it the same way.
func Register(ctx context.Context, c *consul.Client, dataAddr, adminAddr string) (deregister func() error, err error) {
	id := ServiceName + "-" + dataAddr
	if err := register(ctx, c, id, dataAddr, adminAddr, nil); err != nil {
		return nil, err
	}
	return func() error { return Deregister(c, dataAddr) }, nil
}

// RegisterInTraefik registers a proxy inside Traefik's process (it has no
// data address) as Register does, under its admin address, with
// MetaInTraefik, and returns the function that deregisters it.
func RegisterInTraefik(ctx context.Context, c *consul.Client, adminAddr string) (deregister func() error, err error) {
	id := ServiceName + "-traefik-" + adminAddr
	if err := register(ctx, c, id, adminAddr, adminAddr, map[string]string{MetaInTraefik: "true"}); err != nil {
		return nil, err
	}
	return func() error { return c.Agent().ServiceDeregister(id) }, nil
}

func register(ctx context.Context, c *consul.Client, id, addr, adminAddr string, meta map[string]string) error {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return err
	}
	m := map[string]string{MetaAdmin: "http://" + adminAddr}
	maps.Copy(m, meta)
	reg := &consul.AgentServiceRegistration{
		ID: id, Name: ServiceName, Address: host, Port: port, Meta: m,
		Check: &consul.AgentServiceCheck{
			Name: "caravan proxy /healthz", HTTP: "http://" + adminAddr + HealthPath,
			Interval: "1s", Timeout: "1s", DeregisterCriticalServiceAfter: "1m",
		},
	}
	if err := c.Agent().ServiceRegisterOpts(reg, consul.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return fmt.Errorf("consul: registering %s: %w", id, err)
	}
	return nil
}

// Deregister removes the registration Register made for the proxy on
// dataAddr.
func Deregister(c *consul.Client, dataAddr string) error {
	return c.Agent().ServiceDeregister(ServiceName + "-" + dataAddr)
}
