package e2e

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// lateListener is a spec of one web function whose Node.js server answers
// body, and listens only after delay.
func lateListener(app, body string, delay time.Duration) string {
	js := fmt.Sprintf(`const s = require("http").createServer((q, r) => r.end(%s)); setTimeout(() => s.listen(process.env.PORT, process.env.HOST), %d);`,
		strconv.Quote(body), delay.Milliseconds())
	return nodeApp(app, js)
}

// TestNewAppThatListensLate: a new app's deploy ends only once its URL
// really answers, here 2 s after the process starts (Consul's first check
// of it fails, and a route that went live before the check passed would
// be a deploy that reports success early); and a rolling update's
// replacement that listens as late takes no request before it listens: no
// request fails under steady load across it.
func TestNewAppThatListensLate(t *testing.T) {
	const app, id = "late", "e2e--late"
	purge(t, id)
	res := deploy(t, "late.hcl", lateListener(app, "v1\n", 2*time.Second), api.DeployBody{})
	url := res.Functions[0].URL
	// One GET, no retry: the deploy said it serves.
	if status, body, err := get(t, url+"/"); err != nil || status != 200 || body != "v1\n" {
		t.Fatalf("right after the deploy returned, GET %s: %d %q %v", url, status, body, err)
	}

	stop := make(chan struct{})
	l := runLoad(context.Background(), url+"/", 100, stop)
	res = deploy(t, "late.hcl", lateListener(app, "v2\n", 2*time.Second), api.DeployBody{Strategy: "rolling"})
	t.Logf("rolling update to a late listener: version %d in %s", res.Version, res.Duration.Round(time.Millisecond))
	if status, body, err := get(t, url+"/"); err != nil || status != 200 || body != "v2\n" {
		t.Errorf("right after the rolling deploy returned, GET %s: %d %q %v", url, status, body, err)
	}
	close(stop)
	<-l.Done
	sent, failed := l.Sent.Load(), l.Failed.Load()
	t.Logf("load: %d requests, %d failed", sent, failed)
	if sent == 0 || failed != 0 {
		t.Fatalf("%d of %d requests failed across a rolling update to a container that listens 2 s late; first: %v", failed, sent, l.FirstErrors())
	}
}
