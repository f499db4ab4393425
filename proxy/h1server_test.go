package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/proxy"
)

// rawExchange writes raw on a new connection to srvAddr and reads one
// response per method (HEAD, then the rest).
func rawExchange(t *testing.T, addr, raw string, methods ...string) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []*http.Response
	for _, m := range methods {
		res, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("response %d: %v", len(out), err)
		}
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatalf("response %d's body: %v", len(out), err)
		}
		res.Body = io.NopCloser(strings.NewReader(string(body)))
		out = append(out, res)
	}
	return out
}

func bodyOf(res *http.Response) string {
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// TestLeanServerFraming: the data plane's own server frames responses as
// net/http's does: a short body of unknown length gets its
// Content-Length, a long or flushed one is chunked with its trailers, a
// missing Content-Type is sniffed, HEAD and 204 have no body; pipelined
// requests are answered in order on one connection.
func TestLeanServerFraming(t *testing.T) {
	disc := newFakeDiscovery()
	big := strings.Repeat("x", 10_000)
	b := newBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/short":
			io.WriteString(w, "<html>hi</html>")
		case "/big":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, big)
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			http.NewResponseController(w).Flush()
			w.Header().Set("X-Sum", "42")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		}
	})
	disc.Set("fn", nil, b.instance())
	_, srv := newProxy(t, disc)
	addr := srv.Listener.Addr().String()
	req := func(method, path string) string {
		return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: x\r\n%s: fn\r\n\r\n", method, path, proxy.HeaderFunction)
	}
	res := rawExchange(t, addr, req("GET", "/short")+req("GET", "/big")+req("GET", "/trailer")+req("HEAD", "/short")+req("GET", "/empty"),
		"GET", "GET", "GET", "HEAD", "GET")
	if r := res[0]; r.ContentLength != 15 || r.Header.Get("Content-Type") != "text/html; charset=utf-8" || bodyOf(r) != "<html>hi</html>" {
		t.Errorf("short: length %d, type %q", r.ContentLength, r.Header.Get("Content-Type"))
	}
	if r := res[1]; bodyOf(r) != big || r.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("big: length %d, chunked %v", r.ContentLength, r.TransferEncoding)
	}
	if r := res[2]; len(r.TransferEncoding) == 0 || bodyOf(r) != "body" || r.Trailer.Get("X-Sum") != "42" {
		t.Errorf("trailer: %v, trailer %v", r.TransferEncoding, r.Trailer)
	}
	if r := res[3]; r.StatusCode != 200 || bodyOf(r) != "" {
		t.Errorf("HEAD: %d", r.StatusCode)
	}
	if r := res[4]; r.StatusCode != http.StatusNoContent || bodyOf(r) != "" {
		t.Errorf("204: %d", r.StatusCode)
	}
	for i, r := range res {
		if r.Header.Get("Date") == "" {
			t.Errorf("response %d has no Date", i)
		}
	}
}

// TestLeanServerHandsOver: what the data plane's own server does not take
// (HTTP/1.0, Expect: 100-continue, a head larger than its buffer) is
// served by net/http's.
func TestLeanServerHandsOver(t *testing.T) {
	disc := newFakeDiscovery()
	b := newBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d %s", r.Proto, len(r.Header.Get("X-Big")), body)
	})
	disc.Set("fn", nil, b.instance())
	_, srv := newProxy(t, disc)
	addr := srv.Listener.Addr().String()

	res := rawExchange(t, addr, fmt.Sprintf("GET / HTTP/1.0\r\nHost: x\r\n%s: fn\r\n\r\n", proxy.HeaderFunction), "GET")
	if got := bodyOf(res[0]); res[0].StatusCode != 200 || got != "HTTP/1.1 0 " {
		t.Errorf("HTTP/1.0: %d %q", res[0].StatusCode, got)
	}
	hdr := strings.Repeat("y", 20<<10)
	res = rawExchange(t, addr, fmt.Sprintf("GET / HTTP/1.1\r\nHost: x\r\n%s: fn\r\nX-Big: %s\r\n\r\n", proxy.HeaderFunction, hdr), "GET")
	if got := bodyOf(res[0]); res[0].StatusCode != 200 || got != fmt.Sprintf("HTTP/1.1 %d ", len(hdr)) {
		t.Errorf("a 20 KiB head: %d %q", res[0].StatusCode, got)
	}

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader("hello"))
	req.Header.Set(proxy.HeaderFunction, "fn")
	req.Header.Set("Expect", "100-continue")
	tr := &http.Transport{ExpectContinueTimeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	r, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := bodyOf(r); r.StatusCode != 200 || got != "HTTP/1.1 0 hello" {
		t.Errorf("Expect: 100-continue: %d %q", r.StatusCode, got)
	}
	r.Body.Close()
}

// TestLeanServerClientGone: a client that leaves a request in flight
// (not queued) ends it at the container too, once the request has run a
// moment.
func TestLeanServerClientGone(t *testing.T) {
	disc := newFakeDiscovery()
	b := newBackend(t, "a", nil)
	b.hold = make(chan struct{})
	defer close(b.hold)
	disc.Set("fn", nil, b.instance())
	p, srv := newProxy(t, disc)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n%s: fn\r\n\r\n", proxy.HeaderFunction)
	eventually(t, "in flight at the container", func() bool { return b.cur.Load() == 1 })
	c.Close()
	eventually(t, "the container's request ended", func() bool { return b.cur.Load() == 0 })
	eventually(t, "nothing in flight at the proxy", func() bool { return load(p, "fn").InFlight == 0 })
}

// TestLeanServerCutResponse: a container that dies mid-response cuts the
// client's response (it sees an error, never a whole body) and is counted
// failed, as under net/http's Server.
func TestLeanServerCutResponse(t *testing.T) {
	disc := newFakeDiscovery()
	b := newBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "part")
		http.NewResponseController(w).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	disc.Set("fn", nil, b.instance())
	p, srv := newProxy(t, disc)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	req.Header.Set(proxy.HeaderFunction, "fn")
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Error("a cut response read whole")
	}
	res.Body.Close()
	eventually(t, "the container ejected", func() bool {
		fl := load(p, "fn")
		return len(fl.Instances) == 1 && fl.Instances[0].Ejected
	})
}

// TestServerShutdownWaits: Server.Shutdown waits for a request in flight
// and lets it answer, then returns.
func TestServerShutdownWaits(t *testing.T) {
	disc := newFakeDiscovery()
	b := newBackend(t, "a", nil)
	b.hold = make(chan struct{})
	disc.Set("fn", nil, b.instance())
	s := proxy.NewServer(proxy.ServerConfig{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", Proxy: proxy.Config{Discovery: disc}})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	// An idle kept-alive connection does not hold Shutdown up.
	idle := &http.Client{Transport: &http.Transport{}}
	ireq, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr()+"/", nil)
	ireq.Header.Set(proxy.HeaderFunction, "nofn")
	if r, err := idle.Do(ireq); err == nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	answered := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr()+"/", nil)
		req.Header.Set(proxy.HeaderFunction, "fn")
		req.Header.Set("X-Seq", "1")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- err.Error()
			return
		}
		answered <- bodyOf(res)
		res.Body.Close()
	}()
	eventually(t, "in flight", func() bool { return b.cur.Load() == 1 })
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned with a request in flight: %v", err)
	case <-time.After(50 * time.Millisecond): // a bound on a wrong answer, not a timed assertion of a right one
	}
	close(b.hold)
	if got := <-answered; got != "a 1" {
		t.Errorf("the request in flight answered %q", got)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
