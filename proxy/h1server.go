package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// h1Server serves the data plane's HTTP/1.1 requests itself, one
// goroutine per connection that reads each request, runs the handler and
// writes its response, with nothing else woken on the way. net/http's
// Server starts, for every request, a goroutine that reads the connection
// in the background (to notice a client that leaves) and stops it at the
// request's end; on a loaded machine that start and stop can each wake a
// thread, which the warm path pays on every request (see the README's
// figures). h1Server notices a client that leaves only once a request has
// lasted watchAfter or up to twice that (a queued or long request; a
// short one ends first), by the same background read.
//
// It hands over to fallback (net/http's Server, for the life of the
// connection) whatever it does not take: a request with Upgrade
// (WebSockets) or Expect, any protocol but HTTP/1.1, a head larger than
// its buffer.
type h1Server struct {
	handler  http.Handler
	fallback *http.Server
	handoff  *connListener
	// readHeaderTimeout bounds the read of a request's head, from its
	// first byte (an idle connection waits as long as it likes, as with
	// net/http without IdleTimeout).
	readHeaderTimeout time.Duration
	// watchAfter is how long a request runs before its connection is
	// watched for the client leaving.
	watchAfter time.Duration
	// base is every request's context's parent: it names fallback as
	// the server (http.ServerContextKey), so that ReverseProxy aborts a
	// response cut off by its container as it does under net/http.
	base context.Context

	mu      sync.Mutex
	ln      net.Listener
	conns   map[*h1ServerConn]bool // true: serving a request
	closing bool
	idle    chan struct{} // closed when closing and no request is served
}

func newH1Server(handler http.Handler, fallback *http.Server) *h1Server {
	s := &h1Server{handler: handler, fallback: fallback, readHeaderTimeout: 30 * time.Second,
		watchAfter: 50 * time.Millisecond, conns: map[*h1ServerConn]bool{}, idle: make(chan struct{})}
	s.handoff = newConnListener()
	s.base = context.WithValue(context.Background(), http.ServerContextKey, fallback)
	return s
}

// Serve accepts connections on ln until Shutdown (then it returns
// http.ErrServerClosed) or ln fails.
func (s *h1Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.handoff.addr = ln.Addr()
	s.mu.Unlock()
	go s.fallback.Serve(s.handoff)
	stop := make(chan struct{})
	defer close(stop)
	go s.watchLong(stop)
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return http.ErrServerClosed
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() { // as net/http's Server: EMFILE and the like
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		sc := &h1ServerConn{s: s, c: c}
		if !s.track(sc, false) {
			c.Close()
			continue
		}
		go sc.serve()
	}
}

// watchLong starts the watch (see h1ServerConn.watch) of every request
// served for watchAfter at least (two ticks of it, at most), until stop.
// A ticker of its own rather than a timer per request: a timer set
// earlier than every other wakes the thread waiting in the network
// poller to wait less, on every request.
func (s *h1Server) watchLong(stop <-chan struct{}) {
	t := time.NewTicker(s.watchAfter)
	defer t.Stop()
	var long []*h1ServerConn
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		long = long[:0]
		s.mu.Lock()
		for sc, busy := range s.conns {
			seq := sc.seq.Load()
			if busy && seq == sc.seen {
				long = append(long, sc)
			}
			sc.seen = seq
		}
		s.mu.Unlock()
		for _, sc := range long {
			sc.mu.Lock()
			sc.fired = true
			sc.mu.Unlock()
			sc.watch()
		}
	}
}

// track notes sc serving a request (busy) or idle; false: the server is
// shutting down and sc should close.
func (s *h1Server) track(sc *h1ServerConn, busy bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[sc] = busy
	return true
}

// forget drops sc (closed).
func (s *h1Server) forget(sc *h1ServerConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, sc)
	s.checkIdle()
}

// checkIdle closes idle once shutting down with no request served. Called
// with mu held.
func (s *h1Server) checkIdle() {
	if !s.closing {
		return
	}
	for _, busy := range s.conns {
		if busy {
			return
		}
	}
	select {
	case <-s.idle:
	default:
		close(s.idle)
	}
}

// Shutdown stops accepting, closes idle connections, and waits until no
// request is served (each connection closes once its request ends) or
// ctx ends; the fallback server shuts down alike.
func (s *h1Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	if s.ln != nil {
		s.ln.Close()
	}
	for sc, busy := range s.conns {
		if !busy {
			sc.c.Close()
		}
	}
	s.checkIdle()
	s.mu.Unlock()
	ferr := s.fallback.Shutdown(ctx)
	select {
	case <-s.idle:
		return ferr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connListener is a net.Listener of the connections h1Server hands over.
type connListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// give hands c over; false once the listener is closed.
func (l *connListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// replayConn is a connection whose first bytes are those its reader
// already buffered.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// h1ServerConn is one client connection of h1Server.
type h1ServerConn struct {
	s      *h1Server
	c      net.Conn
	src    connSource
	br     *bufio.Reader
	bw     *bufio.Writer
	remote string

	// seq counts its requests; seen is the count watchLong saw last
	// (under h1Server.mu).
	seq  atomic.Uint64
	seen uint64

	// The watch of the connection for a client that leaves (see watch).
	mu       sync.Mutex
	fired    bool // watchAfter passed
	bodyDone bool // the request's body was read to its end, or it has none
	reqDone  bool
	watching chan struct{} // closed when the watch's read returned
	gone     bool          // the watch's read found the connection closed
	cancel   context.CancelFunc
}

// connSource is the connection as its reader reads it, behind the byte a
// watch may have read.
type connSource struct {
	c       net.Conn
	one     [1]byte
	pending bool
}

func (s *connSource) Read(p []byte) (int, error) {
	if s.pending && len(p) > 0 {
		p[0] = s.one[0]
		s.pending = false
		return 1, nil
	}
	return s.c.Read(p)
}

// headBuffer is the size of a connection's read buffer: a request head
// larger than this goes to the fallback (net/http's limit is 1 MiB).
const headBuffer = 16 << 10

func (sc *h1ServerConn) serve() {
	s := sc.s
	handed := false
	defer func() {
		if !handed {
			sc.c.Close()
		}
		s.forget(sc)
	}()
	sc.src.c = sc.c
	sc.br = bufio.NewReaderSize(&sc.src, headBuffer)
	sc.bw = bufio.NewWriterSize(sc.c, 4<<10)
	sc.remote = sc.c.RemoteAddr().String()
	for {
		if _, err := sc.br.Peek(1); err != nil {
			return
		}
		if !s.track(sc, true) {
			return
		}
		sc.c.SetReadDeadline(time.Now().Add(s.readHeaderTimeout))
		head, err := peekHead(sc.br)
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
		if err != nil || !leanTakes(head) {
			sc.c.SetReadDeadline(time.Time{})
			handed = true
			s.forget(sc)
			if !s.handoff.give(&replayConn{Conn: sc.c, r: sc.br}) {
				sc.c.Close()
			}
			return
		}
		req, err := http.ReadRequest(sc.br)
		if err != nil {
			io.WriteString(sc.c, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request")
			return
		}
		sc.c.SetReadDeadline(time.Time{})
		if req.Host == "" {
			io.WriteString(sc.c, "HTTP/1.1 400 Bad Request: missing required Host header\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request: missing required Host header")
			return
		}
		if !sc.serveOne(req) {
			return
		}
		if !s.track(sc, false) {
			return
		}
	}
}

// peekHead is the request head at the start of br (through its blank
// line), read but left in br; bufio.ErrBufferFull when it is larger than
// br.
func peekHead(br *bufio.Reader) ([]byte, error) {
	for n := 1; ; {
		b, err := br.Peek(n)
		if err != nil {
			return nil, err
		}
		b, _ = br.Peek(br.Buffered())
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			return b[:i+4], nil
		}
		if i := bytes.Index(b, []byte("\n\n")); i >= 0 { // bare LFs, which net/http reads too
			return b[:i+2], nil
		}
		if len(b) == br.Size() {
			return nil, bufio.ErrBufferFull
		}
		n = len(b) + 1
	}
}

// leanTakes reports whether h1Server serves the request whose head is
// head itself: HTTP/1.1, neither Upgrade nor Expect.
func leanTakes(head []byte) bool {
	line, rest, _ := bytes.Cut(head, []byte("\n"))
	if !bytes.HasSuffix(bytes.TrimSuffix(line, []byte("\r")), []byte(" HTTP/1.1")) {
		return false
	}
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if bytes.EqualFold(name, []byte("Upgrade")) || bytes.EqualFold(name, []byte("Expect")) {
			return false
		}
	}
	return true
}

// maxDiscard is how much of a request's body the handler left unread is
// read away so that the connection can carry the next request (net/http
// reads as much); more, and the connection closes.
const maxDiscard = 256 << 10

// serveOne runs the handler for req and writes its response; false: the
// connection cannot carry another request.
func (sc *h1ServerConn) serveOne(req *http.Request) (keep bool) {
	s := sc.s
	ctx, cancel := context.WithCancel(s.base)
	defer cancel()
	req = req.WithContext(ctx)
	req.RemoteAddr = sc.remote
	sc.mu.Lock()
	sc.fired, sc.reqDone, sc.gone, sc.watching, sc.cancel = false, false, false, nil, cancel
	sc.bodyDone = req.Body == nil || req.Body == http.NoBody
	sc.mu.Unlock()
	var body *watchedBody
	if !sc.bodyDone {
		body = &watchedBody{rc: req.Body, sc: sc}
		req.Body = body
	}
	w := &h1Response{sc: sc, req: req, header: make(http.Header), contentLength: -1}
	sc.seq.Add(1) // for watchLong
	aborted := sc.run(w, req)
	gone := sc.unwatch()
	if aborted || gone {
		return false
	}
	if err := w.finish(); err != nil {
		return false
	}
	if body != nil {
		// What the handler left unread, within a bound.
		n, err := io.CopyN(io.Discard, body.rc, maxDiscard+1)
		if n > maxDiscard || err != io.EOF {
			return false
		}
	}
	return !req.Close && !w.closeAfter
}

// run is the handler on req; true: it aborted (panicked), and the
// connection closes with whatever was written.
func (sc *h1ServerConn) run(w *h1Response, req *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			aborted = true
			if v != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				if l := sc.s.fallback.ErrorLog; l != nil {
					l.Printf("http: panic serving %s: %v\n%s", sc.remote, v, buf)
				}
			}
			sc.bw.Flush()
		}
	}()
	sc.s.handler.ServeHTTP(w, req)
	return false
}

// watch starts reading the connection in the background, once the
// request has run for watchAfter and its body was read whole: a read that
// finds the connection closed (the client left) cancels the request's
// context. A byte read (the next request, pipelined) is kept for it.
func (sc *h1ServerConn) watch() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.fired || !sc.bodyDone || sc.reqDone || sc.watching != nil || sc.br.Buffered() > 0 {
		return
	}
	done := make(chan struct{})
	sc.watching = done
	go func() {
		defer close(done)
		n, err := sc.c.Read(sc.src.one[:])
		if n == 1 {
			sc.src.pending = true
			return
		}
		if err != nil && !isTimeout(err) {
			sc.mu.Lock()
			sc.gone = true
			cancel := sc.cancel
			sc.mu.Unlock()
			cancel()
		}
	}()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// unwatch ends the watch, if one runs, and reports whether it found the
// client gone.
func (sc *h1ServerConn) unwatch() (gone bool) {
	sc.mu.Lock()
	sc.reqDone = true
	done := sc.watching
	sc.mu.Unlock()
	if done == nil {
		return false
	}
	sc.c.SetReadDeadline(aLongTimeAgo)
	<-done
	sc.c.SetReadDeadline(time.Time{})
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.gone
}

// watchedBody is a request's body; its end lets the watch start.
type watchedBody struct {
	rc io.ReadCloser
	sc *h1ServerConn
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.sc.mu.Lock()
		first := !b.sc.bodyDone
		b.sc.bodyDone = true
		b.sc.mu.Unlock()
		if first {
			b.sc.watch()
		}
	}
	return n, err
}

func (b *watchedBody) Close() error { return nil } // the rest is read (or the connection closed) after the handler

// sniffLen is how much of a body net/http looks at for a Content-Type,
// and bufferedBody how much of a body it holds back before writing the
// head, to set Content-Length when the handler ends first.
const (
	sniffLen     = 512
	bufferedBody = 2048
)

// h1Response is h1Server's http.ResponseWriter, which frames the response
// as net/http's Server does: the head is held until the body passes
// bufferedBody, a flush or the handler's end (then with a Content-Length
// when none was set); otherwise chunked; a missing Content-Type is
// sniffed; Date is added; trailers (announced, or with http.TrailerPrefix)
// end a chunked body.
type h1Response struct {
	sc            *h1ServerConn
	req           *http.Request
	header        http.Header
	status        int
	wroteHead     bool
	chunked       bool
	noBody        bool  // HEAD, 204, 304
	contentLength int64 // -1: unknown
	written       int64
	buf           []byte // body held before the head
	trailers      []string
	closeAfter    bool
	err           error
}

func (w *h1Response) Header() http.Header { return w.header }

func (w *h1Response) WriteHeader(code int) {
	if w.status != 0 || w.err != nil {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 {
		// An informational answer (103 Early Hints) goes at once; 101
		// never comes here (Upgrades go to the fallback).
		w.writeStatus(code)
		if code != http.StatusContinue {
			w.writeFields(w.header, false)
		}
		w.sc.bw.WriteString("\r\n")
		w.fail(w.sc.bw.Flush())
		return
	}
	w.status = code
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if v := w.header.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			w.header.Del("Content-Length")
		}
	}
	for _, v := range w.header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
				w.trailers = append(w.trailers, k)
			}
		}
	}
	if strings.EqualFold(w.header.Get("Connection"), "close") {
		w.closeAfter = true
	}
}

func (w *h1Response) fail(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}

func (w *h1Response) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.wroteHead {
		if w.contentLength < 0 && len(w.buf)+len(p) <= bufferedBody {
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		w.writeHead(p)
	}
	w.writeBody(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

func (w *h1Response) writeBody(p []byte) {
	if len(p) == 0 {
		return
	}
	bw := w.sc.bw
	if w.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		bw.WriteString("\r\n")
		bw.Write(p)
		_, err := bw.WriteString("\r\n")
		w.fail(err)
		return
	}
	_, err := bw.Write(p)
	w.fail(err)
}

// writeHead writes the status line and header, then the body held so far;
// next (the write that made it come now, if any) is what the
// Content-Type is sniffed from when nothing is held.
func (w *h1Response) writeHead(next []byte) {
	w.wroteHead = true
	h := w.header
	if !w.noBody {
		if _, ok := h["Content-Type"]; !ok && h.Get("Content-Encoding") == "" {
			sniff := w.buf
			if len(sniff) == 0 {
				sniff = next
			}
			if len(sniff) > 0 {
				h.Set("Content-Type", http.DetectContentType(sniff[:min(len(sniff), sniffLen)]))
			}
		}
		if w.contentLength < 0 {
			if w.req.ProtoAtLeast(1, 1) {
				w.chunked = true
				h.Del("Content-Length")
				h["Transfer-Encoding"] = []string{"chunked"}
			} else {
				w.closeAfter = true
			}
		}
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{time.Now().UTC().Format(http.TimeFormat)}
	}
	if w.req.Close && !w.closeAfter {
		w.closeAfter = true
		h.Set("Connection", "close")
	}
	w.writeStatus(w.status)
	w.writeFields(h, true)
	_, err := w.sc.bw.WriteString("\r\n")
	w.fail(err)
	held := w.buf
	w.buf = nil
	w.writeBody(held)
}

func (w *h1Response) writeStatus(code int) {
	bw := w.sc.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code " + strconv.Itoa(code))
	}
	bw.WriteString("\r\n")
}

// headerValueFix replaces what may not appear in a header's value, as
// net/http's Header.Write does.
var headerValueFix = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ")

// writeFields writes h's fields; head: leave out the trailers'.
func (w *h1Response) writeFields(h http.Header, head bool) {
	bw := w.sc.bw
	for k, vv := range h {
		if head && strings.HasPrefix(k, http.TrailerPrefix) || !validFieldName(k) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			if strings.ContainsAny(v, "\r\n") {
				v = headerValueFix.Replace(v)
			}
			bw.WriteString(strings.TrimSpace(v))
			bw.WriteString("\r\n")
		}
	}
}

func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c == ':' || c >= 0x7f {
			return false
		}
	}
	return true
}

// Flush writes what is held and sends it.
func (w *h1Response) Flush() { _ = w.FlushError() }

func (w *h1Response) FlushError() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if !w.wroteHead {
		w.writeHead(nil)
	}
	w.fail(w.sc.bw.Flush())
	return w.err
}

// finish ends the response once the handler returned.
func (w *h1Response) finish() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if !w.wroteHead {
		if !w.noBody && w.contentLength < 0 {
			w.contentLength = int64(len(w.buf))
			w.header["Content-Length"] = []string{strconv.Itoa(len(w.buf))}
		}
		w.writeHead(nil)
	}
	bw := w.sc.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		tr := http.Header{}
		for _, k := range w.trailers {
			if vv, ok := w.header[k]; ok {
				tr[k] = vv
			}
		}
		for k, vv := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				tr[http.CanonicalHeaderKey(name)] = vv
			}
		}
		w.writeFields(tr, false)
		bw.WriteString("\r\n")
	}
	w.fail(bw.Flush())
	if w.err == nil && !w.noBody && !w.chunked && w.written < w.contentLength {
		w.err = errors.New("response shorter than its Content-Length")
	}
	return w.err
}
