// Package e2ekit holds the test helpers caravan's two e2e packages (e2e,
// a single-agent stack, and e2e/cluster) share: polling with a deadline,
// GETs through Traefik, the CLI run as a process, the removal of an app a
// test deployed, and steady load through Traefik. It holds no stack of its
// own: each package passes in its clients.
package e2ekit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Eventually polls cond every 200ms until it returns nil or timeout
// passes, then fails the test with the last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = cond(); last == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Get fetches url with c (a client through Traefik) and returns the
// status and body.
func Get(c *http.Client, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Answers polls url with c until it answers 200 with body, for at most
// timeout.
func Answers(t testing.TB, c *http.Client, timeout time.Duration, url, body string) {
	t.Helper()
	Eventually(t, timeout, "GET "+url+" answers "+strconv.Quote(body), func() error {
		status, got, err := Get(c, url)
		if err != nil {
			return err
		}
		if status != 200 || got != body {
			return fmt.Errorf("%d %q", status, got)
		}
		return nil
	})
}

// RunCLI runs the caravan CLI bin against the server at addr with token
// and returns its combined output and exit code.
func RunCLI(t testing.TB, bin, addr, token string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "CARAVAN_ADDR="+addr, "CARAVAN_TOKEN="+token)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), 0
}
