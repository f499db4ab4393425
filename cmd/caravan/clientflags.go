package main

import (
	"github.com/caravanhq/caravan/clientcfg"
	"github.com/urfave/cli/v2"
)

// nomadFlags are the flags that say how to reach Nomad. Each overrides
// its environment variable (read by Nomad's own client, as the nomad CLI
// does: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, ...); a token is given
// by NOMAD_TOKEN or a file, never as a flag's value (ps shows those).
func nomadFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "nomad-addr", Usage: "Nomad's `URL` (default: $NOMAD_ADDR, else http://127.0.0.1:4646)"},
		&cli.StringFlag{Name: "nomad-token-file", Usage: "`FILE` holding Nomad's ACL token, read once at start (default: $NOMAD_TOKEN)"},
		&cli.StringFlag{Name: "nomad-ca-cert", Usage: "PEM `FILE` of the CA that verifies Nomad (default: $NOMAD_CACERT)"},
		&cli.StringFlag{Name: "nomad-ca-path", Usage: "`DIR` of PEM CA files (default: $NOMAD_CAPATH)"},
		&cli.StringFlag{Name: "nomad-client-cert", Usage: "PEM `FILE` of the client certificate for Nomad's mTLS (default: $NOMAD_CLIENT_CERT)"},
		&cli.StringFlag{Name: "nomad-client-key", Usage: "PEM `FILE` of its key (default: $NOMAD_CLIENT_KEY)"},
		&cli.StringFlag{Name: "nomad-tls-server-name", Usage: "`NAME` Nomad's certificate is verified against, e.g. server.global.nomad (default: $NOMAD_TLS_SERVER_NAME)"},
		&cli.StringFlag{Name: "nomad-region", Usage: "Nomad `REGION` (default: $NOMAD_REGION, else the agent's)"},
	}
}

// consulFlags are the flags that say how to reach Consul, over
// CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN(_FILE), CONSUL_CACERT, ... as the
// consul CLI reads them.
func consulFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "consul-addr", Usage: "Consul's `ADDR`, host:port or https://host:port (default: $CONSUL_HTTP_ADDR, else 127.0.0.1:8500)"},
		&cli.StringFlag{Name: "consul-token-file", Usage: "`FILE` holding Consul's ACL token, read once at start (default: $CONSUL_HTTP_TOKEN_FILE, $CONSUL_HTTP_TOKEN)"},
		&cli.StringFlag{Name: "consul-ca-cert", Usage: "PEM `FILE` of the CA that verifies Consul (default: $CONSUL_CACERT)"},
		&cli.StringFlag{Name: "consul-ca-path", Usage: "`DIR` of PEM CA files (default: $CONSUL_CAPATH)"},
		&cli.StringFlag{Name: "consul-client-cert", Usage: "PEM `FILE` of the client certificate for Consul's mTLS (default: $CONSUL_CLIENT_CERT)"},
		&cli.StringFlag{Name: "consul-client-key", Usage: "PEM `FILE` of its key (default: $CONSUL_CLIENT_KEY)"},
		&cli.StringFlag{Name: "consul-tls-server-name", Usage: "`NAME` Consul's certificate is verified against, e.g. server.dc1.consul (default: $CONSUL_TLS_SERVER_NAME)"},
	}
}

func nomadConfig(c *cli.Context) clientcfg.Nomad {
	return clientcfg.Nomad{Addr: c.String("nomad-addr"), TokenFile: c.String("nomad-token-file"), CACert: c.String("nomad-ca-cert"),
		CAPath: c.String("nomad-ca-path"), ClientCert: c.String("nomad-client-cert"), ClientKey: c.String("nomad-client-key"),
		TLSServerName: c.String("nomad-tls-server-name"), Region: c.String("nomad-region")}
}

func consulConfig(c *cli.Context) clientcfg.Consul {
	return clientcfg.Consul{Addr: c.String("consul-addr"), TokenFile: c.String("consul-token-file"), CACert: c.String("consul-ca-cert"),
		CAPath: c.String("consul-ca-path"), ClientCert: c.String("consul-client-cert"), ClientKey: c.String("consul-client-key"),
		TLSServerName: c.String("consul-tls-server-name")}
}
