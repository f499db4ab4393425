package bundlestore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/caravanhq/caravan/bundle"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config names a bucket of an S3-compatible object store (AWS S3,
// MinIO, SeaweedFS, Ceph, R2, ...).
type S3Config struct {
	// Endpoint is the store's host[:port] ("s3.amazonaws.com",
	// "127.0.0.1:8333").
	Endpoint string
	Bucket   string
	// Prefix is put before every key ("caravan/"); bundles are at
	// <prefix>bundles/<id>.tar.gz.
	Prefix string
	// Region; empty asks the store.
	Region string
	// Insecure speaks plain HTTP (a store on the loopback).
	Insecure bool
	// AccessKey and SecretKey; empty takes them from the environment
	// (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or MINIO_ROOT_USER
	// and MINIO_ROOT_PASSWORD), then ~/.aws/credentials, then the
	// instance's IAM role.
	AccessKey, SecretKey string
	// Transport, when set, carries the requests (tests).
	Transport http.RoundTripper
}

// S3 keeps bundles in a bucket of an S3-compatible store, so that every
// caravan server of a cluster serves every bundle. A bundle's object is
// written whole by one PUT (multipart for large ones, completed or
// aborted by the client), so a reader never sees part of one.
type S3 struct {
	client *minio.Client
	bucket string
	prefix string
}

var _ Store = (*S3)(nil)

// NewS3 connects to cfg's store; it does not check that the bucket
// exists (CheckBucket does).
func NewS3(cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, fmt.Errorf("an S3 bundle store needs an endpoint and a bucket")
	}
	creds := credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	if cfg.AccessKey == "" {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{}, &credentials.EnvMinio{}, &credentials.FileAWSCredentials{}, &credentials.IAM{},
		})
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{Creds: creds, Secure: !cfg.Insecure, Region: cfg.Region,
		Transport: cfg.Transport, BucketLookup: minio.BucketLookupAuto})
	if err != nil {
		return nil, fmt.Errorf("S3 bundle store %s: %w", cfg.Endpoint, err)
	}
	return &S3{client: c, bucket: cfg.Bucket, prefix: cfg.Prefix}, nil
}

// CheckBucket fails unless the bucket exists and answers.
func (s *S3) CheckBucket(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	switch {
	case err != nil:
		return fmt.Errorf("S3 bundle store: bucket %s: %w", s.bucket, err)
	case !ok:
		return fmt.Errorf("S3 bundle store: bucket %s does not exist: create it first", s.bucket)
	}
	return nil
}

func (s *S3) key(id string) string { return s.prefix + "bundles/" + id + suffix }

func notFound(err error) bool {
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey", "NotFound":
		return true
	}
	return false
}

func (s *S3) Has(ctx context.Context, id string) (bool, error) {
	if err := checkID(id); err != nil {
		return false, err
	}
	_, err := s.client.StatObject(ctx, s.bucket, s.key(id), minio.StatObjectOptions{})
	switch {
	case err == nil:
		return true, nil
	case notFound(err):
		return false, nil
	}
	return false, err
}

func (s *S3) Put(ctx context.Context, id string, r io.Reader, size int64) error {
	if err := checkID(id); err != nil {
		return err
	}
	_, err := s.client.PutObject(ctx, s.bucket, s.key(id), r, size, minio.PutObjectOptions{ContentType: "application/gzip"})
	return err
}

func (s *S3) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.key(id), minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	// GetObject is lazy: Stat makes the request, and says if it is there.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		if notFound(err) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	return obj, nil
}

func (s *S3) Delete(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.key(id), minio.RemoveObjectOptions{})
	if notFound(err) {
		return nil
	}
	return err
}

func (s *S3) List(ctx context.Context) ([]Object, error) {
	var out []Object
	for info := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + "bundles/", Recursive: true}) {
		if info.Err != nil {
			return nil, info.Err
		}
		id, ok := strings.CutSuffix(strings.TrimPrefix(info.Key, s.prefix+"bundles/"), suffix)
		if !ok || !bundle.ValidID(id) {
			continue
		}
		out = append(out, Object{ID: id, Size: info.Size, Stored: info.LastModified})
	}
	slices.SortFunc(out, func(a, b Object) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
