package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// h1Backend is a container that counts its connections and requests.
type h1Backend struct {
	*httptest.Server
	conns, reqs atomic.Int64
	mu          sync.Mutex
	open        map[net.Conn]bool
}

func newH1Backend(t *testing.T, h http.HandlerFunc) *h1Backend {
	b := &h1Backend{open: map[net.Conn]bool{}}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.reqs.Add(1)
		h(w, r)
	}))
	b.Config.ConnState = func(c net.Conn, s http.ConnState) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch s {
		case http.StateNew:
			b.conns.Add(1)
			b.open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(b.open, c)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

// closeConns closes every connection to b, as a container whose
// keep-alive timeout passed does.
func (b *h1Backend) closeConns() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.open {
		c.Close()
	}
}

// std counts the requests h1Transport passes on.
type std struct {
	n    atomic.Int64
	next http.RoundTripper
}

func (s *std) RoundTrip(r *http.Request) (*http.Response, error) {
	s.n.Add(1)
	return s.next.RoundTrip(r)
}

func newTestH1(t *testing.T) (*h1Transport, *std) {
	tr := defaultTransport()
	s := &std{next: tr}
	h1 := newH1Transport(s, tr.DialContext)
	t.Cleanup(h1.CloseIdleConnections)
	return h1, s
}

func roundTrip(t *testing.T, rt http.RoundTripper, method, url string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	res, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return res, string(b)
}

func TestH1KeepsConnections(t *testing.T) {
	b := newH1Backend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			io.WriteString(w, "a")
			http.NewResponseController(w).Flush()
			io.WriteString(w, "b")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			io.WriteString(w, "ok "+r.Method)
		}
	})
	h1, s := newTestH1(t)
	for i := range 20 {
		path := []string{"/", "/chunked", "/empty"}[i%3]
		res, body := roundTrip(t, h1, http.MethodGet, b.URL+path, nil)
		want := map[string]string{"/": "ok GET", "/chunked": "ab", "/empty": ""}[path]
		if body != want {
			t.Fatalf("GET %s: %d %q, want %q", path, res.StatusCode, body, want)
		}
	}
	if res, body := roundTrip(t, h1, http.MethodHead, b.URL+"/", nil); res.StatusCode != 200 || body != "" {
		t.Errorf("HEAD: %d %q", res.StatusCode, body)
	}
	if n := b.conns.Load(); n != 1 {
		t.Errorf("%d connections for 21 sequential requests, want 1", n)
	}
	if n := s.n.Load(); n != 0 {
		t.Errorf("%d requests passed on, want 0", n)
	}
}

func TestH1Bodies(t *testing.T) {
	b := newH1Backend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, body)
	})
	h1, s := newTestH1(t)
	big := strings.Repeat("x", 1<<20)
	for i := range 6 {
		body := []string{"x", big, ""}[i%3]
		var rd io.Reader = strings.NewReader(body)
		if i%3 == 2 {
			rd = nil
		}
		if _, got := roundTrip(t, h1, http.MethodPost, b.URL, rd); got != "POST "+body {
			t.Errorf("POST of %d bytes: %.20q", len(body), got)
		}
	}
	// Chunked: a body of unknown length.
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("a"))
		pw.Write([]byte("b"))
		pw.Close()
	}()
	if _, got := roundTrip(t, h1, http.MethodPut, b.URL, pr); got != "PUT ab" {
		t.Errorf("chunked PUT: %q", got)
	}
	if n := b.conns.Load(); n != 1 {
		t.Errorf("%d connections for 7 sequential requests, want 1", n)
	}
	req, _ := http.NewRequest(http.MethodGet, b.URL, nil)
	req.Header.Set("Upgrade", "websocket")
	if res, err := h1.RoundTrip(req); err == nil {
		res.Body.Close()
	}
	req, _ = http.NewRequest(http.MethodPost, b.URL, strings.NewReader("x"))
	req.Header.Set("Expect", "100-continue")
	if res, err := h1.RoundTrip(req); err == nil {
		res.Body.Close()
	}
	if n := s.n.Load(); n != 2 {
		t.Errorf("%d requests passed on, want 2 (an Upgrade, an Expect)", n)
	}
}

// TestH1EarlyAnswer: a container that answers before it read the body
// gets its answer through; the connection is not kept.
func TestH1EarlyAnswer(t *testing.T) {
	b := newH1Backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		io.WriteString(w, "ok")
	})
	h1, _ := newTestH1(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	pw2 := make(chan struct{})
	go func() {
		pw.Write([]byte("start"))
		<-pw2 // the rest never comes while the answer is read
	}()
	defer close(pw2)
	req, _ := http.NewRequest(http.MethodPost, b.URL, pr)
	res, err := h1.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("early answer: %d", res.StatusCode)
	}
	if _, body := roundTrip(t, h1, http.MethodGet, b.URL, nil); body != "ok" {
		t.Errorf("next: %q", body)
	}
}

// TestH1ClosedIdleConnection: a kept-alive connection the container
// closed is replaced, the request sent once.
func TestH1ClosedIdleConnection(t *testing.T) {
	b := newH1Backend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	h1, _ := newTestH1(t)
	for _, check := range []time.Duration{time.Hour, 0} { // found on use; found before use
		h1.checkAfter = check
		roundTrip(t, h1, http.MethodGet, b.URL, nil)
		b.closeConns()
		time.Sleep(10 * time.Millisecond) // the FIN arrives
		before := b.reqs.Load()
		if _, body := roundTrip(t, h1, http.MethodGet, b.URL, nil); body != "ok" {
			t.Fatalf("checkAfter %s: %q", check, body)
		}
		if n := b.reqs.Load() - before; n != 1 {
			t.Errorf("checkAfter %s: the container got %d requests, want 1", check, n)
		}
	}
	// A request that may not be sent twice checks its connection first.
	h1.checkAfter = time.Hour
	roundTrip(t, h1, http.MethodGet, b.URL, nil)
	b.closeConns()
	time.Sleep(10 * time.Millisecond)
	if _, body := roundTrip(t, h1, http.MethodPost, b.URL, strings.NewReader("x")); body != "ok" {
		t.Fatalf("a POST after the container closed its connection: %q", body)
	}
}

// TestH1ClientGone: a response the client left mid-stream ends, and its
// connection is not kept (its rest would be the next answer).
func TestH1ClientGone(t *testing.T) {
	release := make(chan struct{})
	b := newH1Backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			io.WriteString(w, "first")
			http.NewResponseController(w).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	})
	defer close(release)
	h1, _ := newTestH1(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+"/stream", nil)
	res, err := h1.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(res.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("first bytes: %q %v", buf, err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := res.Body.Read(buf)
		read <- err
	}()
	cancel()
	select {
	case err := <-read:
		if err == nil {
			t.Error("a read after the client left succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read blocked on after the client left")
	}
	res.Body.Close()
	if _, body := roundTrip(t, h1, http.MethodGet, b.URL+"/", nil); body != "ok" {
		t.Errorf("the next request: %q", body)
	}
	if n := b.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the cut one not kept)", n)
	}

	// A client gone before the answer: its error, not a retry.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, b.URL+"/", nil)
	if _, err := h1.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Errorf("a request whose client left: %v, want context.Canceled", err)
	}
}

// TestH1ConnectionClose: a response that closes its connection is read
// whole, and the next request dials anew.
func TestH1ConnectionClose(t *testing.T) {
	b := newH1Backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	h1, _ := newTestH1(t)
	for range 3 {
		if _, body := roundTrip(t, h1, http.MethodGet, b.URL, nil); body != "bye" {
			t.Fatalf("%q", body)
		}
	}
	if n := b.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

func TestH1SweepsIdle(t *testing.T) {
	b := newH1Backend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	h1, _ := newTestH1(t)
	h1.idleFor = 40 * time.Millisecond
	roundTrip(t, h1, http.MethodGet, b.URL, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		h1.mu.Lock()
		n := len(h1.idle)
		h1.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an idle connection was never closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
