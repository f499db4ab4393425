package queue

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures the NATS server caravan server runs in its own
// process when no --nats-url names an external one.
type EmbeddedConfig struct {
	// Dir holds JetStream's files (streams, KV, objects): a restart of the
	// server, or of caravan server, loses nothing written there.
	Dir string
	// Listen is host:port to listen on; empty is 127.0.0.1 on a free port.
	Listen string
	// Token is caravan server's secret (every subject); workers present
	// credentials minted under it (Mint), which reach their own function
	// only (Authenticator). Required.
	Token string
}

// Embedded is a NATS server with JetStream running in this process.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a NATS server with JetStream on file storage in
// cfg.Dir, and waits until it takes connections.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Token == "" {
		return nil, errors.New("the embedded NATS server needs a token")
	}
	host, port := "127.0.0.1", server.RANDOM_PORT
	if cfg.Listen != "" {
		h, p, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("--nats-listen %q: give host:port, such as 127.0.0.1:4222", cfg.Listen)
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("--nats-listen %q: the port is not a number", cfg.Listen)
		}
		host, port = h, n
		if port == 0 {
			port = server.RANDOM_PORT
		}
	}
	opts := &server.Options{
		ServerName:                 "caravan",
		Host:                       host,
		Port:                       port,
		JetStream:                  true,
		StoreDir:                   cfg.Dir,
		CustomClientAuthentication: Authenticator{Token: cfg.Token},
		MaxPayload:                 MaxMessage,
		NoSigs:                     true,
		NoLog:                      true,
		// HTTP monitoring, clustering and leaf nodes stay off.
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS on %s:%d did not start within 30s (is the port taken, or %s not writable?)", host, port, cfg.Dir)
	}
	return &Embedded{srv: srv}, nil
}

// URL is the nats:// URL clients connect to.
func (e *Embedded) URL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits until it has.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
