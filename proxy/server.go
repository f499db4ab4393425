package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ServerConfig is how `caravan proxy` serves a Proxy.
type ServerConfig struct {
	// Listen is the data plane's address, which Traefik routes
	// autoscaled functions to; AdminListen the admin side's (load,
	// drains, metrics, health), which only caravan server, Prometheus and
	// Traefik's health check should reach.
	Listen      string
	AdminListen string
	Proxy       Config
}

// Server is a Proxy on its two listeners, startable in-process (tests).
type Server struct {
	Proxy *Proxy

	cfg          ServerConfig
	data         *h1Server
	admin        *http.Server
	dataLn, adLn net.Listener
	errs         chan error
}

// NewServer makes a Server; Start listens.
func NewServer(cfg ServerConfig) *Server {
	p := New(cfg.Proxy)
	// No timeouts on the data plane: requests may stream for hours, and
	// the queue's timeout bounds the wait. net/http's Server serves what
	// h1Server hands it (Upgrades, Expect).
	fallback := &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	if cfg.Proxy.Logger != nil {
		fallback.ErrorLog = cfg.Proxy.Logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	}
	return &Server{
		Proxy: p,
		cfg:   cfg,
		data:  newH1Server(p, fallback),
		admin: &http.Server{Handler: p.AdminHandler(), ReadHeaderTimeout: 10 * time.Second},
		errs:  make(chan error, 2),
	}
}

// Start listens on both addresses and serves in the background.
func (s *Server) Start() error {
	var err error
	if s.dataLn, err = net.Listen("tcp", s.cfg.Listen); err != nil {
		return fmt.Errorf("proxy: listen: %w", err)
	}
	if s.adLn, err = net.Listen("tcp", s.cfg.AdminListen); err != nil {
		s.dataLn.Close()
		return fmt.Errorf("proxy: admin listen: %w", err)
	}
	serve := func(serve func(net.Listener) error, ln net.Listener) {
		if err := serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.errs <- err
		}
	}
	go serve(s.data.Serve, s.dataLn)
	go serve(s.admin.Serve, s.adLn)
	return nil
}

// Addr and AdminAddr are where Start listens.
func (s *Server) Addr() string      { return s.dataLn.Addr().String() }
func (s *Server) AdminAddr() string { return s.adLn.Addr().String() }

// Err reports a listener that stopped serving on its own.
func (s *Server) Err() <-chan error { return s.errs }

// Shutdown stops accepting requests and waits for those in flight (not
// WebSockets, which end with the process) until ctx ends, then stops
// watching Consul.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.data.Shutdown(ctx)
	_ = s.admin.Shutdown(ctx)
	s.Proxy.Close()
	return err
}
