package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// TestRateLimitAnswers429 sets a tight per-endpoint limit and sends a quick
// burst: the first requests pass, the rest get 429 with Retry-After.
func TestRateLimitAnswers429(t *testing.T) {
	purge(t, "e2e--limited")
	js := `require("http").createServer((q, s) => s.end("ok\n")).listen(process.env.PORT, process.env.HOST);`
	src := fmt.Sprintf("app \"limited\" {\n  workspace = \"e2e\"\n  function \"web\" {\n    command = \"node\"\n    args = [\"-e\", %s]\n    web {\n      rate_limit = 2\n      burst      = 4\n    }\n  }\n}\n", strconv.Quote(js))
	res := deploy(t, "limited.hcl", src, api.DeployBody{})
	url := res.Functions[0].URL
	// Wait until the route answers (the bucket is full then: the deploy's
	// probe has a router of its own).
	eventually(t, 10*time.Second, "the bucket refills", func() error {
		status, _, err := get(t, url)
		if err != nil || status != 200 {
			return fmt.Errorf("%d %v", status, err)
		}
		return nil
	})

	var ok, limited int
	var retryAfter string
	for range 20 {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
		resp, err := env.https.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		drain(resp)
		switch resp.StatusCode {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			limited++
			retryAfter = resp.Header.Get("Retry-After")
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	t.Logf("20 quick requests at rate_limit = 2, burst = 4: %d passed, %d got 429 (Retry-After %q)", ok, limited, retryAfter)
	if ok < 2 || limited < 10 || retryAfter == "" {
		t.Fatalf("%d passed and %d limited (Retry-After %q); want a few passed, most limited, with Retry-After", ok, limited, retryAfter)
	}
}

// TestRateLimitIgnoresHostSpelling: the limit is the route's, one bucket
// whatever the Host header's spelling. Traefik's Host matcher takes the
// name in any case, with a port or a trailing dot, and buckets keyed by
// the Host header gave each spelling a limit of its own.
func TestRateLimitIgnoresHostSpelling(t *testing.T) {
	purge(t, "e2e--spelled")
	js := `require("http").createServer((q, s) => s.end("ok\n")).listen(process.env.PORT, process.env.HOST);`
	src := fmt.Sprintf("app \"spelled\" {\n  workspace = \"e2e\"\n  function \"web\" {\n    command = \"node\"\n    args = [\"-e\", %s]\n    web {\n      rate_limit = 1\n      burst      = 3\n    }\n  }\n}\n", strconv.Quote(js))
	res := deploy(t, "spelled.hcl", src, api.DeployBody{})
	url := res.Functions[0].URL
	host := strings.SplitN(strings.TrimPrefix(url, "https://"), ":", 2)[0]
	port := strconv.Itoa(env.stack.Ports.TraefikWebsecure)
	spellings := []string{host, strings.ToUpper(host), host + ":" + port, host + ".", strings.ToUpper(host) + ".:" + port,
		host + ":443"}
	// Let the bucket refill after the deploy's probe (a fuller bucket
	// only lets fewer requests through below).
	eventually(t, 10*time.Second, "the bucket refills", func() error {
		status, _, err := get(t, url)
		if err != nil || status != 200 {
			return fmt.Errorf("%d %v", status, err)
		}
		return nil
	})

	start := time.Now()
	ok := map[string]int{}
	total := 0
	for range 4 {
		for _, h := range spellings {
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
			req.Host = h
			resp, err := env.https.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			drain(resp)
			switch resp.StatusCode {
			case http.StatusOK:
				ok[h]++
				total++
			case http.StatusTooManyRequests:
			default:
				t.Fatalf("Host %q: status %d", h, resp.StatusCode)
			}
		}
	}
	elapsed := time.Since(start)
	// The bucket holds 3 and refills at 1 a second.
	allowed := 3 + int(elapsed.Seconds()) + 1
	t.Logf("%d requests in %s over %d spellings of the Host header at rate_limit = 1, burst = 3: %d passed %v", 4*len(spellings),
		elapsed.Round(time.Millisecond), len(spellings), total, ok)
	if total > allowed {
		t.Fatalf("%d requests passed (%v), want at most %d: each spelling of the Host header got a bucket of its own", total, ok, allowed)
	}
}

// TestRolloutLeavesTheRateLimitToCallers: the deploy probe has a router of
// its own (router.ProbeKey), so it spends none of the function's bucket;
// the first callers after a rollout get the whole burst, not 429.
func TestRolloutLeavesTheRateLimitToCallers(t *testing.T) {
	purge(t, "e2e--budget")
	spec := func(body string) string {
		js := fmt.Sprintf(`require("http").createServer((q, s) => s.end(%q)).listen(process.env.PORT, process.env.HOST);`, body)
		return fmt.Sprintf("app \"budget\" {\n  workspace = \"e2e\"\n  function \"web\" {\n    command = \"node\"\n    args = [\"-e\", %s]\n    web {\n      rate_limit = 5\n      burst      = 2\n    }\n  }\n}\n", strconv.Quote(js))
	}
	for i, body := range []string{"v1\n", "v2\n"} {
		res := deploy(t, "budget.hcl", spec(body), api.DeployBody{})
		url := res.Functions[0].URL
		// Right after the deploy returns, the burst is the callers'.
		for n := range 2 {
			status, got, err := get(t, url)
			if err != nil || status != http.StatusOK || got != body {
				t.Fatalf("deploy %d (version %d), caller %d: %d %q %v, want 200 %q: the deploy's probe spent the function's rate limit",
					i+1, res.Version, n+1, status, got, err, body)
			}
		}
	}
}
