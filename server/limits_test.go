package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/hashicorp/go-hclog"
)

// testLimits are short enough to see each cut in a test.
var testLimits = Limits{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 300 * time.Millisecond,
	WriteTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, MaxConcurrent: 2, LongMargin: time.Second}

// newLimitedEnv is newEnv served with limits, as Server serves it.
func newLimitedEnv(t *testing.T, l Limits) *env {
	t.Helper()
	e := newEnv(t)
	e.srv.Close()
	h := NewHandler(Deps{Orchestrator: e.orch, Tokens: e.tokens, Limits: l,
		Logger: hclog.New(&hclog.LoggerOptions{Output: e.log, Level: hclog.Debug})})
	e.srv = httptest.NewUnstartedServer(h)
	l.Apply(e.srv.Config)
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

// closedWithin reports whether the server ends conn within d: a read
// that returns EOF or a reset, after any answer it writes.
func closedWithin(t *testing.T, conn net.Conn, d time.Duration) (answer string, closed bool) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return string(b), false
	}
	return string(b), true
}

// A client that never finishes its headers, or its body, or that keeps an
// idle connection, is cut off at the server's timeouts.
func TestSlowClientsAreCutOff(t *testing.T) {
	e := newLimitedEnv(t, testLimits)
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	dial := func() net.Conn {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}

	// Headers that never end.
	conn := dial()
	fmt.Fprintf(conn, "POST /v1/deploy HTTP/1.1\r\nHost: caravan\r\nAuthorization: Bearer %s\r\n", e.shop.Token)
	if _, closed := closedWithin(t, conn, 2*time.Second); !closed {
		t.Error("a request whose headers never end still holds its connection after 2s")
	}

	// A body that never ends: the deploy is never carried out.
	conn = dial()
	fmt.Fprintf(conn, "POST /v1/deploy HTTP/1.1\r\nHost: caravan\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n{\"spec\": \"", e.shop.Token)
	if _, closed := closedWithin(t, conn, 2*time.Second); !closed {
		t.Error("a request whose body never ends still holds its connection after 2s")
	}
	if got := e.orch.last(); got != "" {
		t.Errorf("a body that never ended reached %s", got)
	}

	// An idle connection after an answer.
	conn = dial()
	fmt.Fprintf(conn, "GET /v1/health HTTP/1.1\r\nHost: caravan\r\n\r\n")
	answer, closed := closedWithin(t, conn, 2*time.Second)
	if !strings.HasPrefix(answer, "HTTP/1.1 200") || !closed {
		t.Errorf("an idle connection after %q: closed %v", answer, closed)
	}
}

// Past MaxConcurrent requests in flight the next gets 503 unavailable at
// once, /v1/health still answers, and a slot that frees serves again.
func TestConcurrentRequestsAreBounded(t *testing.T) {
	e := newLimitedEnv(t, testLimits)
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	held := make(chan struct{}, 16)
	e.orch.hold = func(ctx context.Context) error {
		held <- struct{}{}
		<-release
		return nil
	}
	var wg sync.WaitGroup
	for range testLimits.MaxConcurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(e.srv.URL + "/v1/health")
			if err == nil {
				resp.Body.Close()
			}
			req, _ := http.NewRequest("GET", e.srv.URL+"/v1/apps/demo/history", nil)
			req.Header.Set("Authorization", "Bearer "+e.shop.Token)
			if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
				t.Errorf("a held request: %v %v", resp, err)
			} else {
				resp.Body.Close()
			}
		}()
	}
	for range testLimits.MaxConcurrent {
		<-held
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/apps/demo/history", nil)
	req.Header.Set("Authorization", "Bearer "+e.shop.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("a request past the bound: %v after %v", err, time.Since(t0))
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header, body: b}
	if resp.StatusCode == http.StatusServiceUnavailable {
		a.err = asAPIErrorBody(b)
	}
	a.wantError(t, "a request past the bound", http.StatusServiceUnavailable, api.CodeUnavailable)
	if took := time.Since(t0); took > time.Second {
		t.Errorf("the 503 took %v", took)
	}
	if a.header.Get("Retry-After") == "" || !strings.Contains(string(a.body), "2 requests") {
		t.Errorf("503 without Retry-After or the bound: %v %s", a.header, a.body)
	}
	if h := e.request("GET", "/v1/health", "", nil, nil); h.status != 200 {
		t.Errorf("health past the bound: %d", h.status)
	}
	free()
	wg.Wait()
	e.orch.hold = nil
	if a := e.as(e.shop, "GET", "/v1/apps/demo/history", ""); a.status != 200 {
		t.Errorf("after the held requests: %d %s", a.status, a.body)
	}
}

// A deploy that takes longer than the read and write timeouts answers all
// the same, its context intact, and a log stream goes on past them, quiet
// spells longer than the write timeout included.
func TestLongRequestsOutliveTheTimeouts(t *testing.T) {
	e := newLimitedEnv(t, testLimits)
	e.orch.hold = func(ctx context.Context) error {
		select {
		case <-time.After(3 * testLimits.WriteTimeout):
			return nil
		case <-ctx.Done():
			return fmt.Errorf("the request's context ended: %w", ctx.Err())
		}
	}
	c := &api.Client{Addr: e.srv.URL, Token: e.shop.Token}
	if res, err := c.Deploy(context.Background(), "app.hcl", []byte("app {}"), time.Second); err != nil || res.Version != 1 {
		t.Errorf("a deploy longer than the timeouts: %+v, %v", res, err)
	}

	lines := 10
	e.orch.stream = func(ctx context.Context, w io.Writer) error {
		for i := range lines {
			if _, err := fmt.Fprintf(w, "line %d\n", i); err != nil {
				return err
			}
			w.(interface{ Flush() }).Flush()
			pause := testLimits.WriteTimeout / 3
			if i == lines/2 {
				// A quiet app: no line for longer than the timeout.
				pause = 2 * testLimits.WriteTimeout
			}
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	t0 := time.Now()
	var out strings.Builder
	if err := c.Logs(context.Background(), "demo", api.ChangeBody{}, &out); err != nil {
		t.Errorf("logs: %v", err)
	}
	if n := strings.Count(out.String(), "\n"); n != lines {
		t.Errorf("%d of %d lines in %v:\n%s", n, lines, time.Since(t0), out.String())
	}
	if took := time.Since(t0); took < 2*testLimits.WriteTimeout {
		t.Errorf("the stream took %v: the test shows nothing", took)
	}
}

func asAPIErrorBody(b []byte) *api.APIError {
	var env struct {
		Error *api.APIError `json:"error"`
	}
	_ = json.Unmarshal(b, &env)
	return env.Error
}
