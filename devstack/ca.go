package devstack

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"time"
)

// throwawayCA is a certificate authority the stack makes for itself (for
// Pebble's API, for the cluster's Nomad TLS): a P-256 key that lives only
// in memory and a self-signed certificate, serial 1.
type throwawayCA struct {
	der  []byte
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newThrowawayCA makes a CA named name, valid from an hour before now
// until notAfter.
func newThrowawayCA(name string, now, notAfter time.Time) (*throwawayCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &throwawayCA{der: der, cert: cert, key: key}, nil
}

// sign signs leaf for a new P-256 key and returns the certificate's DER
// and the key's (SEC 1, PEM type "EC PRIVATE KEY").
func (ca *throwawayCA) sign(leaf *x509.Certificate) (certDER, keyDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if certDER, err = x509.CreateCertificate(rand.Reader, leaf, ca.cert, &key.PublicKey, ca.key); err != nil {
		return nil, nil, err
	}
	if keyDER, err = x509.MarshalECPrivateKey(key); err != nil {
		return nil, nil, err
	}
	return certDER, keyDER, nil
}
