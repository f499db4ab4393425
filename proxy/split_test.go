package proxy_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/proxy"
)

// getSplit sends a GET for fn with HeaderSplit set to split ("" sends
// none) and returns the status and the backend that answered.
func getSplit(t *testing.T, url, fn, split string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
	req.Header.Set(proxy.HeaderFunction, fn)
	if split != "" {
		req.Header.Set(proxy.HeaderSplit, split)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s (split %q): %v", fn, split, err)
	}
	defer res.Body.Close()
	return res.StatusCode, res.Header.Get("X-Backend")
}

func TestSplitChoosesByWeight(t *testing.T) {
	disc := newFakeDiscovery()
	var seenSplit []string
	old1, old2 := newBackend(t, "old1", nil), newBackend(t, "old2", nil)
	canary := newBackend(t, "canary", func(w http.ResponseWriter, r *http.Request) {
		seenSplit = append(seenSplit, r.Header.Get(proxy.HeaderSplit))
		w.Header().Set("X-Backend", "canary")
	})
	c := canary.instance()
	c.Canary = true
	disc.Set("fn", &proxy.Settings{MaxInputs: 4}, old1.instance(), old2.instance(), c)
	_, srv := newProxy(t, disc)
	eventually(t, "containers known", func() bool {
		_, b := getSplit(t, srv.URL, "fn", "")
		return b != ""
	})

	count := func(split string, n int) map[string]int {
		got := map[string]int{}
		for range n {
			status, b := getSplit(t, srv.URL, "fn", split)
			if status != 200 {
				t.Fatalf("split %q: status %d", split, status)
			}
			got[b]++
		}
		return got
	}
	if got := count("", 100); got["canary"] != 0 || got["old1"]+got["old2"] != 100 {
		t.Errorf("without a split: %v, want the canary to get none", got)
	}
	if got := count(proxy.SplitCanary, 20); got["canary"] != 20 {
		t.Errorf("preview: %v, want the canary alone", got)
	}
	for _, w := range []int{10, 30, 50, 100} {
		got := count(proxy.SplitHeader(w, []string{c.Addr}), 100)
		if got["canary"] != w || got["old1"]+got["old2"] != 100-w {
			t.Errorf("split at %d%%: %v, want exactly %d to the canary", w, got, w)
		}
	}
	for _, s := range seenSplit {
		if s != "" {
			t.Fatalf("the container saw %s: %q", proxy.HeaderSplit, s)
		}
	}

	// Promoted: Nomad re-tags the new container before the old ones go;
	// a split at 100 still sends the old ones nothing, and without a split
	// the promoted container is live.
	c.Canary = false
	disc.Set("fn", &proxy.Settings{MaxInputs: 4}, old1.instance(), old2.instance(), c)
	eventually(t, "the promoted container live", func() bool {
		_, b := getSplit(t, srv.URL, "fn", "")
		return b == "canary"
	})
	if got := count(proxy.SplitHeader(100, []string{c.Addr}), 50); got["canary"] != 50 {
		t.Errorf("split at 100%% after the promotion: %v, want the new container alone", got)
	}
	// The preview has no canary left to answer.
	if status, _ := getSplit(t, srv.URL, "fn", proxy.SplitCanary); status != http.StatusNotFound {
		t.Errorf("preview without canaries: %d, want 404", status)
	}
}

// A split whose new containers are all gone sends their share to the live
// version (Traefik's failover does so on the direct path); one whose
// containers are busy queues for them rather than spilling over.
func TestSplitFallsBackOnlyWhenEmpty(t *testing.T) {
	disc := newFakeDiscovery()
	old := newBackend(t, "old", nil)
	disc.Set("fn", &proxy.Settings{MaxInputs: 1}, old.instance())
	p, srv := newProxy(t, disc)
	for i := range 10 {
		if status, b := getSplit(t, srv.URL, "fn", proxy.SplitHeader(100, []string{"127.0.0.1:1"})); status != 200 || b != "old" {
			t.Fatalf("request %d to a split with no new container: %d from %q", i, status, b)
		}
	}

	slow := newBackend(t, "new", nil)
	slow.hold = make(chan struct{})
	n := slow.instance()
	n.Canary = true
	disc.Set("fn", &proxy.Settings{MaxInputs: 1}, old.instance(), n)
	split := proxy.SplitHeader(100, []string{n.Addr})
	eventually(t, "the new container known", func() bool { return len(load(p, "fn").Instances) == 2 })
	done := make(chan string, 2)
	for i := range 2 {
		go func() {
			_, b := getSplit(t, srv.URL, "fn", split)
			done <- strconv.Itoa(i) + ":" + b
		}()
	}
	eventually(t, "one request on the new container", func() bool { return slow.cur.Load() == 1 })
	// The second waits for it, not for the old one.
	if old.served.Load() != 10 {
		t.Fatalf("the old container served %d, want 10 (none of the split's)", old.served.Load())
	}
	close(slow.hold)
	for range 2 {
		if got := <-done; !strings.HasSuffix(got, ":new") {
			t.Errorf("a request of a split at 100%% answered by %q, want new", got)
		}
	}
}

// A split to another function (a canary version that runs as a function
// of its own) gives exactly its weight of the requests to that function's
// containers, counted as that function's load; at zero they queue there
// until its first container appears, while the rest go on to the live one.
func TestSplitToAnotherFunction(t *testing.T) {
	disc := newFakeDiscovery()
	live := newBackend(t, "live", nil)
	disc.Set("fn", &proxy.Settings{MaxInputs: 4}, live.instance())
	disc.Set("fn--canary", &proxy.Settings{MaxInputs: 4})
	p, srv := newProxy(t, disc)
	eventually(t, "the live container known", func() bool {
		_, b := getSplit(t, srv.URL, "fn", "")
		return b == "live"
	})

	// At zero: the canary function's share waits for its cold start.
	split := proxy.SplitFunctionHeader(50, "fn--canary")
	done := make(chan string, 1)
	go func() {
		// The first request of a split at 50 % goes to the live function,
		// the second to the canary function.
		if _, b := getSplit(t, srv.URL, "fn", split); b != "live" {
			done <- "first: " + b
			return
		}
		status, b := getSplit(t, srv.URL, "fn", split)
		done <- strconv.Itoa(status) + " " + b
	}()
	eventually(t, "a request queued for the canary function", func() bool { return load(p, "fn--canary").Queued == 1 })
	if l := load(p, "fn"); l.Queued != 0 {
		t.Errorf("the live function queued %d", l.Queued)
	}
	canary := newBackend(t, "canary", nil)
	disc.Set("fn--canary", &proxy.Settings{MaxInputs: 4}, canary.instance())
	if got := <-done; got != "200 canary" {
		t.Fatalf("the queued request of the canary function: %s, want 200 canary", got)
	}

	for _, w := range []int{10, 30, 100} {
		got := map[string]int{}
		for range 100 {
			status, b := getSplit(t, srv.URL, "fn", proxy.SplitFunctionHeader(w, "fn--canary"))
			if status != 200 {
				t.Fatalf("split at %d%%: status %d", w, status)
			}
			got[b]++
		}
		if got["canary"] != w || got["live"] != 100-w {
			t.Errorf("split at %d%% to another function: %v, want exactly %d to it", w, got, w)
		}
	}
	// The preview of such a canary names the function itself.
	if _, b := getSplit(t, srv.URL, "fn--canary", ""); b != "canary" {
		t.Errorf("the canary function by name: %q", b)
	}
}
