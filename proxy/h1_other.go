//go:build !unix

package proxy

// closedByPeer cannot tell here; a closed connection is found on use.
func closedByPeer(c *h1Conn) bool { return c.br.Buffered() > 0 }
