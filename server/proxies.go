package server

import (
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caravanhq/caravan/proxy"
	"github.com/caravanhq/caravan/router"
	consul "github.com/hashicorp/consul/api"
)

// proxyServers are the caravan proxies registered in Consul (passing or
// not: Traefik's own health checks choose among them), in a stable order:
// by data URL. A proxy inside Traefik's process has no data URL: its
// routers reach it through Traefik's plugin, so it is not one of them.
func proxyServers(entries []*consul.ServiceEntry) []router.ProxyServer {
	var out []router.ProxyServer
	for _, e := range entries {
		if e.Service == nil || e.Service.Meta[proxy.MetaInTraefik] == "true" {
			continue
		}
		admin, err := url.Parse(e.Service.Meta[proxy.MetaAdmin])
		if err != nil {
			continue
		}
		port, err := strconv.Atoi(admin.Port())
		if err != nil {
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		out = append(out, router.ProxyServer{URL: "http://" + net.JoinHostPort(host, strconv.Itoa(e.Service.Port)), HealthPort: port})
	}
	slices.SortFunc(out, func(a, b router.ProxyServer) int { return strings.Compare(a.URL, b.URL) })
	return slices.CompactFunc(out, func(a, b router.ProxyServer) bool { return a.URL == b.URL })
}

// passingInTraefik counts the proxies inside Traefik (proxy.MetaInTraefik)
// of entries whose checks pass.
func passingInTraefik(entries []*consul.ServiceEntry) int {
	n := 0
	for _, e := range entries {
		if e.Service != nil && e.Service.Meta[proxy.MetaInTraefik] == "true" && e.Checks.AggregatedStatus() == consul.HealthPassing {
			n++
		}
	}
	return n
}

// publishProxies keeps Traefik's service of the proxies (router.ProxyServices,
// under the KV root) in step with the proxies registered in Consul, by
// blocking query, until the server stops. Every server writes the same
// keys from the same list.
func (s *Server) publishProxies(root string) {
	var index uint64
	var last map[string]string
	inTraefik := -1 // passing proxies inside Traefik; -1 before the first answer
	for s.ctx.Err() == nil {
		q := (&consul.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}).WithContext(s.ctx)
		entries, meta, err := s.consul.Health().Service(proxy.ServiceName, "", false, q)
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Warn("watching caravan proxies in Consul", "error", err)
				select {
				case <-s.ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		index = meta.LastIndex
		if s.proxyPlugin != "" {
			n := passingInTraefik(entries)
			switch {
			case n == 0 && inTraefik != 0:
				s.log.Warn("no caravan proxy inside Traefik passes its check in Consul: the routes of autoscaled functions (--proxy-plugin) fail until one does (caravan's Traefik build, with CARAVAN_PROXY_ADMIN_LISTEN)")
			case n > 1 && inTraefik != n:
				s.log.Warn("several caravan proxies inside Traefik pass: each holds a container to max_inputs by its own count, so together they may give it more (run one Traefik in front of autoscaled functions, or the standalone proxies)", "passing", n)
			case n == 1 && inTraefik != 1:
				s.log.Info("a caravan proxy inside Traefik passes its check", "passing", n)
			}
			inTraefik = n
		}
		pairs, err := router.KV(root, router.ProxyServices(proxyServers(entries)))
		if err != nil {
			s.log.Error("rendering the proxies' service", "error", err)
			continue
		}
		if maps.Equal(pairs, last) {
			continue
		}
		if err := s.syncProxyKV(root, pairs); err != nil {
			s.log.Warn("publishing the proxies' service", "error", err)
			index = 0 // try again at once
			select {
			case <-s.ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		last = pairs
		s.log.Info("published the proxies' service", "proxies", len(proxyServers(entries)))
	}
}

// syncProxyKV writes pairs and deletes the other keys of the proxies'
// services.
func (s *Server) syncProxyKV(root string, pairs map[string]string) error {
	kv := s.consul.KV()
	prefix := root + "/http/services/" + router.ProxiesPrefix
	keys, _, err := kv.Keys(prefix, "", (&consul.QueryOptions{}).WithContext(s.ctx))
	if err != nil {
		return err
	}
	var ops consul.KVTxnOps
	for _, k := range slices.Sorted(maps.Keys(pairs)) {
		ops = append(ops, &consul.KVTxnOp{Verb: consul.KVSet, Key: k, Value: []byte(pairs[k])})
	}
	for _, k := range keys {
		if _, ok := pairs[k]; !ok {
			ops = append(ops, &consul.KVTxnOp{Verb: consul.KVDelete, Key: k})
		}
	}
	for chunk := range slices.Chunk(ops, 64) {
		var txn consul.TxnOps
		for _, op := range chunk {
			txn = append(txn, &consul.TxnOp{KV: op})
		}
		ok, resp, _, err := s.consul.Txn().Txn(txn, (&consul.QueryOptions{}).WithContext(s.ctx))
		if err != nil {
			return err
		}
		if !ok {
			return &txnError{resp}
		}
	}
	return nil
}

type txnError struct{ resp *consul.TxnResponse }

func (e *txnError) Error() string {
	var msgs []string
	for _, x := range e.resp.Errors {
		msgs = append(msgs, x.What)
	}
	return "consul transaction refused: " + strings.Join(msgs, "; ")
}
