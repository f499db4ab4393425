package proxy

import (
	"net"
	"net/http"
)

// ServeLean serves h on ln as Server serves its data plane (h1Server,
// falling back to net/http's Server) and returns what stops it.
func ServeLean(ln net.Listener, h http.Handler) (closeAll func()) {
	s := newH1Server(h, &http.Server{Handler: h})
	go s.Serve(ln)
	return func() {
		s.mu.Lock()
		s.closing = true
		ln.Close()
		for sc := range s.conns {
			sc.c.Close()
		}
		s.mu.Unlock()
		s.fallback.Close()
	}
}
