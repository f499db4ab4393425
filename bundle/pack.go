package bundle

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"time"
)

// epoch is every entry's modification time.
var epoch = time.Unix(0, 0).UTC()

// header is the one tar header a file can have: a regular file, 0644 or
// 0755, owned by nobody, dated 1970, PAX where its name needs it.
func header(f File) *tar.Header {
	mode := int64(0o644)
	if f.Exec {
		mode = 0o755
	}
	return &tar.Header{Typeflag: tar.TypeReg, Name: f.Path, Size: f.Size, Mode: mode, ModTime: epoch, Format: tar.FormatPAX}
}

// WriteTar writes t as a tar stream to w: the bytes Hash hashes.
func WriteTar(w io.Writer, t *Tree) error {
	tw := tar.NewWriter(w)
	for _, f := range t.Files {
		if err := tw.WriteHeader(header(f)); err != nil {
			return fmt.Errorf("bundling %s: %w", f.Path, err)
		}
		if err := copyFile(tw, f); err != nil {
			return err
		}
	}
	return tw.Close()
}

// copyFile copies f's bytes, which must still be f.Size long.
func copyFile(w io.Writer, f File) error {
	r, err := os.Open(f.Abs)
	if err != nil {
		return fmt.Errorf("bundling %s: %w", f.Path, err)
	}
	defer r.Close()
	n, err := io.Copy(w, io.LimitReader(r, f.Size+1))
	switch {
	case err != nil:
		return fmt.Errorf("bundling %s: %w", f.Path, err)
	case n != f.Size:
		return &ChangedError{Path: f.Path}
	}
	return nil
}

// ChangedError: a file changed size while it was being bundled.
type ChangedError struct{ Path string }

func (e *ChangedError) Error() string {
	return fmt.Sprintf("%s changed while it was being bundled; try again", e.Path)
}

// Hash returns the bundle ID of t: the hex SHA-256 of its tar stream.
func Hash(t *Tree) (string, error) {
	h := sha256.New()
	if err := WriteTar(h, t); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Pack writes t gzip-compressed to w and returns its ID (see Hash).
func Pack(w io.Writer, t *Tree) (string, error) {
	h := sha256.New()
	zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err := WriteTar(io.MultiWriter(zw, h), t); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

var idRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidID reports whether id can be a bundle ID: 64 lower-case hex digits.
func ValidID(id string) bool { return idRE.MatchString(id) }

// Info is what Verify learnt of a bundle.
type Info struct {
	ID    string
	Files int
	// Size is the bytes of its files together.
	Size int64
}

// TooLargeError: a bundle past a bound, with its largest files so far.
type TooLargeError struct {
	// Size is how much was read before the bound stopped it; Files the
	// number of files, when that was the bound.
	Size, Limit int64
	Files       int
	Largest     []File
}

func (e *TooLargeError) Error() string {
	if e.Files > 0 {
		return fmt.Sprintf("the bundle holds more than %d files", e.Limit)
	}
	return fmt.Sprintf("the bundle's files come to more than %s (the largest: %s)", FormatSize(e.Limit), DescribeFiles(e.Largest))
}

// MismatchError: the bytes do not hash to the ID they came as.
type MismatchError struct{ Want, Got string }

func (e *MismatchError) Error() string {
	return fmt.Sprintf("the bundle's bytes hash to %s, not to its ID %s: it was changed on the way, or its files while it was made", e.Got, e.Want)
}

// InvalidError: a stream that is not a bundle caravan makes.
type InvalidError struct{ Why string }

func (e *InvalidError) Error() string { return "not a caravan bundle: " + e.Why }

// Verify reads a gzip-compressed bundle from r and checks it hashes to
// want, holds only regular files with safe, sorted, distinct relative
// paths and normalised modes, and stays within lim. It reads r to its end
// (or to the first problem).
func Verify(r io.Reader, want string, lim Limits) (_ *Info, err error) {
	lim = lim.withDefaults()
	// A stream cut short (a client gone, a body over its bound) is that
	// reader's error, not a bundle that is invalid.
	src := &firstError{r: r}
	defer func() {
		if err != nil && src.err != nil && !errors.Is(src.err, io.EOF) {
			err = fmt.Errorf("reading the bundle: %w", src.err)
		}
	}()
	zr, err := gzip.NewReader(src)
	if err != nil {
		return nil, &InvalidError{Why: "not gzip: " + err.Error()}
	}
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(zr, h))
	info := &Info{ID: want}
	var files []File
	last := ""
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &InvalidError{Why: err.Error()}
		}
		switch {
		case hdr.Typeflag != tar.TypeReg:
			return nil, &InvalidError{Why: fmt.Sprintf("%s is not a regular file", hdr.Name)}
		case !safePath(hdr.Name):
			return nil, &InvalidError{Why: fmt.Sprintf("%q is not a clean relative path", hdr.Name)}
		case hdr.Name <= last:
			return nil, &InvalidError{Why: fmt.Sprintf("%s is out of order", hdr.Name)}
		case hdr.Mode != 0o644 && hdr.Mode != 0o755:
			return nil, &InvalidError{Why: fmt.Sprintf("%s has mode %o", hdr.Name, hdr.Mode)}
		}
		last = hdr.Name
		info.Files++
		info.Size += hdr.Size
		files = append(files, File{Path: hdr.Name, Size: hdr.Size})
		if info.Files > lim.MaxFiles {
			return nil, &TooLargeError{Files: info.Files, Limit: int64(lim.MaxFiles)}
		}
		if info.Size > lim.MaxSize {
			return nil, &TooLargeError{Size: info.Size, Limit: lim.MaxSize, Largest: Largest(files, 5)}
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return nil, &InvalidError{Why: err.Error()}
		}
	}
	// The tar's end blocks are part of the ID; gzip checks its own CRC
	// at the end of the stream.
	if _, err := io.Copy(h, io.LimitReader(zr, 1<<20)); err != nil {
		return nil, &InvalidError{Why: err.Error()}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return nil, &MismatchError{Want: want, Got: got}
	}
	return info, nil
}

// firstError remembers the first error its reader returned.
type firstError struct {
	r   io.Reader
	err error
}

func (f *firstError) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err != nil && f.err == nil {
		f.err = err
	}
	return n, err
}

func safePath(p string) bool {
	return p != "" && p[0] != '/' && path.Clean(p) == p && p != "." && p != ".." && !hasDotDot(p)
}

func hasDotDot(p string) bool {
	for _, part := range splitSlash(p) {
		if part == ".." {
			return true
		}
	}
	return false
}

func splitSlash(p string) []string {
	var out []string
	start := 0
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return append(out, p[start:])
}

func hashBytes(b []byte) (string, error) {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
