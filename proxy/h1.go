package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"sync"
	"time"
)

// h1Transport carries requests to containers: HTTP/1.1 over keep-alive
// connections, each request written and its response read on the
// goroutine of the request itself (a request's body, if any, is written by
// a goroutine of its own, so that the response may stream back while it
// is sent). net/http's Transport hands every request to a writer goroutine
// of its connection and every response back from a reader goroutine; on a
// loaded machine each handoff can wake a thread (futex, a context switch),
// which cost the proxy's warm path as much as its HTTP work (see the
// README's figures). It passes on to next what it does not take: Upgrades
// (WebSockets), Expect: 100-continue, anything but plain http.
type h1Transport struct {
	next http.RoundTripper
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// maxIdle bounds the idle connections kept per container; idleFor is
	// how long one is kept.
	maxIdle int
	idleFor time.Duration
	// checkAfter: a connection idle for longer is checked for a close by
	// the container (a read that must find nothing) before it is used; a
	// request that may not be sent twice checks every connection.
	checkAfter time.Duration

	mu    sync.Mutex
	idle  map[string][]*h1Conn // by address, most recently used last
	sweep *time.Timer          // set while connections are idle
}

type h1Conn struct {
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	addr   string
	idleAt time.Time
}

func newH1Transport(next http.RoundTripper, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *h1Transport {
	return &h1Transport{next: next, dial: dial, maxIdle: 1_000, idleFor: 90 * time.Second, checkAfter: time.Second,
		idle: map[string][]*h1Conn{}}
}

// takes reports whether t carries r itself.
func (t *h1Transport) takes(r *http.Request) bool {
	return r.URL.Scheme == "http" && r.Header.Get("Upgrade") == "" && r.Header.Get("Expect") == ""
}

func hasBody(r *http.Request) bool { return r.Body != nil && r.Body != http.NoBody }

// replayable: a request net/http's Transport would send again on a new
// connection when the kept-alive one it was written to turns out closed
// by the container, nothing read back: idempotent, no body.
func replayable(r *http.Request) bool {
	if hasBody(r) {
		return false
	}
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := r.Header["Idempotency-Key"]
	_, xkey := r.Header["X-Idempotency-Key"]
	return key || xkey
}

func (t *h1Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !t.takes(r) {
		return t.next.RoundTrip(r)
	}
	ctx := r.Context()
	again := replayable(r)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, reused, err := t.get(ctx, r.URL.Host, !again)
		if err != nil {
			return nil, err
		}
		resp, err := t.exchange(ctx, c, r)
		if err == nil {
			return resp, nil
		}
		c.nc.Close()
		// A kept-alive connection the container closed before it
		// answered: try a new one, as net/http's Transport does, when the
		// request may be sent again. A new connection fails for real.
		if !again || !reused || ctx.Err() != nil || !stale(err) {
			return nil, err
		}
	}
}

// stale reports whether err is a kept-alive connection found closed
// before anything of a response came back: the request's write failed,
// or the read of its first byte.
func stale(err error) bool {
	var n nothingBack
	return errors.As(err, &n)
}

type nothingBack struct{ error }

func (e nothingBack) Unwrap() error { return e.error }

// exchange writes r on c and reads its response, on this goroutine (the
// body, if any, on one of its own). The response's body reads from c and
// gives c back once read to its end.
func (t *h1Transport) exchange(ctx context.Context, c *h1Conn, r *http.Request) (*http.Response, error) {
	// A client gone (its request's context ended) unblocks any read or
	// write on c, here or in the body; c is then closed, not kept.
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	var wrote chan error // the body's writer's end, when there is one
	if hasBody(r) {
		wrote = make(chan error, 1)
		go func() {
			err := r.Write(c.bw)
			if err == nil {
				err = c.bw.Flush()
			}
			if err != nil {
				c.nc.SetDeadline(aLongTimeAgo) // nothing more to read either
			}
			wrote <- err
		}()
	} else {
		if err := r.Write(c.bw); err != nil {
			stop()
			return nil, nothingBack{err}
		}
		if err := c.bw.Flush(); err != nil {
			stop()
			return nil, nothingBack{err}
		}
	}
	fail := func(err error) (*http.Response, error) {
		stop()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if wrote != nil {
			select {
			case werr := <-wrote:
				if werr != nil {
					return nil, werr // the client's body failed, or the container's end
				}
			default:
			}
		}
		return nil, err
	}
	if _, err := c.br.Peek(1); err != nil {
		return fail(nothingBack{err})
	}
	for {
		resp, err := http.ReadResponse(c.br, r)
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			// 1xx before the answer (103 Early Hints): passed on as
			// net/http's Transport does, to ReverseProxy's trace.
			if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(resp.StatusCode, map[string][]string(resp.Header)); err != nil {
					return fail(err)
				}
			}
			continue
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return fail(errors.New("proxy: 101 Switching Protocols to a request without Upgrade"))
		}
		ex := &h1Body{rc: resp.Body, t: t, c: c, stop: stop, wrote: wrote, keep: !resp.Close && !r.Close}
		if resp.Body == http.NoBody {
			ex.done(true)
			return resp, nil
		}
		resp.Body = ex
		return resp, nil
	}
}

// maxWriteWait is how long a response's end waits for its request's body
// to be sent (net/http's Transport waits as long) before the connection
// is closed rather than kept.
const maxWriteWait = 50 * time.Millisecond

// h1Body is a response's body; its end ends the exchange.
type h1Body struct {
	rc    io.ReadCloser
	t     *h1Transport
	c     *h1Conn
	stop  func() bool
	wrote chan error
	keep  bool
	once  sync.Once
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.done(true)
	}
	return n, err
}

// Close before the end leaves the rest of the body on the connection,
// which then cannot carry another request.
func (b *h1Body) Close() error {
	b.done(false)
	return nil
}

// done ends the exchange: its connection is kept for the next request
// when the whole response was read, the request's body sent, and the
// client did not leave meanwhile; else it is closed.
func (b *h1Body) done(whole bool) {
	b.once.Do(func() {
		keep := b.keep && whole
		if b.wrote != nil && keep {
			select {
			case err := <-b.wrote:
				keep = err == nil
			default:
				t := time.NewTimer(maxWriteWait)
				select {
				case err := <-b.wrote:
					keep = err == nil
				case <-t.C:
					keep = false
				}
				t.Stop()
			}
		}
		if !b.stop() || !keep || b.c.br.Buffered() > 0 {
			b.c.nc.Close()
			return
		}
		b.t.put(b.c)
	})
}

var aLongTimeAgo = time.Unix(1, 0)

// get is an idle connection to addr (reused) or a new one.
func (t *h1Transport) get(ctx context.Context, addr string, check bool) (c *h1Conn, reused bool, err error) {
	now := time.Now()
	for {
		t.mu.Lock()
		list := t.idle[addr]
		if len(list) == 0 {
			t.mu.Unlock()
			break
		}
		c = list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[addr] = list[:len(list)-1]
		t.mu.Unlock()
		if now.Sub(c.idleAt) > t.idleFor || (check || now.Sub(c.idleAt) > t.checkAfter) && closedByPeer(c) {
			c.nc.Close()
			continue
		}
		return c, true, nil
	}
	nc, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return &h1Conn{nc: nc, br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10), addr: addr}, false, nil
}

// put keeps c idle for the next request to its address.
func (t *h1Transport) put(c *h1Conn) {
	c.idleAt = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.idle[c.addr]
	if len(list) >= t.maxIdle {
		c.nc.Close()
		return
	}
	t.idle[c.addr] = append(list, c)
	if t.sweep == nil {
		t.sweep = time.AfterFunc(t.idleFor/4, t.sweepIdle)
	}
}

// sweepIdle closes the connections idle for idleFor (those of containers
// gone with them), again while any are idle.
func (t *h1Transport) sweepIdle() {
	before := time.Now().Add(-t.idleFor)
	t.mu.Lock()
	defer t.mu.Unlock()
	for addr, list := range t.idle {
		n := 0
		for n < len(list) && list[n].idleAt.Before(before) { // oldest first
			list[n].nc.Close()
			n++
		}
		if n == len(list) {
			delete(t.idle, addr)
		} else if n > 0 {
			t.idle[addr] = slices.Delete(list, 0, n)
		}
	}
	t.sweep = nil
	if len(t.idle) > 0 {
		t.sweep = time.AfterFunc(t.idleFor/4, t.sweepIdle)
	}
}

// CloseIdleConnections closes the idle connections of both transports.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*h1Conn{}
	if t.sweep != nil {
		t.sweep.Stop()
		t.sweep = nil
	}
	t.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.nc.Close()
		}
	}
	if ci, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
