package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caravanhq/caravan/router"
)

// What every caravan server of a cluster shares, kept in Consul KV:
//
//	caravan/probe-secret    the deploy probes' key (see probeSecret)
//	caravan/router-config   the route settings every server renders with
//
// Each is made by the first server that needs it, create-only, so servers
// starting at once agree on the one that won.
const kvProbeSecret = "caravan/probe-secret"

// sharedProbeKey returns the cluster's probe key, making it first if no
// server has. Any server can then check a probe credential any other made:
// a server resuming another's rollout probes through routes whose
// forwardAuth may ask a third. The key is never logged.
func sharedProbeKey(ctx context.Context, kv KV) (string, error) {
	for {
		v, err := kv.Get(ctx, kvProbeSecret)
		if err != nil {
			return "", fmt.Errorf("reading %s from Consul: %w", kvProbeSecret, err)
		}
		if len(v) > 0 {
			return string(v), nil
		}
		key, err := randomHex(32)
		if err != nil {
			return "", err
		}
		ok, err := kv.Create(ctx, kvProbeSecret, []byte(key))
		if err != nil {
			return "", fmt.Errorf("writing %s to Consul: %w", kvProbeSecret, err)
		}
		if ok {
			return key, nil
		}
		// Another server made it first: read theirs.
	}
}

// kvRouterConfig records the route settings of the cluster (routerRecord):
// written by the first server that starts, checked by every later one.
const kvRouterConfig = "caravan/router-config"

// routerRecord is the value at kvRouterConfig.
type routerRecord struct {
	Router router.Config `json:"router"`
	// By and At say which server recorded it, and when: the error of a
	// server that disagrees names them.
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// routerSettings are the settings of router.Config, each with the flag of
// caravan server that sets it (a test checks that every field is here).
// Every one goes into what is rendered: the names of routers and
// middlewares hash them, the forwardAuth address among them.
var routerSettings = []struct {
	flag string
	get  func(router.Config) string
}{
	{"--domain", func(c router.Config) string { return c.Domain }},
	{"--entrypoint", func(c router.Config) string { return c.EntryPoint }},
	{"--cert-resolver", func(c router.Config) string { return c.CertResolver }},
	{"--dns-cert-resolver", func(c router.Config) string { return c.DNSCertResolver }},
	{"--https-port", func(c router.Config) string { return strconv.Itoa(c.HTTPSPort) }},
	{"--body-limit-plugin", func(c router.Config) string { return c.BodyLimitPlugin }},
	{"--auth-url", func(c router.Config) string { return c.AuthURL }},
	{"--traefik-kv-root", func(c router.Config) string { return c.KVRoot }},
	{"--drain-delay", func(c router.Config) string { return c.Drain().String() }},
	{"--bundle-url", func(c router.Config) string { return c.BundleURL }},
	{"--proxy-service", func(c router.Config) string { return c.ProxyService }},
	{"--proxy-plugin", func(c router.Config) string { return c.ProxyPlugin }},
	{"--agent-command", func(c router.Config) string { return c.AgentCommand }},
}

// RouterMismatchError is a server whose route settings are not the ones
// the cluster's routes were rendered with (kvRouterConfig): it does not
// start. Two servers that render one app's routes differently cannot
// share a cluster: each would find the job the other registered "another
// version", and forwardAuth would ask whichever rendered last.
type RouterMismatchError struct {
	// Settings are the flags that differ, each with this server's value
	// and the cluster's.
	Settings []SettingMismatch
	// By and At say which server recorded the cluster's, and when.
	By string
	At time.Time
}

// SettingMismatch is one setting a server and its cluster disagree on.
type SettingMismatch struct {
	Flag, Server, Cluster string
}

func (e *RouterMismatchError) Error() string {
	var b strings.Builder
	b.WriteString("this server's route settings are not the cluster's, which every caravan server must render with (recorded in Consul KV " +
		kvRouterConfig + " by " + e.By + " at " + e.At.UTC().Format(time.RFC3339) + "):")
	for _, s := range e.Settings {
		fmt.Fprintf(&b, " %s is %q here, %q in the cluster;", s.Flag, s.Server, s.Cluster)
	}
	b.WriteString(" start this server with the cluster's values.")
	for _, s := range e.Settings {
		if s.Flag == "--auth-url" {
			b.WriteString(" With several servers, give each the same --auth-url, an address that reaches any of them (a load balancer's), not each its own --listen.")
		}
	}
	b.WriteString(" To change a setting for the whole cluster, stop every caravan server, run `consul kv delete " + kvRouterConfig +
		"`, start them with the new flags, and roll over each app (caravan app rollover APP) so that its routes are rendered again.")
	return b.String()
}

// agreeRouter records cfg as the cluster's route settings if no server has
// yet (create-only), and otherwise returns a *RouterMismatchError when cfg
// differs from them. by names this server in the record.
func agreeRouter(ctx context.Context, kv KV, cfg router.Config, by string, now time.Time) error {
	for {
		v, err := kv.Get(ctx, kvRouterConfig)
		if err != nil {
			return fmt.Errorf("reading %s from Consul: %w", kvRouterConfig, err)
		}
		if v != nil {
			var rec routerRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("reading %s from Consul: %w (delete it: the next server to start records its own)", kvRouterConfig, err)
			}
			if diff := routerDiff(cfg, rec.Router); len(diff) > 0 {
				return &RouterMismatchError{Settings: diff, By: rec.By, At: rec.At}
			}
			return nil
		}
		b, _ := json.Marshal(routerRecord{Router: cfg, By: by, At: now.UTC()})
		ok, err := kv.Create(ctx, kvRouterConfig, b)
		if err != nil {
			return fmt.Errorf("writing %s to Consul: %w", kvRouterConfig, err)
		}
		if ok {
			return nil
		}
		// Another server recorded its settings first: compare with theirs.
	}
}

// routerDiff lists the settings in which server differs from cluster.
func routerDiff(server, cluster router.Config) []SettingMismatch {
	var out []SettingMismatch
	for _, s := range routerSettings {
		if a, b := s.get(server), s.get(cluster); a != b {
			out = append(out, SettingMismatch{Flag: s.flag, Server: a, Cluster: b})
		}
	}
	return out
}
