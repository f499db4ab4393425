package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
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
	// The deploy's own probe spent some of the bucket; let it refill.
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
