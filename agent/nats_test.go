package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestFetchNATSErrors: what FetchNATS's errors say names neither the
// URL's signature nor a credential in a malformed answer.
func TestFetchNATSErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"token":"cw2.secret-credential"}`))
	}))
	defer srv.Close()
	for name, u := range map[string]string{
		"an answer without a URL": srv.URL + NATSPath + "?job=j&alloc=a&sig=secret-sig",
		"no server":               "http://127.0.0.1:1" + NATSPath + "?job=j&alloc=a&sig=secret-sig",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		_, err := FetchNATS(ctx, u, nil)
		cancel()
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		if s := err.Error(); strings.Contains(s, "secret") {
			t.Errorf("%s: %s", name, s)
		}
	}
}

func TestRedactSig(t *testing.T) {
	for in, want := range map[string]string{
		"http://s:7474/v1/agent/nats?job=a--b&alloc=x&sig=abc": "http://s:7474/v1/agent/nats?alloc=x&job=a--b&sig=REDACTED",
		"http://s:7474/v1/agent/nats?job=a--b":                 "http://s:7474/v1/agent/nats?job=a--b",
		"http://s:7474/%zz?sig=abc":                            "(an agent URL)",
	} {
		if got := redactSig(in); got != want {
			t.Errorf("redactSig(%q) = %q, want %q", in, got, want)
		}
	}
}
