package server

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/orchestrator"
)

// BundleTransfer bounds how long one bundle upload or fetch may take,
// past the server's read and write timeouts.
const BundleTransfer = 10 * time.Minute

// maxBundleBody is the most an upload of a bundle of at most limit bytes
// (its files together) may send: gzip of incompressible data is slightly
// larger than the data, and tar adds a header per file.
func maxBundleBody(lim bundle.Limits) int64 {
	if lim.MaxSize <= 0 {
		lim.MaxSize = bundle.DefaultMaxSize
	}
	if lim.MaxFiles <= 0 {
		lim.MaxFiles = bundle.DefaultMaxFiles
	}
	return lim.MaxSize + lim.MaxSize/100 + int64(lim.MaxFiles)*1536 + 1<<20
}

// missingBundles answers which of the listed bundles the server lacks.
func (h *handler) missingBundles(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	var body api.BundlesBody
	if err := decode(w, r, maxChangeBody, &body, false); err != nil {
		h.fail(w, err)
		return
	}
	missing, err := h.orch.MissingBundles(r.Context(), caller, body.Workspace, body.IDs)
	h.answer(w, api.BundlesBody{IDs: missing}, err)
}

// putBundle stores an uploaded bundle: its body, gzip-compressed, is
// streamed through verification (its ID, its entries, the limits) and
// read no further than the bound of a bundle within the limits.
func (h *handler) putBundle(w http.ResponseWriter, r *http.Request, caller api.Caller) {
	h.holdFor(w, BundleTransfer, BundleTransfer)
	limit := maxBundleBody(h.bundleLimits)
	if r.ContentLength > limit {
		h.fail(w, api.Errorf(api.CodeInputTooLarge, "the bundle upload is %d bytes, over the %s a bundle within this server's limits can take",
			r.ContentLength, bundle.FormatSize(limit)))
		return
	}
	body := &boundedBody{r: http.MaxBytesReader(w, r.Body, limit)}
	info, err := h.orch.PutBundle(r.Context(), caller, r.URL.Query().Get("workspace"), r.PathValue("id"), body)
	if err != nil && body.over {
		err = api.Errorf(api.CodeInputTooLarge, "the bundle upload is over the %s a bundle within this server's limits can take", bundle.FormatSize(limit))
	}
	h.answer(w, info, err)
}

// boundedBody notes whether its reader stopped at its bound: whatever
// the orchestrator makes of the short read, the answer is then 413.
type boundedBody struct {
	r    io.Reader
	over bool
}

func (b *boundedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		b.over = true
	}
	return n, err
}

// getBundle serves a bundle to a Nomad client's artifact fetch: no token,
// the URL's signature and the fetching allocation instead (see
// orchestrator.OpenBundle). The body is the tar stream whose SHA-256 is
// the bundle's ID (the artifact's checksum), sent gzip-encoded to a
// client that accepts it.
func (h *handler) getBundle(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("file"), ".tar")
	if !ok {
		h.fail(w, api.Errorf(api.CodeNotFound, "bundles are served as /v1/bundles/<id>.tar"))
		return
	}
	h.holdFor(w, BundleTransfer, BundleTransfer)
	q := r.URL.Query()
	rc, err := h.orch.OpenBundle(r.Context(), id, q.Get("job"), q.Get("alloc"), q.Get("sig"))
	if err != nil {
		h.log.Warn("bundle fetch refused", "id", id, "job", q.Get("job"), "alloc", q.Get("alloc"), "remote", r.RemoteAddr, "error", err)
		h.fail(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Cache-Control", "no-store")
	if acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = io.Copy(w, rc)
		}
		return
	}
	zr, err := gzip.NewReader(rc)
	if err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		if _, err := io.Copy(w, zr); err != nil {
			h.log.Warn("bundle fetch cut short", "id", id, "error", err)
		}
	}
	h.log.Debug("bundle served", "id", id, "alloc", q.Get("alloc"))
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && !strings.Contains(strings.ReplaceAll(params, " ", ""), "q=0") {
			return true
		}
	}
	return false
}

// BundleOrchestrator is what the bundle endpoints ask of the orchestrator.
type BundleOrchestrator interface {
	MissingBundles(ctx context.Context, caller api.Caller, workspace string, ids []string) ([]string, error)
	PutBundle(ctx context.Context, caller api.Caller, workspace, id string, r io.Reader) (*api.BundleInfo, error)
	OpenBundle(ctx context.Context, id, job, alloc, sig string) (io.ReadCloser, error)
}

var _ BundleOrchestrator = (*orchestrator.Orchestrator)(nil)
