//go:build unix

package proxy

import "syscall"

// closedByPeer reports whether the container closed (or wrote on) the
// idle connection c: a read that does not wait (and takes nothing) must
// find nothing.
func closedByPeer(c *h1Conn) bool {
	if c.br.Buffered() > 0 {
		return true
	}
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = n > 0 || err == nil || err != syscall.EAGAIN && err != syscall.EWOULDBLOCK
		return true
	})
	return closed || err != nil
}
