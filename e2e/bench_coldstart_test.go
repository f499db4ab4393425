//go:build bench

package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// listenJS reports when it listened: /listened answers "<unix ms at
// listen> <ms from process start to listen>".
const listenJS = `let at = 0, own = 0;
require("http").createServer((q, s) => {
  if (q.url === "/listened") { s.end(at + " " + own); return; }
  s.end("ok");
}).listen(process.env.PORT, process.env.HOST, () => { at = Date.now(); own = Math.round(process.uptime() * 1000); });`

// TestBenchColdStart prints what a cold start costs beyond the
// container's own start (`just bench`, issue 13's figure): request at zero
// → 200, minus the container's own time to listen (process start to
// listen, as it reports), and from its listen to the 200. It asserts
// nothing about speed.
func TestBenchColdStart(t *testing.T) {
	const app, job, service = "coldbench", "e2e--coldbench", "e2e--coldbench-web"
	const runs = 5
	purgeWithSettings(t, job, service)
	src := scaleFromZeroSpec(app, listenJS, 1, "2s")
	url := deploy(t, "coldbench.hcl", src, api.DeployBody{}).Functions[0].URL
	var totals, overheads, afterListen []time.Duration
	for i := range runs {
		eventually(t, 2*time.Minute, "the function at zero", func() error {
			if d, r := groupCount(t, job); d != 0 || r != 0 {
				return fmt.Errorf("%d desired, %d running", d, r)
			}
			// A stopped container leaves Consul last: until then the
			// proxies may still give it a request.
			if entries, _, err := env.consul.Health().Service(service, "", false, nil); err != nil || len(entries) > 0 {
				return fmt.Errorf("%d containers in Consul (%v)", len(entries), err)
			}
			return nil
		})
		began := time.Now()
		status, body, err := getWithin(t, url+"/", time.Minute)
		answered := time.Now()
		if err != nil || status != http.StatusOK || body != "ok" {
			t.Fatalf("run %d: request at zero: %d %q %v", i, status, body, err)
		}
		status, body, err = getWithin(t, url+"/listened", time.Minute)
		var atMS, ownMS int64
		if _, serr := fmt.Sscanf(body, "%d %d", &atMS, &ownMS); err != nil || status != http.StatusOK || serr != nil {
			t.Fatalf("run %d: /listened: %d %q %v %v", i, status, body, err, serr)
		}
		total, own := answered.Sub(began), time.Duration(ownMS)*time.Millisecond
		after := answered.Sub(time.UnixMilli(atMS))
		totals, overheads, afterListen = append(totals, total), append(overheads, total-own), append(afterListen, after)
		t.Logf("run %d: 200 after %s; the container listened %s after its process started; listen → 200 %s",
			i, total.Round(time.Millisecond), own, after.Round(time.Millisecond))
	}
	t.Logf("BENCH cold start (%d runs): request at zero → 200 %s; minus the container's own time to listen: %s (goal ≤ 250ms); its listen → 200: %s",
		runs, fmtDurations(totals), fmtDurations(overheads), fmtDurations(afterListen))
}

func fmtDurations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Round(time.Millisecond).String()
	}
	return strings.Join(parts, ", ")
}
