// caravan's Traefik build: Traefik's own main (cmd/traefik of the pinned
// module, copied here by caravan dev install: see devstack.TraefikCaravan)
// with one change, its plugin builder wrapped by caravanPlugins, so that
// the middleware plugin intraefik.Name ("caravan", or the name
// CARAVAN_PROXY_PLUGIN_NAME gives) is caravan's proxy, compiled in, in
// Traefik's process. Every other plugin is Traefik's as before.
package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/caravanhq/caravan/proxy/intraefik"
	"github.com/rs/zerolog/log"
	"github.com/traefik/traefik/v3/pkg/plugins"
	"github.com/traefik/traefik/v3/pkg/provider"
)

// caravanBuilder is Traefik's plugin builder (nil when Traefik's plugins
// are disabled) with caravan's proxy beside it.
type caravanBuilder struct {
	traefik *plugins.Builder
	caravan *intraefik.Plugin
	name    string // the caravan plugin's name (intraefik.PluginName)
}

// caravanPlugins wraps createPluginBuilder's result. When the environment
// configures caravan's proxy, it starts now, with Traefik.
func caravanPlugins(b *plugins.Builder, err error) (*caravanBuilder, error) {
	cb := &caravanBuilder{traefik: b, caravan: intraefik.FromEnv(os.Getenv, os.Stderr), name: intraefik.PluginName(os.Getenv)}
	if _, ok := intraefik.ConfigFromEnv(os.Getenv); ok {
		e, serr := cb.caravan.Started()
		if serr != nil {
			log.Error().Err(serr).Msg("caravan proxy did not start")
		} else {
			// Out of Consul as soon as Traefik is told to stop, while
			// Traefik's graceful shutdown still serves what it holds.
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			go func() {
				<-sig
				if err := e.Deregister(); err != nil {
					log.Warn().Err(err).Msg("caravan proxy: deregistering from Consul")
				}
			}()
		}
	}
	return cb, err
}

// Build builds a middleware plugin: caravan's proxy, or one of Traefik's.
func (b *caravanBuilder) Build(name string, config map[string]any, middlewareName string) (plugins.Constructor, error) {
	if name == b.name {
		h, err := b.caravan.Handler(config)
		if err != nil {
			return nil, err
		}
		return func(context.Context, http.Handler) (http.Handler, error) { return h, nil }, nil
	}
	if b.traefik == nil {
		return nil, errors.New("plugins are disabled (see Traefik's log)")
	}
	return b.traefik.Build(name, config, middlewareName)
}

// BuildProvider builds a provider plugin: Traefik's.
func (b *caravanBuilder) BuildProvider(name string, config map[string]any) (provider.Provider, error) {
	if b.traefik == nil {
		return nil, errors.New("plugins are disabled (see Traefik's log)")
	}
	return b.traefik.BuildProvider(name, config)
}
