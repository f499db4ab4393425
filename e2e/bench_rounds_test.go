//go:build bench

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// latencies sends n sequential GETs to url and returns each one's time
// (failed ones left out).
func latencies(client *http.Client, url string, n int) []time.Duration {
	lat := make([]time.Duration, 0, n)
	for range n {
		began := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(began))
	}
	return lat
}

// throughput sends GETs to url from clients goroutines back to back for d
// (at most max in all) and returns the 200s a second; failed counts the
// other answers and errors, first names the first of them.
func throughput(client *http.Client, url string, clients int, d time.Duration, max int64) (rps float64, ok, failed int64, first string) {
	var n, bad atomic.Int64
	var firstMu sync.Mutex
	note := func(what string) {
		if bad.Add(1) == 1 {
			firstMu.Lock()
			first = what
			firstMu.Unlock()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	began := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && n.Load() < max {
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
	return float64(n.Load()) / time.Since(began).Seconds(), n.Load(), bad.Load(), first
}

func medianF(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func medianD(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(medianF(xs))
}

// loadAvg is the machine's 1-minute load average (/proc/loadavg), or -1.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, _, _ := strings.Cut(string(b), " ")
	v, err := strconv.ParseFloat(f, 64)
	if err != nil {
		return -1
	}
	return v
}

// machineBusy is the CPU time (all cores, clock ticks) the machine spent
// not idle so far, and its total (/proc/stat).
func machineBusy() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// pidsOf are the processes whose command line (NUL-separated arguments
// joined by spaces) contains every one of parts.
func pidsOf(parts ...string) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		all := true
		for _, p := range parts {
			all = all && strings.Contains(cmd, p)
		}
		if all {
			pid, _ := strconv.Atoi(filepath.Base(d))
			pids = append(pids, pid)
		}
	}
	return pids
}

// procTicks is the CPU time (user + system, clock ticks of 10 ms) the
// processes pids spent so far; one that is gone counts 0.
func procTicks(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command's ")" (which may hold spaces): state is
		// field 3, utime 14, stime 15.
		_, rest, ok := strings.Cut(string(b), ") ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		sum += u + s
	}
	return sum
}

// benchPath is one way to the same container.
type benchPath struct {
	name   string
	client *http.Client
	url    string
}

// roundResult is one path's figures in one round.
type roundResult struct {
	p50, p99 time.Duration
	rps      float64
	lat      []time.Duration
	ok, bad  int64
	first    string
	// ticks is CPU time (clock ticks) of each watched process during the
	// throughput phase, by name.
	ticks map[string]int64
}

// interleaved measures every path rounds times, the paths in a rotated
// order each round (round i starts at path i mod len), so that a change
// in the machine's load weighs on every path alike and every path takes
// every place in the order. Each round: seq sequential GETs (latency),
// then clients concurrent clients for conc (throughput), per path. The
// CPU of the processes in watch is read around each throughput phase.
func interleaved(paths []benchPath, rounds, seq, clients int, conc time.Duration, watch map[string][]int) [][]roundResult {
	out := make([][]roundResult, rounds)
	for r := range rounds {
		out[r] = make([]roundResult, len(paths))
		for k := range paths {
			i := (r + k) % len(paths)
			p := paths[i]
			lat := latencies(p.client, p.url, seq)
			before := map[string]int64{}
			for name, pids := range watch {
				before[name] = procTicks(pids)
			}
			rps, ok, bad, first := throughput(p.client, p.url, clients, conc, 1_000_000)
			ticks := map[string]int64{}
			for name, pids := range watch {
				ticks[name] = procTicks(pids) - before[name]
			}
			out[r][i] = roundResult{p50: percentile(lat, 50), p99: percentile(lat, 99), rps: rps, lat: lat,
				ok: ok, bad: bad, first: first, ticks: ticks}
		}
	}
	return out
}
