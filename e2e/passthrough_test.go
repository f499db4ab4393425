package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// streamer is an app whose function streams server-sent events (/events:
// one every 300 ms, five in all), hashes POST bodies (/upload), says how
// many bytes of the last upload (/upload?id=ID) it received and whether
// that request is over (/received, also for an upload cut off before its
// end) and serves large responses (/big?mb=N).
const streamerJS = `
const crypto = require("crypto");
let received = {id: "", bytes: 0, closed: true};
require("http").createServer((q, s) => {
  const u = new URL(q.url, "http://x");
  if (u.pathname === "/events") {
    s.writeHead(200, {"content-type": "text/event-stream", "cache-control": "no-cache"});
    let n = 0;
    const t = setInterval(() => {
      s.write("data: " + n + " " + Date.now() + "\n\n");
      if (++n === 5) { clearInterval(t); s.end(); }
    }, 300);
    return;
  }
  if (u.pathname === "/upload") {
    const h = crypto.createHash("sha256"); let size = 0;
    const r = received = {id: u.searchParams.get("id") || "", bytes: 0, closed: false};
    q.on("data", c => { h.update(c); size += c.length; r.bytes = size; });
    q.on("close", () => { r.closed = true; });
    q.on("end", () => s.end(size + " " + h.digest("hex")));
    return;
  }
  if (u.pathname === "/received") {
    s.end(JSON.stringify(received));
    return;
  }
  if (u.pathname === "/big") {
    const mb = Number(u.searchParams.get("mb") || 1), chunk = Buffer.alloc(1 << 20, 97);
    s.writeHead(200, {"content-length": mb * chunk.length});
    for (let i = 0; i < mb; i++) s.write(chunk);
    s.end();
    return;
  }
  s.end("ok");
}).listen(process.env.PORT, process.env.HOST);
`

func deployStreamer(t *testing.T) string {
	t.Helper()
	purge(t, "e2e--streamer")
	src := fmt.Sprintf("app \"streamer\" {\n  workspace = \"e2e\"\n  function \"web\" {\n    command = \"node\"\n    args = [\"-e\", %s]\n    resources {\n      memory = 256\n    }\n    web {}\n  }\n}\n", strconv.Quote(streamerJS))
	return deploy(t, "streamer.hcl", src, api.DeployBody{}).Functions[0].URL
}

// TestStreamingAndLargeBodies: server-sent events arrive as they are sent
// (not buffered until the end), a 64 MiB upload and a 64 MiB download pass
// through Traefik intact.
func TestStreamingAndLargeBodies(t *testing.T) {
	url := deployStreamer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// SSE: the first event must arrive well before the stream ends (1.5 s).
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/events", nil)
	began := time.Now()
	resp, err := env.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	var arrivals []time.Duration
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			arrivals = append(arrivals, time.Since(began))
		}
	}
	resp.Body.Close()
	if len(arrivals) != 5 {
		t.Fatalf("got %d events, want 5", len(arrivals))
	}
	t.Logf("SSE arrivals: %v", arrivals)
	if arrivals[4]-arrivals[0] < 900*time.Millisecond {
		t.Fatalf("events arrived together (%v): the stream was buffered", arrivals)
	}

	// A 64 MiB upload arrives whole.
	const size = 64 << 20
	body := strings.NewReader(strings.Repeat("caravan!", size/8))
	sum := sha256.Sum256([]byte(strings.Repeat("caravan!", size/8)))
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, url+"/upload", body)
	resp, err = env.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d %s", size, hex.EncodeToString(sum[:])); resp.StatusCode != 200 || string(got) != want {
		t.Fatalf("upload: %d %q, want 200 %q", resp.StatusCode, got, want)
	}

	// A 64 MiB download arrives whole.
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, url+"/big?mb=64", nil)
	resp, err = env.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("download: %d bytes (%v), want %d", n, err, size)
	}
}

// TestBodyLimit: with max_body_size = "1MB", a larger declared body gets
// 413 before it reaches the function; a smaller one passes; a chunked body
// is cut off at the limit: the function never gets more than 1 MB of it,
// and the client gets Traefik's 500 (the plugin's MaxBytesReader fails the
// proxy's copy of the body, an error Traefik answers 500).
func TestBodyLimit(t *testing.T) {
	purge(t, "e2e--capped")
	src := fmt.Sprintf("app \"capped\" {\n  workspace = \"e2e\"\n  function \"web\" {\n    command = \"node\"\n    args = [\"-e\", %s]\n    web {\n      max_body_size = \"1MB\"\n    }\n  }\n}\n", strconv.Quote(streamerJS))
	url := deploy(t, "capped.hcl", src, api.DeployBody{}).Functions[0].URL
	post := func(body io.Reader, size int64) (int, string) {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url+"/upload?id="+strconv.FormatInt(size, 10), body)
		req.ContentLength = size
		resp, err := env.https.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := post(strings.NewReader(strings.Repeat("x", 2_000_000)), 2_000_000); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("2 MB declared body: %d %q, want 413", status, body)
	}
	if status, body := post(strings.NewReader(strings.Repeat("x", 512_000)), 512_000); status != 200 || !strings.HasPrefix(body, "512000 ") {
		t.Fatalf("512 KB body: %d %q, want 200 and all of it", status, body)
	}
	pr, pw := io.Pipe()
	go func() {
		chunk := []byte(strings.Repeat("y", 64<<10))
		for range 32 { // 2 MiB in all
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	status, body := post(pr, -1)
	if status != http.StatusInternalServerError || body != "Internal Server Error" {
		t.Errorf("2 MiB chunked body: %d %q, want Traefik's 500 \"Internal Server Error\"", status, body)
	}
	// What the function got of it, once its side of the request is over.
	var got struct {
		ID     string `json:"id"`
		Bytes  int64  `json:"bytes"`
		Closed bool   `json:"closed"`
	}
	eventually(t, 10*time.Second, "the function's side of the chunked upload ends", func() error {
		status, b, err := get(t, url+"/received")
		if err != nil {
			return err
		}
		if status != 200 {
			return fmt.Errorf("%d %q", status, b)
		}
		if err := json.Unmarshal([]byte(b), &got); err != nil {
			return fmt.Errorf("%w: %q", err, b)
		}
		if got.ID != "-1" {
			return fmt.Errorf("the chunked upload has not reached the function (last upload: %+v)", got)
		}
		if !got.Closed {
			return fmt.Errorf("still open after %d bytes", got.Bytes)
		}
		return nil
	})
	t.Logf("2 MiB chunked body: %d %q; the function received %d bytes", status, body, got.Bytes)
	if got.Bytes > 1_000_000 {
		t.Fatalf("the function received %d bytes of a chunked body past a 1 MB limit", got.Bytes)
	}
}
