// Package bundlestore keeps code bundles (see package bundle) by their ID,
// behind one small interface with two implementations: a local directory
// (Local, the default: one caravan server, the local stack) and an
// S3-compatible object store (S3: several caravan servers share it). A
// store holds a bundle's gzip-compressed bytes as caravan server received
// and verified them; it does not check them again. Bundle bytes never go
// into Consul KV.
package bundlestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caravanhq/caravan/bundle"
)

// Store keeps bundles by ID. Implementations are safe for concurrent use.
type Store interface {
	// Has reports whether bundle id is stored.
	Has(ctx context.Context, id string) (bool, error)
	// Put stores size bytes read from r as bundle id, whole or not at
	// all: a reader that fails leaves nothing behind. Putting a stored ID
	// again replaces it with the same bytes' worth.
	Put(ctx context.Context, id string, r io.Reader, size int64) error
	// Open reads bundle id; ErrNotFound when it is not stored.
	Open(ctx context.Context, id string) (io.ReadCloser, error)
	// Delete removes bundle id; deleting one that is not stored is no error.
	Delete(ctx context.Context, id string) error
	// List returns every stored bundle, sorted by ID.
	List(ctx context.Context) ([]Object, error)
}

// Object is a stored bundle.
type Object struct {
	ID   string
	Size int64
	// Stored is when it was put.
	Stored time.Time
}

// ErrNotFound: no bundle of that ID is stored.
var ErrNotFound = errors.New("no such bundle")

// checkID refuses anything but a bundle ID, so no ID names a path or key
// outside the store.
func checkID(id string) error {
	if !bundle.ValidID(id) {
		return fmt.Errorf("%q is not a bundle ID (64 hex digits)", id)
	}
	return nil
}

// Local keeps bundles in a directory: <dir>/<id[:2]>/<id>.tar.gz, written
// to a temporary file first and renamed into place.
type Local struct {
	Dir string
}

var _ Store = (*Local)(nil)

const suffix = ".tar.gz"

func (l *Local) path(id string) string { return filepath.Join(l.Dir, id[:2], id+suffix) }

func (l *Local) Has(ctx context.Context, id string) (bool, error) {
	if err := checkID(id); err != nil {
		return false, err
	}
	_, err := os.Stat(l.path(id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

func (l *Local) Put(ctx context.Context, id string, r io.Reader, size int64) error {
	if err := checkID(id); err != nil {
		return err
	}
	p := l.path(id)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, r)
	if err == nil && n != size {
		err = fmt.Errorf("storing bundle %s: read %d bytes, expected %d", id, n, size)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

func (l *Local) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	f, err := os.Open(l.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return f, err
}

func (l *Local) Delete(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	err := os.Remove(l.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (l *Local) List(ctx context.Context) ([]Object, error) {
	var out []Object
	err := filepath.WalkDir(l.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == l.Dir {
				return fs.SkipAll
			}
			return err
		}
		id, ok := strings.CutSuffix(d.Name(), suffix)
		if d.IsDir() || !ok || !bundle.ValidID(id) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, Object{ID: id, Size: info.Size(), Stored: info.ModTime()})
		return nil
	})
	slices.SortFunc(out, func(a, b Object) int { return strings.Compare(a.ID, b.ID) })
	return out, err
}
