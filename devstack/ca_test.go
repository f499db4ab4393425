package devstack

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

// The certificates the stack writes load as key pairs and verify, for
// 127.0.0.1 and their names, against the CA written beside them.
func TestWrittenCertificatesVerifyAgainstTheirCA(t *testing.T) {
	cluster, pebble := t.TempDir(), t.TempDir()
	if err := writeClusterTLS(cluster); err != nil {
		t.Fatal(err)
	}
	if err := writePebbleTLS(pebble); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		dir, cert, key, name string
		usage                x509.ExtKeyUsage
	}{
		{pebble, "cert.pem", "key.pem", "localhost", x509.ExtKeyUsageServerAuth},
		{cluster, "nomad-server.pem", "nomad-server-key.pem", "server.global.nomad", x509.ExtKeyUsageServerAuth},
		{cluster, "nomad-client.pem", "nomad-client-key.pem", "client.global.nomad", x509.ExtKeyUsageClientAuth},
		{cluster, "cli.pem", "cli-key.pem", "cli.global.nomad", x509.ExtKeyUsageClientAuth},
	}
	for _, tc := range cases {
		pair, err := tls.LoadX509KeyPair(filepath.Join(tc.dir, tc.cert), filepath.Join(tc.dir, tc.key))
		if err != nil {
			t.Fatalf("%s: %v", tc.cert, err)
		}
		caPEM, err := os.ReadFile(filepath.Join(tc.dir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(caPEM) {
			t.Fatalf("%s: no certificate in ca.pem", tc.dir)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		opts := x509.VerifyOptions{Roots: roots, DNSName: tc.name, KeyUsages: []x509.ExtKeyUsage{tc.usage}}
		if _, err := leaf.Verify(opts); err != nil {
			t.Errorf("%s for %s: %v", tc.cert, tc.name, err)
		}
		if tc.name != "cli.global.nomad" {
			opts.DNSName = "127.0.0.1"
			if _, err := leaf.Verify(opts); err != nil {
				t.Errorf("%s for 127.0.0.1: %v", tc.cert, err)
			}
		}
	}
}
