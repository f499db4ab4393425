# Traefik as caravan drives it, one per edge client (a system job):
# exactly the providers, entry points, ACME resolvers and plugin the
# routes caravan server writes refer to (devstack/config.go writes the
# same for the local stack):
#
#   providers  consulCatalog (the web functions' services and their tags)
#              and consul KV under rootKey traefik (canary splits, the
#              proxies' service, the wildcard certificate's router).
#              No file provider: caravan writes nothing to files.
#   entry      web (web_port, :80, redirects to https), websecure
#   points     (websecure_port, :443, the routers' entry point,
#              --entrypoint), traefik (admin_port: ping and the
#              read-only API caravan server's --traefik-api watches; keep
#              it off the public network)
#   resolvers  caravan (TLS-ALPN-01: custom domains, --cert-resolver)
#              and caravan-dns (DNS-01: the *.domain wildcard,
#              --dns-cert-resolver)
#   plugin     bodylimit (module github.com/caravanhq/bodylimit,
#              --body-limit-plugin), a local plugin fetched from
#              bodylimit_plugin_source
#
# driver is docker (the default: the traefik image, host network, the
# ACME storage on the host volume acme_volume) or raw_exec (the
# traefik_command binary already on the client, the ACME storage in
# acme_dir). TLS-ALPN-01 answers on websecure_port: the ACME CA reaches
# it on 443, so production keeps 443; constraints narrow the edge
# clients beyond node_pool.
#
# Secrets come from the Nomad Variable nomad/jobs/traefik: consul_token
# (deploy/acl/consul-traefik.policy.hcl), consul_ca_pem if Consul speaks
# TLS (then Traefik reaches it over HTTPS), acme_ca_pem if the ACME CA's
# directory has a certificate of a private root (lego's
# LEGO_CA_CERTIFICATES), and the DNS provider's credentials as items
# named like lego's environment variables (e.g. CF_DNS_API_TOKEN for
# cloudflare, EXEC_PATH for exec):
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

variable "constraints" {
  type = list(object({
    attribute = string
    operator  = string
    value     = string
  }))
  default     = []
  description = "more constraints on the edge clients, e.g. [{attribute = \"$${meta.edge}\", operator = \"=\", value = \"true\"}]"
}

variable "driver" {
  type        = string
  default     = "docker"
  description = "docker (the traefik image) or raw_exec (traefik_command on the client)"
}

variable "traefik_version" {
  type        = string
  default     = "3.6.12"
  description = "the docker image's tag (docker)"
}

variable "traefik_command" {
  type        = string
  default     = "traefik"
  description = "path of the Traefik binary on every edge client (raw_exec)"
}

variable "consul_addr" {
  type        = string
  default     = "127.0.0.1:8500"
  description = "the local Consul agent as Traefik reaches it (host network), host:port without a scheme: consul_ca_pem in the Variable makes it HTTPS"
}

variable "web_port" {
  type    = number
  default = 80
}

variable "websecure_port" {
  type    = number
  default = 443
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
  description = "lego DNS provider of the wildcard's DNS-01 challenge (cloudflare, route53, exec, ...)"
}

variable "dns_resolvers" {
  type        = list(string)
  default     = []
  description = "DNS servers (host:port) lego asks whether the challenge's TXT record is there; empty: the client's"
}

variable "dns_propagation_checks" {
  type        = bool
  default     = true
  description = "false: lego asks the ACME CA to validate without checking the TXT record first"
}

variable "acme_volume" {
  type        = string
  default     = "traefik-acme"
  description = "Nomad host volume on each edge client that keeps the ACME account and certificates (docker)"
}

variable "acme_dir" {
  type        = string
  default     = ""
  description = "directory on each edge client that keeps the ACME account and certificates (raw_exec); empty: the task's local/, lost with the allocation"
}

variable "bodylimit_plugin_source" {
  type        = string
  default     = "git::https://github.com/caravanhq/caravan.git//devstack/plugin/bodylimit"
  description = "go-getter URL of caravan's body-limit plugin source (git, or an archive over HTTP(S): Nomad's artifacts fetch no local paths)"
}

locals {
  docker = var.driver == "docker"
  # Traefik loads local plugins from plugins-local/ in its working
  # directory: / in the image (bind-mounted from local/), the task's
  # directory under raw_exec.
  plugins_dir = local.docker ? "local/plugins-local" : "plugins-local"
  acme_dir    = local.docker ? "/data" : (var.acme_dir == "" ? "{{ env \"NOMAD_TASK_DIR\" }}" : var.acme_dir)
}

job "traefik" {
  namespace   = var.namespace
  datacenters = var.datacenters
  node_pool   = var.node_pool
  type        = "system"

  dynamic "constraint" {
    for_each = var.constraints
    content {
      attribute = constraint.value.attribute
      operator  = constraint.value.operator
      value     = constraint.value.value
    }
  }

  group "traefik" {
    network {
      port "web" {
        static = var.web_port
      }
      port "websecure" {
        static = var.websecure_port
      }
      port "admin" {
        static = var.admin_port
      }
    }

    dynamic "volume" {
      for_each = local.docker ? [var.acme_volume] : []
      labels   = ["acme"]
      content {
        type   = "host"
        source = volume.value
      }
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
      driver = var.driver

      dynamic "config" {
        for_each = local.docker ? [1] : []
        content {
          image        = "traefik:v${var.traefik_version}"
          network_mode = "host"
          args         = ["--configFile=/secrets/traefik.yml"]
          mount {
            type   = "bind"
            source = "local/plugins-local"
            target = "/plugins-local"
          }
        }
      }
      dynamic "config" {
        for_each = local.docker ? [] : [var.traefik_command]
        content {
          command = config.value
          args    = ["--configFile=${NOMAD_SECRETS_DIR}/traefik.yml"]
        }
      }

      dynamic "volume_mount" {
        for_each = local.docker ? ["acme"] : []
        content {
          volume      = volume_mount.value
          destination = "/data"
        }
      }

      artifact {
        source      = var.bodylimit_plugin_source
        destination = "${local.plugins_dir}/src/github.com/caravanhq/bodylimit"
      }

      # The static configuration; it holds the Consul token, so it is
      # rendered into secrets/.
      template {
        destination = "secrets/traefik.yml"
        perms       = "0600"
        data        = <<-EOT
          entryPoints:
            web:
              address: ":${var.web_port}"
              http:
                redirections:
                  entryPoint:
                    to: websecure
                    scheme: https
            websecure:
              address: ":${var.websecure_port}"
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
                scheme: https
                tls:
                  ca: {{ env "NOMAD_SECRETS_DIR" }}/consul-ca.pem
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
                ca: {{ env "NOMAD_SECRETS_DIR" }}/consul-ca.pem
          {{- end }}{{ end }}{{ end }}
          certificatesResolvers:
            caravan:
              acme:
                email: "${var.acme_email}"
                storage: ${local.acme_dir}/acme.json
                caServer: "${var.acme_ca_server}"
                tlsChallenge: {}
            caravan-dns:
              acme:
                email: "${var.acme_email}"
                storage: ${local.acme_dir}/acme-dns.json
                caServer: "${var.acme_ca_server}"
                dnsChallenge:
                  provider: ${var.dns_provider}
                  resolvers: ${jsonencode(var.dns_resolvers)}
                  propagation:
                    disableChecks: ${!var.dns_propagation_checks}
        EOT
      }
      template {
        destination = "secrets/consul-ca.pem"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/traefik" }}{{- range $k, $v := . }}{{ if eq $k "consul_ca_pem" }}{{ $v }}{{ end }}{{ end }}{{ end }}
        EOT
      }
      template {
        destination = "secrets/acme-ca.pem"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/traefik" }}{{- range $k, $v := . }}{{ if eq $k "acme_ca_pem" }}{{ $v }}{{ end }}{{ end }}{{ end }}
        EOT
      }
      # The ACME CA's root when the Variable has one, and the DNS
      # provider's credentials: the Variable's items named like
      # environment variables.
      template {
        destination = "secrets/dns.env"
        env         = true
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/traefik" }}
          {{- range $k, $v := . }}{{ if eq $k "acme_ca_pem" }}LEGO_CA_CERTIFICATES={{ env "NOMAD_SECRETS_DIR" }}/acme-ca.pem{{ "\n" }}{{ end }}{{ end }}
          {{- range $k, $v := . }}{{ if $k | regexMatch "^[A-Z][A-Z0-9_]*$" }}{{ $k }}={{ $v }}{{ "\n" }}{{ end }}{{ end }}
          {{- end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
