package server

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/bundle"
	"github.com/hashicorp/go-hclog"
)

// testBundle packs files; it returns the ID, the gzip bytes and the tar.
func testBundle(t *testing.T, files map[string]string) (string, []byte, []byte) {
	t.Helper()
	dir := t.TempDir()
	for p, body := range files {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tree, diags := bundle.Collect(dir, bundle.Selection{}, bundle.Limits{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var gz, tb bytes.Buffer
	id, err := bundle.Pack(&gz, tree)
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.WriteTar(&tb, tree); err != nil {
		t.Fatal(err)
	}
	return id, gz.Bytes(), tb.Bytes()
}

func TestBundleUploadAndFetch(t *testing.T) {
	e := newEnv(t)
	c := &api.Client{Addr: e.srv.URL, Token: e.shop.Token}
	ctx := context.Background()
	id, gz, tarBytes := testBundle(t, map[string]string{"server.js": "hi", "b.txt": "b"})

	if missing, err := c.MissingBundles(ctx, "", []string{id}); err != nil || !slices.Equal(missing, []string{id}) {
		t.Fatalf("missing %v, %v", missing, err)
	}
	// Streamed: the body is a pipe, of no known length.
	pr, pw := io.Pipe()
	go func() { pw.Write(gz); pw.Close() }()
	info, err := c.UploadBundle(ctx, "", id, pr)
	if err != nil || info.Files != 2 || info.Stored != int64(len(gz)) {
		t.Fatalf("upload: %+v, %v", info, err)
	}
	if missing, err := c.MissingBundles(ctx, "", []string{id}); err != nil || len(missing) != 0 {
		t.Fatalf("missing after the upload: %v, %v", missing, err)
	}
	if a := e.request(http.MethodPut, "/v1/bundles/"+id, "", bytes.NewReader(gz), nil); a.status != http.StatusUnauthorized {
		t.Errorf("an upload without a token: %d", a.status)
	}

	// The fetch needs no token; what it serves is the tar the ID hashes.
	path := "/v1/bundles/" + id + ".tar?job=shop--app&alloc=a1&sig="
	for _, enc := range []string{"", "gzip"} {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path+"good", nil)
		if enc != "" {
			req.Header.Set("Accept-Encoding", enc)
		}
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if enc == "gzip" {
			if resp.Header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("asked for gzip, got %q", resp.Header.Get("Content-Encoding"))
			}
			zr, _ := gzip.NewReader(bytes.NewReader(body))
			body, _ = io.ReadAll(zr)
		}
		sum := sha256.Sum256(body)
		if resp.StatusCode != 200 || hex.EncodeToString(sum[:]) != id || !bytes.Equal(body, tarBytes) {
			t.Errorf("fetch (%q): %d, %d bytes that hash to %x", enc, resp.StatusCode, len(body), sum[:6])
		}
		if _, err := tar.NewReader(bytes.NewReader(body)).Next(); err != nil {
			t.Errorf("not a tar: %v", err)
		}
	}
	if a := e.request(http.MethodGet, path+"forged", "", nil, nil); a.status != http.StatusUnauthorized || a.err == nil || a.err.Kind != api.CodeUnauthorized {
		t.Errorf("a forged signature: %d %v", a.status, a.err)
	}
	if a := e.request(http.MethodGet, "/v1/bundles/"+id+".zip?sig=good", "", nil, nil); a.status != http.StatusNotFound {
		t.Errorf("not .tar: %d", a.status)
	}
}

func TestBundleUploadRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id, gz, _ := testBundle(t, map[string]string{"a.txt": "a"})
	c := &api.Client{Addr: e.srv.URL, Token: e.shop.Token}

	// Bytes that are not the ID's: refused, not stored.
	other, _, _ := testBundle(t, map[string]string{"a.txt": "b"})
	if _, err := c.UploadBundle(ctx, "", other, bytes.NewReader(gz)); api.ErrorCodeOf(err) != api.CodeBadRequest || !strings.Contains(err.Error(), "hash to") {
		t.Errorf("a mismatched upload: %v", err)
	}
	if missing, _ := c.MissingBundles(ctx, "", []string{other}); len(missing) != 1 {
		t.Error("a mismatched upload was stored")
	}

	// A server with a small limit refuses a larger bundle with 413, naming
	// the largest files; a declared length past the bound is not read.
	e.orch.bundles.limits = bundle.Limits{MaxSize: 1000}
	small := httptest.NewServer(NewHandler(Deps{Orchestrator: e.orch, Tokens: e.tokens, BundleLimits: e.orch.bundles.limits,
		Logger: hclog.NewNullLogger()}))
	defer small.Close()
	sc := &api.Client{Addr: small.URL, Token: e.shop.Token}
	bigID, bigGz, _ := testBundle(t, map[string]string{"model.bin": strings.Repeat("x", 5000), "a.txt": "a"})
	_, err := sc.UploadBundle(ctx, "", bigID, bytes.NewReader(bigGz))
	if api.ErrorCodeOf(err) != api.CodeInputTooLarge || !strings.Contains(err.Error(), "model.bin (4.9 KiB)") {
		t.Errorf("over the limit: %v", err)
	}
	if _, err := sc.UploadBundle(ctx, "", id, bytes.NewReader(make([]byte, maxBundleBody(e.orch.bundles.limits)+1))); api.ErrorCodeOf(err) != api.CodeInputTooLarge {
		t.Errorf("a body past the bound: %v", err)
	}
	if _, err := sc.UploadBundle(ctx, "", id, bytes.NewReader(gz)); err != nil {
		t.Errorf("a bundle within the limit: %v", err)
	}
}
