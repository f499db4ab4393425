# Traefik as caravan drives it, one per edge client (a system job):
# exactly the providers, entry points, ACME resolvers and plugin the
# routes caravan server writes refer to (devstack/config.go writes the
# same for the local stack):
#
#   providers  consulCatalog (the web functions' services and their tags)
#              and consul KV under rootKey traefik (canary splits, the
#              proxies' service, the wildcard certificate's router).
#              No file provider: caravan writes nothing to files.
#   entry      web (:80, redirects to https), websecure (:443, the
#   points     routers' entry point, --entrypoint), traefik (the admin
#              port: ping and the read-only API caravan server's
#              --traefik-api watches; keep it off the public network)
#   resolvers  caravan (TLS-ALPN-01: custom domains, --cert-resolver)
#              and caravan-dns (DNS-01: the *.domain wildcard,
#              --dns-cert-resolver)
#   plugin     bodylimit (module github.com/caravanhq/bodylimit,
#              --body-limit-plugin), a local plugin fetched from
#              bodylimit_plugin_source
#
# Secrets come from the Nomad Variable nomad/jobs/traefik: consul_token
# (deploy/acl/consul-traefik.policy.hcl), consul_ca_pem if Consul speaks
# TLS, and the DNS provider's credentials as items named like lego's
# environment variables (e.g. CF_DNS_API_TOKEN for cloudflare):
#
#   nomad var put -namespace caravan-system nomad/jobs/traefik \
#     consul_token=@consul-traefik.token CF_DNS_API_TOKEN=...
#   nomad job run -var-file VARS.hcl traefik.nomad.hcl

variable "namespace" {
  type    = string
  default = "caravan-system"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "node_pool" {
  type        = string
  default     = "default"
  description = "the edge clients *.domain resolves to"
}

variable "traefik_version" {
  type    = string
  default = "3.6.12"
}

variable "consul_addr" {
  type        = string
  default     = "127.0.0.1:8500"
  description = "the local Consul agent as Traefik reaches it (host network)"
}

variable "admin_port" {
  type    = number
  default = 8081
}

variable "acme_email" {
  type = string
}

variable "acme_ca_server" {
  type    = string
  default = "https://acme-v02.api.letsencrypt.org/directory"
}

variable "dns_provider" {
  type        = string
  description = "lego DNS provider of the wildcard's DNS-01 challenge (cloudflare, route53, ...)"
}

variable "acme_volume" {
  type        = string
  default     = "traefik-acme"
  description = "Nomad host volume on each edge client that keeps the ACME account and certificates"
}

variable "bodylimit_plugin_source" {
  type        = string
  default     = "git::https://github.com/caravanhq/caravan.git//devstack/plugin/bodylimit"
  description = "go-getter URL of caravan's body-limit plugin source"
}

job "traefik" {
  namespace   = var.namespace
  datacenters = var.datacenters
  node_pool   = var.node_pool
  type        = "system"

  group "traefik" {
    network {
      port "web" {
        static = 80
      }
      port "websecure" {
        static = 443
      }
      port "admin" {
        static = var.admin_port
      }
    }

    volume "acme" {
      type   = "host"
      source = var.acme_volume
    }

    service {
      name     = "traefik"
      port     = "admin"
      provider = "consul"
      check {
        type     = "http"
        path     = "/ping"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "traefik" {
      driver = "docker"

      config {
        image        = "traefik:v${var.traefik_version}"
        network_mode = "host"
        args         = ["--configFile=/secrets/traefik.yml"]
        mount {
          type   = "bind"
          source = "local/plugins-local"
          target = "/plugins-local"
        }
      }

      volume_mount {
        volume      = "acme"
        destination = "/data"
      }

      artifact {
        source      = var.bodylimit_plugin_source
        destination = "local/plugins-local/src/github.com/caravanhq/bodylimit"
      }

      # The static configuration; it holds the Consul token, so it is
      # rendered into secrets/.
      template {
        destination = "secrets/traefik.yml"
        perms       = "0600"
        data        = <<-EOT
          entryPoints:
            web:
              address: ":80"
              http:
                redirections:
                  entryPoint:
                    to: websecure
                    scheme: https
            websecure:
              address: ":443"
            traefik:
              address: "{{ env "NOMAD_IP_admin" }}:${var.admin_port}"
          ping:
            entryPoint: traefik
          api:
            dashboard: false
            insecure: true
          experimental:
            localPlugins:
              bodylimit:
                moduleName: github.com/caravanhq/bodylimit
          providers:
            providersThrottleDuration: 200ms
            consulCatalog:
              endpoint:
                address: "${var.consul_addr}"
          {{- with nomadVar "nomad/jobs/traefik" }}
                token: "{{ .consul_token }}"
          {{- range $k, $v := . }}{{ if eq $k "consul_ca_pem" }}
                tls:
                  ca: /secrets/consul-ca.pem
          {{- end }}{{ end }}{{ end }}
              exposedByDefault: false
              watch: true
              stale: false
            consul:
              rootKey: traefik
              endpoints: ["${var.consul_addr}"]
          {{- with nomadVar "nomad/jobs/traefik" }}
              token: "{{ .consul_token }}"
          {{- range $k, $v := . }}{{ if eq $k "consul_ca_pem" }}
              tls:
                ca: /secrets/consul-ca.pem
          {{- end }}{{ end }}{{ end }}
          certificatesResolvers:
            caravan:
              acme:
                email: "${var.acme_email}"
                storage: /data/acme.json
                caServer: "${var.acme_ca_server}"
                tlsChallenge: {}
            caravan-dns:
              acme:
                email: "${var.acme_email}"
                storage: /data/acme-dns.json
                caServer: "${var.acme_ca_server}"
                dnsChallenge:
                  provider: ${var.dns_provider}
        EOT
      }
      template {
        destination = "secrets/consul-ca.pem"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/traefik" }}{{- range $k, $v := . }}{{ if eq $k "consul_ca_pem" }}{{ $v }}{{ end }}{{ end }}{{ end }}
        EOT
      }
      # The DNS provider's credentials: the Variable's items named like
      # environment variables.
      template {
        destination = "secrets/dns.env"
        env         = true
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/traefik" }}{{ range $k, $v := . }}{{ if $k | regexMatch "^[A-Z][A-Z0-9_]*$" }}{{ $k }}={{ $v }}
          {{- end }}{{ end }}{{ end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
