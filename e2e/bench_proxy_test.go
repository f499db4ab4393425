//go:build bench

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/orchestrator"
)

// measure sends sequential GETs for latency, then concurrent ones for
// throughput, each bounded in count and time.
func measure(client *http.Client, url string) (p50, p99 time.Duration, rps float64) {
	var lat []time.Duration
	for range 1000 {
		began := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(began))
	}
	slices.Sort(lat)
	p50, p99 = lat[len(lat)/2], lat[len(lat)*99/100]

	var n, failed atomic.Int64
	var firstMu sync.Mutex
	var first string
	note := func(what string) {
		if failed.Add(1) == 1 {
			firstMu.Lock()
			first = what
			firstMu.Unlock()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	began := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && n.Load() < 500_000 {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						note(err.Error())
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					n.Add(1)
				} else {
					note(resp.Status + " " + resp.Header.Get("Caravan-Error"))
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		// Not counted in the throughput; printed so that a path that
		// fails is not taken for a slow one.
		fmt.Printf("    %s: %d of %d concurrent requests failed or were not 200 (first: %s)\n", url, f, f+n.Load(), first)
	}
	return p50, p99, float64(n.Load()) / time.Since(began).Seconds()
}

// TestBenchProxy prints the cost of going through Traefik (HTTPS) against
// calling the same container directly (HTTP), and how long a new hostname
// waits for its certificate.
func TestBenchProxy(t *testing.T) {
	purge(t, "e2e--proxybench")
	// No rate limit: the bench is about the proxy, not the limiter.
	src := strings.Replace(nodeServer("proxybench", "ok\n", false), "web {}", "web {\n      rate_limit = 0\n    }", 1)

	// Certificate: from the moment the route answers (over whatever
	// certificate) until a certificate that verifies is served: with the
	// platform's wildcard, at once.
	insecure := orchestrator.ProxyClient(env.stack.HTTPSAddr(), nil)
	insecure.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	host := "e2e--proxybench-web." + env.stack.Domain
	url := fmt.Sprintf("https://%s:%d/", host, env.stack.Ports.TraefikWebsecure)
	var routed, verified time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(3 * time.Minute)
		for time.Now().Before(deadline) && verified.IsZero() {
			if routed.IsZero() {
				if resp, err := insecure.Get(url); err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						routed = time.Now()
					}
				}
			}
			if resp, err := env.https.Get(url); err == nil {
				resp.Body.Close()
				// A 404 before the route exists verifies too (the
				// wildcard is there before the app): only a 200 counts.
				if resp.StatusCode == 200 {
					verified = time.Now()
					if routed.IsZero() {
						routed = verified
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	deploy(t, "proxybench.hcl", src, api.DeployBody{})
	<-done

	// The container's own address, from Consul.
	entries, _, err := env.consul.Health().Service("e2e--proxybench-web", "", true, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("service entries: %d %v", len(entries), err)
	}
	direct := fmt.Sprintf("http://%s:%d/", entries[0].Service.Address, entries[0].Service.Port)
	tr := &http.Transport{MaxIdleConnsPerHost: 32}
	dp50, dp99, drps := measure(&http.Client{Transport: tr, Timeout: 10 * time.Second}, direct)
	proxied := orchestrator.ProxyClient(env.stack.HTTPSAddr(), env.roots)
	proxied.Transport.(*http.Transport).MaxIdleConnsPerHost = 32
	pp50, pp99, prps := measure(proxied, url)

	fmt.Printf("\ncaravan bench: Traefik in front of one Node.js container, keep-alive; %s\n", benchSetup())
	fmt.Printf("%-34s p50 %8s  p99 %8s  %7.0f req/s\n", "direct (HTTP to the container)", dp50.Round(time.Microsecond), dp99.Round(time.Microsecond), drps)
	fmt.Printf("%-34s p50 %8s  p99 %8s  %7.0f req/s\n", "through Traefik (HTTPS, verified)", pp50.Round(time.Microsecond), pp99.Round(time.Microsecond), prps)
	fmt.Printf("%-34s p50 %8s  p99 %8s\n", "added by the proxy", (pp50 - dp50).Round(time.Microsecond), (pp99 - dp99).Round(time.Microsecond))
	fmt.Println("    latency: 1,000 sequential GETs each way; throughput: 16 concurrent clients for 5 s each way, in the same run")
	fmt.Printf("%-34s %s  (served: %v)\n", "new hostname to verified certificate", verified.Sub(routed).Round(time.Millisecond), servedCert(t, host).DNSNames)
	fmt.Println("    from the first 200 over any certificate to the first response over one that verifies (GETs every 20 ms from before the deploy); 0s: the first 200 already verified")
}
