package bundlestore

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// weedBinary is a SeaweedFS build: $CARAVAN_WEED, else the one the
// README's recipe caches.
func weedBinary() string {
	if p := os.Getenv("CARAVAN_WEED"); p != "" {
		return p
	}
	home, _ := os.UserHomeDir()
	matches, _ := filepath.Glob(filepath.Join(home, ".cache", "caravan", "bin", "weed-*"))
	if len(matches) == 0 {
		return ""
	}
	return matches[len(matches)-1]
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestS3Server runs the Store checks on a real S3 server, SeaweedFS's,
// when a build of it is at hand (see weedBinary); without one it skips.
func TestS3Server(t *testing.T) {
	bin := weedBinary()
	if bin == "" {
		t.Skip("no SeaweedFS build (set CARAVAN_WEED, or cache one as ~/.cache/caravan/bin/weed-<version>)")
	}
	dir := t.TempDir()
	// Each server's gRPC port is its HTTP port + 10000: keep both free.
	port := func() int {
		for {
			p := freePort(t)
			if p+10000 < 65535 {
				if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000)); err == nil {
					l.Close()
					return p
				}
			}
		}
	}
	master, volume, filer, s3 := port(), port(), port(), port()
	cmd := exec.Command(bin, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir="+dir,
		"-master.port="+strconv.Itoa(master), "-volume.port="+strconv.Itoa(volume), "-filer.port="+strconv.Itoa(filer),
		"-s3", "-s3.port="+strconv.Itoa(s3), "-volume.max=5", "-master.volumeSizeLimitMB=64")
	logf, _ := os.Create(filepath.Join(dir, "weed.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	endpoint := fmt.Sprintf("127.0.0.1:%d", s3)
	admin, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4("caravan", "caravan-secret", ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		err = admin.MakeBucket(ctx, "bundles", minio.MakeBucketOptions{Region: "us-east-1"})
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "weed.log"))
		t.Fatalf("SeaweedFS did not take a bucket: %v\n%s", err, log)
	}
	s, err := NewS3(S3Config{Endpoint: endpoint, Bucket: "bundles", Prefix: "caravan/", Region: "us-east-1", Insecure: true,
		AccessKey: "caravan", SecretKey: "caravan-secret"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckBucket(ctx); err != nil {
		t.Fatal(err)
	}
	testStore(t, s)
}
