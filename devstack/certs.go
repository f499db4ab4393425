package devstack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// writePebbleTLS makes the certificate Pebble's ACME endpoint serves (Debian's
// pebble ships none): a throwaway CA in ca.pem and a 127.0.0.1/localhost
// certificate it signs in cert.pem and key.pem. Traefik trusts ca.pem through
// LEGO_CA_CERTIFICATES.
func writePebbleTLS(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "cert.pem")); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	now := time.Now()
	ca, err := newThrowawayCA("caravan dev Pebble API CA", now, now.AddDate(5, 0, 0))
	if err != nil {
		return err
	}
	leafDER, keyDER, err := ca.sign(&x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return err
	}
	files := map[string]*pem.Block{
		"ca.pem":   {Type: "CERTIFICATE", Bytes: ca.der},
		"cert.pem": {Type: "CERTIFICATE", Bytes: leafDER},
		"key.pem":  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	}
	for name, block := range files {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// WildcardCertificate is the name of the certificate that serves every
// generated hostname of the stack: "*.<domain>".
func (s *Stack) WildcardCertificate() string { return "*." + s.Domain }

// AwaitWildcard waits until Traefik serves the wildcard certificate
// (WildcardCertificate), verified by roots (Pebble's), for a name under the
// domain that no app has. caravan server asks Traefik for it when it starts
// (over DNS-01, through pebble-challtestsrv); until it is there a new app's
// hostname would get Traefik's default certificate.
func (s *Stack) AwaitWildcard(ctx context.Context, roots *x509.CertPool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host := "wildcard-check." + s.Domain
	var last error
	for {
		if last = s.servesWildcard(ctx, host, roots); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("traefik serves no certificate for %s after %s: %v; see %s", s.WildcardCertificate(), timeout, last,
				filepath.Join(s.StateDir, "logs", "traefik.log"))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// servesWildcard reports why Traefik's certificate for host is not the
// verified wildcard, or nil when it is.
func (s *Stack) servesWildcard(ctx context.Context, host string, roots *x509.CertPool) error {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: &tls.Config{ServerName: host, RootCAs: roots}}
	conn, err := d.DialContext(ctx, "tcp", s.HTTPSAddr())
	if err != nil {
		return err
	}
	defer conn.Close()
	leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
	if !slices.Contains(leaf.DNSNames, s.WildcardCertificate()) {
		return fmt.Errorf("the certificate for %s names %v", host, leaf.DNSNames)
	}
	return nil
}
