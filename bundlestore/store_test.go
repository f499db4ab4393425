package bundlestore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// testStore is what every Store must do, run against each.
func testStore(t *testing.T, s Store) {
	ctx := context.Background()
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	body := bytes.Repeat([]byte("bundle bytes "), 1000)

	if has, err := s.Has(ctx, a); err != nil || has {
		t.Fatalf("Has on an empty store: %v, %v", has, err)
	}
	if _, err := s.Open(ctx, a); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of a missing bundle: %v", err)
	}
	if err := s.Delete(ctx, a); err != nil {
		t.Fatalf("Delete of a missing bundle: %v", err)
	}
	if err := s.Put(ctx, a, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	if has, err := s.Has(ctx, a); err != nil || !has {
		t.Fatalf("Has after Put: %v, %v", has, err)
	}
	rc, err := s.Open(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Open read %d bytes, %v", len(got), err)
	}
	// A reader that fails stores nothing.
	if err := s.Put(ctx, b, iotest.ErrReader(errors.New("the client went away")), int64(len(body))); err == nil {
		t.Error("Put of a failing reader succeeded")
	}
	if has, _ := s.Has(ctx, b); has {
		t.Error("a failed Put left a bundle")
	}
	if err := s.Put(ctx, b, bytes.NewReader([]byte("b")), 1); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != a || list[0].Size != int64(len(body)) || list[1].ID != b ||
		time.Since(list[0].Stored) > time.Hour || time.Since(list[0].Stored) < -time.Hour {
		t.Fatalf("List = %+v", list)
	}
	if err := s.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	if has, _ := s.Has(ctx, a); has {
		t.Error("a deleted bundle is still there")
	}
	list, _ = s.List(ctx)
	if ids := []string{}; len(list) != 1 || list[0].ID != b {
		for _, o := range list {
			ids = append(ids, o.ID)
		}
		t.Errorf("List after Delete: %v", ids)
	}
	for _, bad := range []string{"../../etc/passwd", "", strings.Repeat("A", 64)} {
		if _, err := s.Has(ctx, bad); err == nil {
			t.Errorf("Has(%q) took it", bad)
		}
		if err := s.Put(ctx, bad, bytes.NewReader(nil), 0); err == nil {
			t.Errorf("Put(%q) took it", bad)
		}
	}
}

func TestLocal(t *testing.T) {
	dir := t.TempDir()
	testStore(t, &Local{Dir: dir})
	// Nothing is left of failed writes.
	var leftovers []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		sub, _ := os.ReadDir(dir + "/" + e.Name())
		for _, f := range sub {
			if strings.HasPrefix(f.Name(), ".put-") {
				leftovers = append(leftovers, f.Name())
			}
		}
	}
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	if list, err := (&Local{Dir: dir + "/none"}).List(context.Background()); err != nil || len(list) != 0 {
		t.Errorf("List of a directory not made yet: %v, %v", list, err)
	}
}

// TestS3 runs the same checks against the S3 backend, over HTTP, on
// gofakes3 (an S3 server in memory); TestS3Server (s3server_test.go)
// runs them on a real one when it can.
func TestS3(t *testing.T) {
	backend := s3mem.New()
	faker := gofakes3.New(backend)
	srv := httptest.NewServer(faker.Server())
	defer srv.Close()
	if err := backend.CreateBucket("bundles"); err != nil {
		t.Fatal(err)
	}
	s, err := NewS3(S3Config{Endpoint: strings.TrimPrefix(srv.URL, "http://"), Bucket: "bundles", Prefix: "caravan/", Region: "us-east-1",
		Insecure: true, AccessKey: "test", SecretKey: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	testStore(t, s)
	// Keys are under the prefix.
	objs, err := backend.ListBucket("bundles", &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs.Contents {
		keys = append(keys, o.Key)
	}
	if !slices.Equal(keys, []string{"caravan/bundles/" + strings.Repeat("b", 64) + ".tar.gz"}) {
		t.Errorf("keys %v", keys)
	}
	missing, _ := NewS3(S3Config{Endpoint: strings.TrimPrefix(srv.URL, "http://"), Bucket: "nope", Region: "us-east-1", Insecure: true, AccessKey: "t", SecretKey: "t"})
	if err := missing.CheckBucket(context.Background()); err == nil {
		t.Error("CheckBucket of a bucket that does not exist passed")
	}
}
