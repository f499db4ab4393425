// Package clientcfg owns how caravan reaches Nomad and Consul: every
// component that talks to them (caravan server, its autoscaler, caravan
// proxy) builds its clients here.
//
// A configuration starts from the official clients' defaults,
// nomad.DefaultConfig() and consul.DefaultConfig(), so the environment
// variables work exactly as they do for the nomad and consul CLIs:
//
//	NOMAD_ADDR NOMAD_TOKEN NOMAD_REGION NOMAD_NAMESPACE NOMAD_CACERT NOMAD_CAPATH
//	NOMAD_CLIENT_CERT NOMAD_CLIENT_KEY NOMAD_TLS_SERVER_NAME NOMAD_SKIP_VERIFY
//	CONSUL_HTTP_ADDR CONSUL_HTTP_TOKEN CONSUL_HTTP_TOKEN_FILE CONSUL_HTTP_SSL
//	CONSUL_CACERT CONSUL_CAPATH CONSUL_CLIENT_CERT CONSUL_CLIENT_KEY
//	CONSUL_TLS_SERVER_NAME CONSUL_HTTP_SSL_VERIFY
//
// and a non-empty field of Nomad or Consul (caravan's flags) overrides
// its variable. A token file is read once, when the client is built: a
// rotated token needs a restart (Consul's own client reads
// CONSUL_HTTP_TOKEN_FILE the same way).
//
// Tokens never leave the clients' request headers: no error or log line
// here carries one (Describe says where a token came from, not what it
// is), and the official clients send it as X-Nomad-Token and
// X-Consul-Token, never in a URL, so their errors do not carry it either.
package clientcfg

import (
	"errors"
	"fmt"
	"os"
	"strings"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// Nomad overrides nomad.DefaultConfig(); empty fields keep what it read
// from the environment.
type Nomad struct {
	// Addr is the agent's address, "https://nomad.example:4646"
	// (NOMAD_ADDR; default http://127.0.0.1:4646).
	Addr string
	// TokenFile holds the ACL token (instead of NOMAD_TOKEN, which keeps
	// it out of the process's environment); surrounding space is trimmed.
	TokenFile string
	// CACert, CAPath, ClientCert, ClientKey and TLSServerName are the
	// PEM files and name of NOMAD_CACERT, NOMAD_CAPATH, NOMAD_CLIENT_CERT,
	// NOMAD_CLIENT_KEY and NOMAD_TLS_SERVER_NAME.
	CACert, CAPath, ClientCert, ClientKey, TLSServerName string
	// SkipVerify turns certificate verification off (NOMAD_SKIP_VERIFY);
	// false keeps the environment's choice.
	SkipVerify bool
	// Region (NOMAD_REGION) is the region requests are forwarded to.
	Region string
	// Namespace (NOMAD_NAMESPACE) is the namespace of requests that do
	// not name their own.
	Namespace string
}

// Config is nomad.DefaultConfig() with n's fields over it, its token
// read from TokenFile if one is named.
func (n Nomad) Config() (*nomad.Config, error) {
	cfg := nomad.DefaultConfig()
	set(&cfg.Address, n.Addr)
	set(&cfg.Region, n.Region)
	set(&cfg.Namespace, n.Namespace)
	set(&cfg.TLSConfig.CACert, n.CACert)
	set(&cfg.TLSConfig.CAPath, n.CAPath)
	set(&cfg.TLSConfig.ClientCert, n.ClientCert)
	set(&cfg.TLSConfig.ClientKey, n.ClientKey)
	set(&cfg.TLSConfig.TLSServerName, n.TLSServerName)
	if n.SkipVerify {
		cfg.TLSConfig.Insecure = true
	}
	if n.TokenFile != "" {
		token, err := readToken(n.TokenFile, "nomad")
		if err != nil {
			return nil, err
		}
		cfg.SecretID = token
	}
	if (cfg.TLSConfig.ClientCert == "") != (cfg.TLSConfig.ClientKey == "") {
		return nil, &Error{Client: "nomad", Msg: "a client certificate needs its key and a key its certificate: set both NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY (--nomad-client-cert, --nomad-client-key) or neither"}
	}
	return cfg, nil
}

// Client is a Nomad client of n's configuration.
func (n Nomad) Client() (*nomad.Client, error) {
	cfg, err := n.Config()
	if err != nil {
		return nil, err
	}
	// Reads wait out a leader election (see LeaderWait).
	if !strings.HasPrefix(cfg.Address, "unix://") {
		if cfg.HttpClient, err = leaderRetryClient(cfg); err != nil {
			return nil, &Error{Client: "nomad", Msg: err.Error()}
		}
	}
	c, err := nomad.NewClient(cfg)
	if err != nil {
		// Its errors name files and addresses, never the token.
		return nil, &Error{Client: "nomad", Msg: err.Error()}
	}
	return c, nil
}

// Describe is what to log about n's configuration: the address, whether
// it speaks TLS, and where its token came from (never the token).
func (n Nomad) Describe() []any {
	cfg := nomad.DefaultConfig()
	set(&cfg.Address, n.Addr)
	set(&cfg.TLSConfig.CACert, n.CACert)
	set(&cfg.TLSConfig.ClientCert, n.ClientCert)
	token := "none"
	switch {
	case n.TokenFile != "":
		token = "file " + n.TokenFile
	case cfg.SecretID != "":
		token = "NOMAD_TOKEN"
	}
	set(&cfg.Region, n.Region)
	return []any{"addr", cfg.Address, "tls", strings.HasPrefix(cfg.Address, "https://"), "client_cert", cfg.TLSConfig.ClientCert != "",
		"token", token, "region", cfg.Region}
}

// Consul overrides consul.DefaultConfig(); empty fields keep what it read
// from the environment.
type Consul struct {
	// Addr is the agent's address, "127.0.0.1:8500" or
	// "https://consul.example:8501" (CONSUL_HTTP_ADDR; an https:// prefix
	// or CONSUL_HTTP_SSL=true speaks TLS).
	Addr string
	// TokenFile holds the ACL token (CONSUL_HTTP_TOKEN_FILE; it wins over
	// CONSUL_HTTP_TOKEN, as in the consul CLI).
	TokenFile string
	// CACert, CAPath, ClientCert, ClientKey and TLSServerName are the
	// files and name of CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT,
	// CONSUL_CLIENT_KEY and CONSUL_TLS_SERVER_NAME.
	CACert, CAPath, ClientCert, ClientKey, TLSServerName string
	// SkipVerify turns certificate verification off
	// (CONSUL_HTTP_SSL_VERIFY=false); false keeps the environment's.
	SkipVerify bool
}

// Config is consul.DefaultConfig() with c's fields over it, its token
// read from the token file if one is named (here or in
// CONSUL_HTTP_TOKEN_FILE).
func (c Consul) Config() (*consul.Config, error) {
	cfg := consul.DefaultConfig()
	set(&cfg.Address, c.Addr)
	set(&cfg.TokenFile, c.TokenFile)
	set(&cfg.TLSConfig.CAFile, c.CACert)
	set(&cfg.TLSConfig.CAPath, c.CAPath)
	set(&cfg.TLSConfig.CertFile, c.ClientCert)
	set(&cfg.TLSConfig.KeyFile, c.ClientKey)
	set(&cfg.TLSConfig.Address, c.TLSServerName)
	if c.SkipVerify {
		cfg.TLSConfig.InsecureSkipVerify = true
	}
	if cfg.TokenFile != "" {
		// consul.NewClient would read it too, but its error would not
		// say which setting named the file.
		token, err := readToken(cfg.TokenFile, "consul")
		if err != nil {
			return nil, err
		}
		cfg.Token, cfg.TokenFile = token, ""
	}
	if (cfg.TLSConfig.CertFile == "") != (cfg.TLSConfig.KeyFile == "") {
		return nil, &Error{Client: "consul", Msg: "a client certificate needs its key and a key its certificate: set both CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY (--consul-client-cert, --consul-client-key) or neither"}
	}
	return cfg, nil
}

// Client is a Consul client of c's configuration.
func (c Consul) Client() (*consul.Client, error) {
	cfg, err := c.Config()
	if err != nil {
		return nil, err
	}
	cc, err := consul.NewClient(cfg)
	if err != nil {
		return nil, &Error{Client: "consul", Msg: err.Error()}
	}
	return cc, nil
}

// Describe is what to log about c's configuration (never the token).
func (c Consul) Describe() []any {
	cfg := consul.DefaultConfig()
	set(&cfg.Address, c.Addr)
	set(&cfg.TokenFile, c.TokenFile)
	set(&cfg.TLSConfig.CertFile, c.ClientCert)
	tlsOn := cfg.Scheme == "https" || strings.HasPrefix(cfg.Address, "https://")
	token := "none"
	switch {
	case cfg.TokenFile != "":
		token = "file " + cfg.TokenFile
	case cfg.Token != "":
		token = "CONSUL_HTTP_TOKEN"
	}
	return []any{"addr", cfg.Address, "tls", tlsOn, "client_cert", cfg.TLSConfig.CertFile != "", "token", token}
}

// Error is a configuration caravan cannot build a client of: a token
// file that cannot be read, a certificate without its key, a bad address.
type Error struct {
	// Client is "nomad" or "consul".
	Client string
	Msg    string
	Err    error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Client + ": " + e.Msg + ": " + e.Err.Error()
	}
	return e.Client + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// readToken is the token in path, trimmed; an empty file is an error (a
// request without a token would fail later, and less clearly).
func readToken(path, client string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			// The file's name and why, without Go's "open" wording.
			err = pe.Err
		}
		return "", &Error{Client: client, Msg: fmt.Sprintf("reading the token file %s", path), Err: err}
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", &Error{Client: client, Msg: fmt.Sprintf("the token file %s is empty: write the ACL token's secret ID in it", path)}
	}
	return token, nil
}

func set(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}
