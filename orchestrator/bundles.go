package orchestrator

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/bundle"
	"github.com/caravanhq/caravan/bundlestore"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/spec"
	nomad "github.com/hashicorp/nomad/api"
)

// This file holds what the orchestrator does with code bundles: the pure
// decisions (which function takes which bundle, what code a version
// changes, how a fetch URL is signed) and the I/O around the bundle
// store (upload, fetch, garbage collection).

// assignBundles gives each function of app its bundle from ids (function
// name -> bundle ID), as a deploy request or a stored version names them.
// nil ids is a deploy without code (every function runs without a
// bundle, as before bundles); otherwise every function that has a bundle
// (spec.App.FilesOf) needs a valid ID, and no other function may have one.
func assignBundles(app *spec.App, ids map[string]string) error {
	if ids == nil {
		return nil
	}
	seen := map[string]bool{}
	var problems []string
	for _, fn := range app.Functions {
		id, given := ids[fn.Name]
		seen[fn.Name] = true
		_, bundled := app.FilesOf(fn)
		switch {
		case bundled && !given:
			problems = append(problems, fmt.Sprintf("function %q has files but no bundle", fn.Name))
		case !bundled && given:
			problems = append(problems, fmt.Sprintf("function %q has no files (a docker function bundles nothing without its own files block), but a bundle was given", fn.Name))
		case given && !bundle.ValidID(id):
			problems = append(problems, fmt.Sprintf("function %q: %q is not a bundle ID (64 hex digits)", fn.Name, id))
		default:
			fn.Bundle = id
		}
	}
	for _, name := range slices.Sorted(maps.Keys(ids)) {
		if !seen[name] {
			problems = append(problems, fmt.Sprintf("a bundle for function %q, which the spec does not have", name))
		}
	}
	if len(problems) > 0 {
		return &BadRequestError{Why: "bundles: " + strings.Join(problems, "; ")}
	}
	return nil
}

// bundlesOf maps each function of app with a bundle to its ID (nil: none).
func bundlesOf(app *spec.App) map[string]string {
	var out map[string]string
	for _, fn := range app.Functions {
		if fn.Bundle != "" {
			if out == nil {
				out = map[string]string{}
			}
			out[fn.Name] = fn.Bundle
		}
	}
	return out
}

// codeChanged lists, sorted, the functions of now (function -> bundle)
// whose bundle differs from live's (the live version's; nil: none, or no
// live version), for a function that has a bundle in either.
func codeChanged(live, now map[string]string, hasLive bool) []string {
	if !hasLive {
		return nil
	}
	var out []string
	for _, name := range slices.Sorted(maps.Keys(now)) {
		if live[name] != now[name] {
			out = append(out, name)
		}
	}
	return out
}

// markCode sets CodeChanged on the results of the functions in changed.
func markCode(results []FunctionResult, changed []string) {
	for i := range results {
		results[i].CodeChanged = slices.Contains(changed, results[i].Name)
	}
}

// BundleSignature is the signature of a fetch URL of bundle id for the
// allocations of job: an HMAC-SHA256 of both under the cluster's bundle
// key (Store.BundleKey), so a URL opens that bundle only, for that job's
// allocations only.
func BundleSignature(key []byte, id, job string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("caravan bundle\n" + id + "\n" + job))
	return hex.EncodeToString(m.Sum(nil))
}

// signArtifacts adds its signature to every bundle fetch URL of js (the
// URLs jobs.Render makes). The signature depends only on the bundle, the
// job and the cluster's key, so the same version signs the same: Nomad
// sees no change in what it runs.
func signArtifacts(key []byte, js ...*nomad.Job) {
	for _, j := range js {
		for _, tg := range j.TaskGroups {
			for _, t := range tg.Tasks {
				for _, a := range t.Artifacts {
					id, job, ok := bundleSource(a)
					if ok && !strings.Contains(*a.GetterSource, "&sig=") {
						*a.GetterSource += "&sig=" + BundleSignature(key, id, job)
					}
				}
			}
		}
	}
}

// bundleSource reads the bundle ID and job of a bundle artifact.
func bundleSource(a *nomad.TaskArtifact) (id, job string, ok bool) {
	if a == nil || a.GetterSource == nil {
		return "", "", false
	}
	u, err := url.Parse(*a.GetterSource)
	if err != nil {
		return "", "", false
	}
	file, found := strings.CutPrefix(u.Path, "/v1/bundles/")
	id, tar := strings.CutSuffix(file, ".tar")
	if !found || !tar || !bundle.ValidID(id) {
		return "", "", false
	}
	return id, u.Query().Get("job"), true
}

// render renders app and signs its bundles' fetch URLs.
func (o *Orchestrator) render(ctx context.Context, app *spec.App) (*jobs.Rendered, error) {
	r, err := jobs.Render(app, o.router)
	if err != nil {
		return r, err
	}
	all := append([]*nomad.Job{r.Job}, append(slices.Clone(r.Periodic), r.Callable...)...)
	if err := o.sign(ctx, app, all...); err != nil {
		return nil, err
	}
	return r, nil
}

// sign signs the bundle and agent URLs of js, app's jobs, for their jobs.
func (o *Orchestrator) sign(ctx context.Context, app *spec.App, js ...*nomad.Job) error {
	if bundlesOf(app) == nil && !usesAgent(js) {
		return nil
	}
	key, err := o.bundleKey(ctx)
	if err != nil {
		return err
	}
	signArtifacts(key, js...)
	agent.Sign(key, js...)
	return nil
}

// bundleKey is the cluster's bundle key, read (or made) once.
func (o *Orchestrator) bundleKey(ctx context.Context) ([]byte, error) {
	if k := o.bundleKeyCache.Load(); k != nil {
		return *k, nil
	}
	k, err := o.store.BundleKey(ctx)
	if err != nil {
		return nil, &UnavailableError{Why: fmt.Sprintf("reading the bundle key from Consul: %v", err)}
	}
	o.bundleKeyCache.Store(&k)
	return k, nil
}

// checkBundles refuses, before anything changes, a change whose bundles
// the store lacks: a deploy whose code was not uploaded, a rollback to a
// version whose code was garbage-collected.
func (o *Orchestrator) checkBundles(ctx context.Context, app *spec.App, version int) error {
	ids := bundlesOf(app)
	if ids == nil {
		return nil
	}
	if o.bundles == nil {
		return &BadRequestError{Why: "this caravan server keeps no bundles (orchestrator.Config.Bundles is nil): deploy without them"}
	}
	missing := map[string]string{}
	known := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(ids)) {
		id := ids[name]
		has, ok := known[id]
		if !ok {
			var err error
			if has, err = o.holds(ctx, app.Workspace, id); err != nil {
				return &UnavailableError{Why: fmt.Sprintf("asking the bundle store for %s: %v", id, err)}
			}
			known[id] = has
		}
		if !has {
			missing[name] = id
		}
	}
	if len(missing) > 0 {
		return &BundleMissingError{Version: version, Missing: missing}
	}
	return nil
}

// holds reports whether workspace ws may deploy bundle id: the store has
// it, and ws uploaded its files (see Store.GrantBundle).
func (o *Orchestrator) holds(ctx context.Context, ws, id string) (bool, error) {
	if has, err := o.bundles.Has(ctx, id); err != nil || !has {
		return false, err
	}
	return o.store.BundleGranted(ctx, ws, id)
}

// bundleWorkspace is the workspace a bundle request by caller is for: its
// token's, or for an operator's token the one it names.
func bundleWorkspace(caller Caller, ws string) (string, error) {
	switch {
	case caller.Workspace != "*" && ws != "" && ws != caller.Workspace:
		return "", &ForbiddenError{Token: caller.Name, Workspace: ws}
	case caller.Workspace != "*":
		return caller.Workspace, nil
	case ws == "":
		return "", &BadRequestError{Why: "an operator's token names the workspace its bundles are for (workspace)"}
	}
	return ws, nil
}

// MissingBundles returns those of ids workspace ws (see bundleWorkspace)
// cannot deploy yet: the bundle store lacks them, or ws never uploaded
// their files. A bundle another workspace uploaded is missing to ws until
// it uploads the same files itself, which proves it holds them.
func (o *Orchestrator) MissingBundles(ctx context.Context, caller Caller, ws string, ids []string) ([]string, error) {
	if o.bundles == nil {
		return nil, &BadRequestError{Why: "this caravan server keeps no bundles"}
	}
	ws, err := bundleWorkspace(caller, ws)
	if err != nil {
		return nil, err
	}
	if len(ids) > maxBundleQuery {
		return nil, &BadRequestError{Why: fmt.Sprintf("at most %d bundle IDs at once", maxBundleQuery)}
	}
	out := []string{}
	for _, id := range ids {
		if !bundle.ValidID(id) {
			return nil, &BadRequestError{Why: fmt.Sprintf("%q is not a bundle ID (64 hex digits)", id)}
		}
		has, err := o.holds(ctx, ws, id)
		if err != nil {
			return nil, &UnavailableError{Why: fmt.Sprintf("asking the bundle store: %v", err)}
		}
		if !has && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

// maxBundleQuery bounds the IDs one MissingBundles asks about.
const maxBundleQuery = 1000

// PutBundle reads bundle id, gzip-compressed, from r, verifies it (it
// must hash to id and be a bundle caravan makes, within the limits) while
// it spools it to a temporary file, and stores it. A bundle already
// stored is verified all the same, unless workspace ws (see
// bundleWorkspace) uploaded it before: the upload proves that ws holds
// its files, and grants ws the bundle (Store.GrantBundle).
func (o *Orchestrator) PutBundle(ctx context.Context, caller Caller, ws, id string, r io.Reader) (*api.BundleInfo, error) {
	if o.bundles == nil {
		return nil, &BadRequestError{Why: "this caravan server keeps no bundles"}
	}
	ws, err := bundleWorkspace(caller, ws)
	if err != nil {
		return nil, err
	}
	if !bundle.ValidID(id) {
		return nil, &BadRequestError{Why: fmt.Sprintf("%q is not a bundle ID (64 hex digits)", id)}
	}
	has, err := o.bundles.Has(ctx, id)
	if err != nil {
		return nil, &UnavailableError{Why: fmt.Sprintf("asking the bundle store: %v", err)}
	}
	if has {
		granted, err := o.store.BundleGranted(ctx, ws, id)
		if err != nil {
			return nil, &UnavailableError{Why: err.Error()}
		}
		if !granted {
			info, err := bundle.Verify(r, id, o.bundleLimits)
			if err != nil {
				return nil, bundleError(err)
			}
			if err := o.store.GrantBundle(ctx, ws, id); err != nil {
				return nil, &UnavailableError{Why: err.Error()}
			}
			o.log.Info("bundle granted", "id", id, "workspace", ws, "caller", caller.Name)
			return &api.BundleInfo{ID: id, Files: info.Files, Size: info.Size, Existed: true}, nil
		}
		return &api.BundleInfo{ID: id, Existed: true}, nil
	}
	spool, err := os.CreateTemp(o.bundleSpool, "caravan-bundle-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	counted := &countingWriter{w: spool}
	info, err := bundle.Verify(io.TeeReader(r, counted), id, o.bundleLimits)
	if err != nil {
		return nil, bundleError(err)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if err := o.bundles.Put(ctx, id, spool, counted.n); err != nil {
		return nil, &UnavailableError{Why: fmt.Sprintf("storing bundle %s: %v", id, err)}
	}
	if err := o.store.GrantBundle(ctx, ws, id); err != nil {
		return nil, &UnavailableError{Why: err.Error()}
	}
	o.uploads.Add(1)
	o.log.Info("bundle stored", "id", id, "files", info.Files, "size", info.Size, "stored", counted.n, "caller", caller.Name)
	return &api.BundleInfo{ID: id, Files: info.Files, Size: info.Size, Stored: counted.n}, nil
}

// bundleError types what bundle.Verify refused.
func bundleError(err error) error {
	var (
		tl *bundle.TooLargeError
		mm *bundle.MismatchError
		in *bundle.InvalidError
	)
	switch {
	case errors.As(err, &tl):
		return &BundleTooLargeError{Limit: tl.Limit, Files: tl.Files > 0, Largest: tl.Largest}
	case errors.As(err, &mm), errors.As(err, &in):
		return &BundleInvalidError{Why: err.Error()}
	}
	// The body ended early, or could not be read.
	return &BadRequestError{Why: "reading the bundle: " + err.Error()}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// BundleUploads counts the bundles this orchestrator stored (a bundle
// the store had already is not counted).
func (o *Orchestrator) BundleUploads() int64 { return o.uploads.Load() }

// OpenBundle serves bundle id to Nomad's client that fetches it for
// allocation alloc of job: sig must be the URL's signature for id and
// job (BundleSignature), and alloc a live allocation of job (or of a run
// of it: a periodic launch, a dispatched call) whose task group fetches
// id. The URL thus opens one bundle, for the allocations that run it, for
// as long as they live. It returns the bundle's gzip-compressed bytes.
func (o *Orchestrator) OpenBundle(ctx context.Context, id, job, alloc, sig string) (io.ReadCloser, error) {
	if o.bundles == nil || !bundle.ValidID(id) || job == "" || alloc == "" {
		return nil, &BundleAccessError{Why: "a bundle URL names a bundle, a job, an allocation and a signature"}
	}
	key, err := o.bundleKey(ctx)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal([]byte(sig), []byte(BundleSignature(key, id, job))) {
		return nil, &BundleAccessError{Why: "the signature does not match the bundle and job"}
	}
	a, err := o.nomad.Allocation(ctx, alloc)
	if err != nil {
		return nil, &BundleAccessError{Why: fmt.Sprintf("allocation %s: %v", alloc, err)}
	}
	if why := allocMayFetch(a, id, job); why != "" {
		return nil, &BundleAccessError{Why: why}
	}
	rc, err := o.bundles.Open(ctx, id)
	if errors.Is(err, bundlestore.ErrNotFound) {
		return nil, &BundleMissingError{Missing: map[string]string{a.TaskGroup: id}}
	}
	if err != nil {
		return nil, &UnavailableError{Why: fmt.Sprintf("reading bundle %s: %v", id, err)}
	}
	return rc, nil
}

// allocMayFetch says why allocation a may not fetch bundle id signed for
// job, or "".
func allocMayFetch(a *nomad.Allocation, id, job string) string {
	switch {
	case a == nil:
		return "no such allocation"
	case a.JobID != job && !strings.HasPrefix(a.JobID, job+"/"):
		return fmt.Sprintf("allocation %s belongs to job %s, not %s", a.ID, a.JobID, job)
	case a.ClientStatus != nomad.AllocClientStatusPending && a.ClientStatus != nomad.AllocClientStatusRunning:
		return fmt.Sprintf("allocation %s is %s", a.ID, a.ClientStatus)
	case a.Job == nil:
		return fmt.Sprintf("allocation %s carries no job", a.ID)
	}
	for _, tg := range a.Job.TaskGroups {
		if tg.Name == nil || *tg.Name != a.TaskGroup {
			continue
		}
		for _, t := range tg.Tasks {
			for _, art := range t.Artifacts {
				if got, _, ok := bundleSource(art); ok && got == id {
					return ""
				}
			}
		}
	}
	return fmt.Sprintf("allocation %s does not run bundle %s", a.ID, id)
}

// CollectBundles deletes the stored bundles no version of any app's
// current history references, once they are older than grace (a bundle
// is uploaded before the version that runs it is recorded). It returns
// the IDs it deleted.
func (o *Orchestrator) CollectBundles(ctx context.Context, grace time.Duration) ([]string, error) {
	if o.bundles == nil {
		return nil, nil
	}
	// What the store holds is listed first: a bundle uploaded after the
	// versions are read is then not in the list.
	objects, err := o.bundles.List(ctx)
	if err != nil {
		return nil, err
	}
	referenced, err := o.referencedBundles(ctx)
	if err != nil {
		return nil, err
	}
	var deleted []string
	cutoff := time.Now().Add(-grace)
	for _, obj := range objects {
		if referenced[obj.ID] || obj.Stored.After(cutoff) {
			continue
		}
		if err := o.bundles.Delete(ctx, obj.ID); err != nil {
			return deleted, err
		}
		deleted = append(deleted, obj.ID)
		o.log.Info("bundle collected", "id", obj.ID, "size", obj.Size)
	}
	return deleted, nil
}

// referencedBundles are the bundles of every version of every app's
// current history.
func (o *Orchestrator) referencedBundles(ctx context.Context) (map[string]bool, error) {
	apps, err := o.store.Apps(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, rec := range apps {
		versions, err := o.store.Versions(ctx, rec.JobID, rec.Generation)
		if err != nil {
			return nil, err
		}
		for _, v := range versions {
			for _, id := range v.Bundles {
				out[id] = true
			}
		}
	}
	return out, nil
}

// atomicKey caches the bundle key.
type atomicKey = atomic.Pointer[[]byte]
