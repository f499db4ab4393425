package devstack

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// clusterCert is one certificate the cluster's CA signs.
type clusterCert struct {
	// file is the name of <file>.pem and <file>-key.pem.
	file string
	// names are its DNS names; Nomad checks server.<region>.nomad and
	// client.<region>.nomad when verify_server_hostname is on.
	names []string
	usage []x509.ExtKeyUsage
}

// clusterCerts are what the cluster's Nomad and Consul agents and their
// users present (Consul checks server.<datacenter>.consul when
// verify_server_hostname is on):
// every agent certificate also names localhost and 127.0.0.1, so an HTTPS
// client that dials https://127.0.0.1:port verifies it with the CA alone.
var clusterCerts = []clusterCert{
	{"nomad-server", []string{"server.global.nomad", "localhost"},
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
	{"nomad-client", []string{"client.global.nomad", "localhost"},
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
	{"consul-server", []string{"server.dc1.consul", "localhost"},
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
	{"cli", []string{"cli.global.nomad"}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
}

// writeClusterTLS makes a throwaway CA in dir/ca.pem (its key is never
// written: nothing is signed after the stack starts) and the certificates
// of clusterCerts, keys mode 0600.
func writeClusterTLS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	now := time.Now()
	ca, err := newThrowawayCA("caravan dev cluster CA", now, now.AddDate(1, 0, 0))
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.der, 0o644); err != nil {
		return err
	}
	for i, c := range clusterCerts {
		der, keyDER, err := ca.sign(&x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)),
			Subject:      pkix.Name{CommonName: c.names[0]},
			DNSNames:     c.names,
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.AddDate(1, 0, 0),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  c.usage,
		})
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, c.file+".pem"), "CERTIFICATE", der, 0o644); err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, c.file+"-key.pem"), "EC PRIVATE KEY", keyDER, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}
