package clientcfg

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clearEnv empties every variable the official clients read, so the
// machine's own (a developer's NOMAD_TOKEN) cannot leak into a test.
func clearEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "NOMAD_") || strings.HasPrefix(name, "CONSUL_") {
			t.Setenv(name, "")
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNomadFromEnvironment(t *testing.T) {
	clearEnv(t)
	t.Setenv("NOMAD_ADDR", "https://nomad.test:4646")
	t.Setenv("NOMAD_TOKEN", "env-secret")
	t.Setenv("NOMAD_REGION", "eu")
	t.Setenv("NOMAD_NAMESPACE", "ops")
	t.Setenv("NOMAD_CACERT", "/env/ca.pem")
	t.Setenv("NOMAD_CAPATH", "/env/cas")
	t.Setenv("NOMAD_CLIENT_CERT", "/env/cli.pem")
	t.Setenv("NOMAD_CLIENT_KEY", "/env/cli-key.pem")
	t.Setenv("NOMAD_TLS_SERVER_NAME", "server.eu.nomad")
	t.Setenv("NOMAD_SKIP_VERIFY", "true")
	cfg, err := Nomad{}.Config()
	if err != nil {
		t.Fatal(err)
	}
	tc := cfg.TLSConfig
	got := []string{cfg.Address, cfg.SecretID, cfg.Region, cfg.Namespace, tc.CACert, tc.CAPath, tc.ClientCert, tc.ClientKey, tc.TLSServerName}
	want := []string{"https://nomad.test:4646", "env-secret", "eu", "ops", "/env/ca.pem", "/env/cas", "/env/cli.pem", "/env/cli-key.pem", "server.eu.nomad"}
	if strings.Join(got, " ") != strings.Join(want, " ") || !tc.Insecure {
		t.Errorf("from the environment:\n got %q insecure=%v\nwant %q insecure=true", got, tc.Insecure, want)
	}

	// Fields (caravan's flags) win over the environment.
	tokenFile := writeFile(t, "token", "  file-secret\n")
	cfg, err = Nomad{Addr: "https://other:4646", TokenFile: tokenFile, Region: "us", Namespace: "apps", CACert: "/f/ca.pem",
		CAPath: "/f/cas", ClientCert: "/f/cli.pem", ClientKey: "/f/key.pem", TLSServerName: "server.us.nomad"}.Config()
	if err != nil {
		t.Fatal(err)
	}
	tc = cfg.TLSConfig
	got = []string{cfg.Address, cfg.SecretID, cfg.Region, cfg.Namespace, tc.CACert, tc.CAPath, tc.ClientCert, tc.ClientKey, tc.TLSServerName}
	want = []string{"https://other:4646", "file-secret", "us", "apps", "/f/ca.pem", "/f/cas", "/f/cli.pem", "/f/key.pem", "server.us.nomad"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("fields over the environment:\n got %q\nwant %q", got, want)
	}
}

func TestNomadDefaults(t *testing.T) {
	clearEnv(t)
	cfg, err := Nomad{}.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "http://127.0.0.1:4646" || cfg.SecretID != "" || cfg.TLSConfig.Insecure {
		t.Errorf("defaults: addr %q, a token %v, insecure %v", cfg.Address, cfg.SecretID != "", cfg.TLSConfig.Insecure)
	}
}

func TestConsulFromEnvironment(t *testing.T) {
	clearEnv(t)
	t.Setenv("CONSUL_HTTP_ADDR", "consul.test:8501")
	t.Setenv("CONSUL_HTTP_TOKEN", "env-secret")
	t.Setenv("CONSUL_HTTP_SSL", "true")
	t.Setenv("CONSUL_CACERT", "/env/ca.pem")
	t.Setenv("CONSUL_CAPATH", "/env/cas")
	t.Setenv("CONSUL_CLIENT_CERT", "/env/cli.pem")
	t.Setenv("CONSUL_CLIENT_KEY", "/env/key.pem")
	t.Setenv("CONSUL_TLS_SERVER_NAME", "server.dc1.consul")
	t.Setenv("CONSUL_HTTP_SSL_VERIFY", "false")
	cfg, err := Consul{}.Config()
	if err != nil {
		t.Fatal(err)
	}
	tc := cfg.TLSConfig
	got := []string{cfg.Address, cfg.Scheme, cfg.Token, tc.CAFile, tc.CAPath, tc.CertFile, tc.KeyFile, tc.Address}
	want := []string{"consul.test:8501", "https", "env-secret", "/env/ca.pem", "/env/cas", "/env/cli.pem", "/env/key.pem", "server.dc1.consul"}
	if strings.Join(got, " ") != strings.Join(want, " ") || !tc.InsecureSkipVerify {
		t.Errorf("from the environment:\n got %q skip-verify=%v\nwant %q skip-verify=true", got, tc.InsecureSkipVerify, want)
	}

	// CONSUL_HTTP_TOKEN_FILE wins over CONSUL_HTTP_TOKEN, as in the CLI,
	// and a field wins over both.
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", writeFile(t, "env-token", "env-file-secret\n"))
	if cfg, err = (Consul{}).Config(); err != nil || cfg.Token != "env-file-secret" {
		t.Errorf("CONSUL_HTTP_TOKEN_FILE: token from the file %v, err %v", cfg != nil && cfg.Token == "env-file-secret", err)
	}
	cfg, err = Consul{Addr: "https://other:8501", TokenFile: writeFile(t, "token", "flag-secret"), CACert: "/f/ca.pem",
		ClientCert: "/f/cli.pem", ClientKey: "/f/key.pem", TLSServerName: "other.consul"}.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "https://other:8501" || cfg.Token != "flag-secret" || cfg.TLSConfig.CAFile != "/f/ca.pem" ||
		cfg.TLSConfig.CertFile != "/f/cli.pem" || cfg.TLSConfig.KeyFile != "/f/key.pem" || cfg.TLSConfig.Address != "other.consul" {
		t.Errorf("fields over the environment: %+v", cfg.TLSConfig)
	}
}

func TestConfigErrors(t *testing.T) {
	clearEnv(t)
	empty := writeFile(t, "empty", "\n")
	missing := filepath.Join(t.TempDir(), "nope")
	for _, tc := range []struct {
		name string
		err  func() error
		want string
	}{
		{"nomad token file missing", func() error { _, err := Nomad{TokenFile: missing}.Config(); return err }, "nomad: reading the token file " + missing},
		{"nomad token file empty", func() error { _, err := Nomad{TokenFile: empty}.Config(); return err }, "is empty"},
		{"nomad cert without key", func() error { _, err := Nomad{ClientCert: "/c.pem"}.Config(); return err }, "NOMAD_CLIENT_KEY"},
		{"nomad bad address", func() error { _, err := Nomad{Addr: "http://[::1"}.Client(); return err }, "invalid address"},
		{"consul token file missing", func() error { _, err := Consul{TokenFile: missing}.Config(); return err }, "consul: reading the token file " + missing},
		{"consul key without cert", func() error { _, err := Consul{ClientKey: "/k.pem"}.Config(); return err }, "CONSUL_CLIENT_CERT"},
		{"consul unknown scheme", func() error { _, err := Consul{Addr: "ftp://x"}.Client(); return err }, "Unknown protocol scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			var ce *Error
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want a *clientcfg.Error saying %q", err, tc.want)
			}
		})
	}
}

// A refused request carries the token to the agent, and its error does
// not carry it back.
func TestRefusedRequestKeepsTheTokenOut(t *testing.T) {
	clearEnv(t)
	const secret = "0b6c54e6-4b8f-4d32-9e1a-5cf1d3d7a9c2"
	var mu sync.Mutex
	var seen []string
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Nomad-Token")+r.Header.Get("X-Consul-Token"))
		mu.Unlock()
		http.Error(w, "Permission denied", http.StatusForbidden)
	}))
	defer refuse.Close()
	tokenFile := writeFile(t, "token", secret)

	nc, err := Nomad{Addr: refuse.URL, TokenFile: tokenFile}.Client()
	if err != nil {
		t.Fatal(err)
	}
	_, _, nerr := nc.Jobs().List(nil)
	t.Setenv("CONSUL_HTTP_TOKEN", secret)
	cc, err := Consul{Addr: refuse.URL}.Client()
	if err != nil {
		t.Fatal(err)
	}
	_, _, cerr := cc.KV().Get("caravan/x", nil)
	for _, err := range []error{nerr, cerr} {
		if err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("want a 403, got %v", err)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("the error carries the token: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != secret || seen[1] != secret {
		t.Errorf("the agent saw tokens %q, want the secret twice", seen)
	}
	for _, d := range [][]any{Nomad{Addr: refuse.URL, TokenFile: tokenFile}.Describe(), Consul{Addr: refuse.URL}.Describe()} {
		for _, v := range d {
			if s, ok := v.(string); ok && strings.Contains(s, secret) {
				t.Errorf("Describe carries the token: %v", d)
			}
		}
	}
}

// Both clients speak mutual TLS with the files the configuration names.
func TestMutualTLS(t *testing.T) {
	clearEnv(t)
	pki := newPKI(t)
	hostPort := mtlsServer(t, pki)
	addr := "https://" + hostPort

	nc, err := Nomad{Addr: addr, CACert: pki.caFile, ClientCert: pki.certFile, ClientKey: pki.keyFile, TLSServerName: "server.global.nomad"}.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := nc.Jobs().List(nil); err != nil {
		t.Errorf("nomad over mTLS: %v", err)
	}
	cc, err := Consul{Addr: addr, CACert: pki.caFile, ClientCert: pki.certFile, ClientKey: pki.keyFile, TLSServerName: "server.global.nomad"}.Client()
	if err != nil {
		t.Fatal(err)
	}
	if kv, _, err := cc.KV().Get("caravan/x", nil); err != nil || kv == nil || string(kv.Value) != "hi" {
		t.Errorf("consul over mTLS: %v, %v", kv, err)
	}

	// Without the client certificate the server refuses the handshake;
	// with the wrong server name the client refuses the server.
	nc, _ = Nomad{Addr: addr, CACert: pki.caFile, TLSServerName: "server.global.nomad"}.Client()
	if _, _, err := nc.Jobs().List(nil); err == nil {
		t.Error("nomad without a client certificate: no error")
	}
	nc, _ = Nomad{Addr: addr, CACert: pki.caFile, ClientCert: pki.certFile, ClientKey: pki.keyFile, TLSServerName: "wrong.name"}.Client()
	if _, _, err := nc.Jobs().List(nil); err == nil {
		t.Error("nomad with the wrong server name: no error")
	}
}

type pki struct {
	pool                      *x509.CertPool
	server                    tls.Certificate
	caFile, certFile, keyFile string
}

// newPKI is a throwaway CA, a server certificate for server.global.nomad
// and a client certificate, the CA and the client's as files.
func newPKI(t *testing.T) pki {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	srvDER, srvKey := leaf(2, "server.global.nomad", x509.ExtKeyUsageServerAuth)
	cliDER, cliKey := leaf(3, "cli.global.nomad", x509.ExtKeyUsageClientAuth)
	pemOf := func(typ string, b []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})) }
	keyPEM := func(k *ecdsa.PrivateKey) string {
		b, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemOf("EC PRIVATE KEY", b)
	}
	server, err := tls.X509KeyPair([]byte(pemOf("CERTIFICATE", srvDER)), []byte(keyPEM(srvKey)))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pki{pool: pool, server: server, caFile: writeFile(t, "ca.pem", pemOf("CERTIFICATE", caDER)),
		certFile: writeFile(t, "cli.pem", pemOf("CERTIFICATE", cliDER)), keyFile: writeFile(t, "cli-key.pem", keyPEM(cliKey))}
}

// The cluster stack's proxies reach Consul as any Consul user does: an
// https:// CONSUL_HTTP_ADDR (or an address flag and CONSUL_HTTP_SSL) and
// the CA, client certificate and key from CONSUL_CACERT,
// CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY. Without the CA the server is
// not trusted; a plain http:// address does not reach it.
func TestConsulTLSFromEnvironment(t *testing.T) {
	clearEnv(t)
	pki := newPKI(t)
	hostPort := mtlsServer(t, pki)
	get := func(c Consul) error {
		cc, err := c.Client()
		if err != nil {
			return err
		}
		kv, _, err := cc.KV().Get("caravan/x", nil)
		if err == nil && (kv == nil || string(kv.Value) != "hi") {
			return errors.New("wrong answer")
		}
		return err
	}

	t.Setenv("CONSUL_HTTP_ADDR", "https://"+hostPort)
	t.Setenv("CONSUL_TLS_SERVER_NAME", "server.global.nomad")
	t.Setenv("CONSUL_CLIENT_CERT", pki.certFile)
	t.Setenv("CONSUL_CLIENT_KEY", pki.keyFile)
	if err := get(Consul{}); err == nil {
		t.Error("without CONSUL_CACERT: the server's certificate was trusted")
	}
	t.Setenv("CONSUL_CACERT", pki.caFile)
	if err := get(Consul{}); err != nil {
		t.Errorf("https:// CONSUL_HTTP_ADDR with CONSUL_CACERT and a client certificate: %v", err)
	}
	if err := get(Consul{Addr: "http://" + hostPort}); err == nil {
		t.Error("plain http:// to a TLS-only agent: no error")
	}
	if d := fmt.Sprintln(Consul{}.Describe()...); !strings.Contains(d, "tls true") || !strings.Contains(d, "client_cert true") {
		t.Errorf("Describe: %s, want tls and a client certificate", d)
	}
	// An address flag without a scheme keeps CONSUL_HTTP_SSL's (the
	// stack passes --consul-addr and the CA by the environment).
	t.Setenv("CONSUL_HTTP_SSL", "true")
	if err := get(Consul{Addr: hostPort}); err != nil {
		t.Errorf("host:port with CONSUL_HTTP_SSL=true: %v", err)
	}
}

// mtlsServer serves as a Nomad or Consul agent that requires a client
// certificate of pki's CA would, for the KV read and the job list the
// tests make; it returns its host:port.
func mtlsServer(t *testing.T, pki pki) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if strings.HasPrefix(r.URL.Path, "/v1/kv/") {
			w.Write([]byte(`[{"Key":"caravan/x","Value":"aGk="}]`))
			return
		}
		w.Write([]byte(`[]`))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.server}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return "127.0.0.1:" + strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port)
}
