package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/bundlestore"
	"github.com/caravanhq/caravan/devstack"
	"github.com/caravanhq/caravan/server"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// startSeaweedFS starts SeaweedFS's S3 server (the binary `just seaweedfs`
// builds) with a bucket, or skips the test without it. It returns the S3
// endpoint.
func startSeaweedFS(t *testing.T, bucket string) string {
	t.Helper()
	bin := devstack.SeaweedFS.BinPath()
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no SeaweedFS build at %s (just seaweedfs builds it)", bin)
	}
	// Each SeaweedFS server's gRPC port is its HTTP port + 10000.
	port := func() string {
		for {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			p := l.Addr().(*net.TCPAddr).Port
			l.Close()
			if p+10000 >= 65535 {
				continue
			}
			if g, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000)); err == nil {
				g.Close()
				return strconv.Itoa(p)
			}
		}
	}
	dir := t.TempDir()
	s3 := port()
	cmd := exec.Command(bin, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir="+dir, "-master.port="+port(),
		"-volume.port="+port(), "-filer.port="+port(), "-s3", "-s3.port="+s3, "-volume.max=5", "-master.volumeSizeLimitMB=64")
	logf, err := os.Create(filepath.Join(env.stack.StateDir, "logs", "seaweedfs.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	endpoint := "127.0.0.1:" + s3
	c, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4("caravan", "caravan", ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "SeaweedFS takes a bucket", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: "us-east-1"})
	})
	return endpoint
}

// TestBundlesInS3: a caravan server whose bundle store is an S3 bucket (a
// real S3 server, SeaweedFS) takes the upload, and Nomad's client fetches
// the bundle through it: the app serves the bundled code.
func TestBundlesInS3(t *testing.T) {
	endpoint := startSeaweedFS(t, "caravan-bundles")
	store, err := bundlestore.NewS3(bundlestore.S3Config{Endpoint: endpoint, Bucket: "caravan-bundles", Prefix: "e2e/", Region: "us-east-1",
		Insecure: true, AccessKey: "caravan", SecretKey: "caravan"})
	if err != nil {
		t.Fatal(err)
	}
	// Servers that share a cluster share its bundle store and fetch URL;
	// this one has a store of its own, with its own --bundle-url.
	srv := startServerApart(t, "caravan-server-s3", func(c *server.Config) {
		c.Bundles, c.BundleDir, c.Router.BundleURL = store, "", ""
	})

	purge(t, "e2e--stored")
	_, path := bundledApp(t, "stored")
	out, code := runCLIAt(t, "http://"+srv.Addr(), "deploy", path)
	if code != 0 || !strings.Contains(out, "Uploaded the code of web") {
		t.Fatalf("deploy through the S3-backed server: exit %d\n%s", code, out)
	}
	answers(t, urlRE.FindString(out), "v1 secret=false deps=false data=hello\n")
	if n := srv.Orchestrator().BundleUploads(); n != 1 {
		t.Fatalf("%d uploads, want 1", n)
	}
	objects, err := store.List(context.Background())
	if err != nil || len(objects) != 1 {
		t.Fatalf("the bucket holds %v, %v; want the one bundle", objects, err)
	}
	if _, err := os.Stat(filepath.Join(bundleDir(), objects[0].ID[:2], objects[0].ID+".tar.gz")); err == nil {
		t.Error("the bundle went to the local directory too")
	}
}
