# caravan proxy: the data plane between Traefik and autoscaled functions,
# one per Nomad client beside Traefik (a system job). Nomad registers it
# in Consul as caravan-proxy, health-checked on its admin address, as
# `caravan proxy --register` does outside Nomad; caravan server lists
# those instances for Traefik's KV provider and the autoscaler reads
# their load from the meta caravan_proxy_admin.
#
# Its Consul token (deploy/acl/consul-caravan-proxy.policy.hcl) comes from
# the Nomad Variable nomad/jobs/caravan-proxy, which the job's tasks may
# read with their default workload identity:
#
#   nomad var put -namespace caravan-system nomad/jobs/caravan-proxy \
#     consul_token=@consul-proxy.token [consul_ca_pem=@consul-ca.pem]
#   nomad job run -var-file VARS.hcl caravan-proxy.nomad.hcl

variable "namespace" {
  type        = string
  default     = "caravan-system"
  description = "Nomad namespace of caravan's own jobs (the Variable lives in it)"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "caravan_artifact" {
  type        = string
  default     = ""
  description = "go-getter URL of the caravan binary (a linux tarball of the release); empty: caravan_command is already on every client"
}

variable "caravan_command" {
  type        = string
  default     = "local/caravan"
  description = "the caravan binary as the task runs it: local/caravan when caravan_artifact fetches it, else its path on the clients"
}

variable "driver" {
  type        = string
  default     = "exec"
  description = "exec (isolated) or raw_exec (a test cluster's clients)"
}

variable "consul_addr" {
  type        = string
  default     = "127.0.0.1:8500"
  description = "the local Consul agent, host:port or https://host:port"
}

variable "domain" {
  type        = string
  description = "parent domain of the apps' hostnames (caravan server's --domain)"
}

job "caravan-proxy" {
  namespace   = var.namespace
  datacenters = var.datacenters
  type        = "system"

  group "proxy" {
    network {
      port "data" {}
      port "admin" {}
    }

    service {
      name     = "caravan-proxy"
      port     = "data"
      provider = "consul"
      # No Traefik tags: caravan server publishes the proxies to Traefik's
      # KV provider itself. The autoscaler reads the load here.
      meta {
        caravan_proxy_admin = "http://${NOMAD_ADDR_admin}"
      }
      check {
        name     = "caravan proxy /healthz"
        type     = "http"
        port     = "admin"
        path     = "/healthz"
        interval = "1s"
        timeout  = "1s"
      }
    }

    task "proxy" {
      driver = var.driver

      dynamic "artifact" {
        for_each = var.caravan_artifact == "" ? [] : [var.caravan_artifact]
        content {
          source      = artifact.value
          destination = "local/"
        }
      }

      config {
        command = var.caravan_command
        args = [
          "proxy",
          "--listen", "${NOMAD_ADDR_data}",
          "--admin-listen", "${NOMAD_ADDR_admin}",
          "--domain", var.domain,
        ]
      }

      env {
        CONSUL_HTTP_ADDR       = var.consul_addr
        CONSUL_HTTP_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/consul.token"
      }

      # The token and (if Consul speaks TLS) its CA, never in the job.
      template {
        destination = "${NOMAD_SECRETS_DIR}/consul.token"
        perms       = "0600"
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/caravan-proxy" }}{{ .consul_token }}{{ end }}
        EOT
      }
      template {
        destination = "${NOMAD_SECRETS_DIR}/consul.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/caravan-proxy" }}{{- range $k, $v := . }}{{ if eq $k "consul_ca_pem" }}CONSUL_CACERT={{ env "NOMAD_SECRETS_DIR" }}/consul-ca.pem{{ end }}{{ end }}{{ end }}
        EOT
      }
      template {
        destination = "${NOMAD_SECRETS_DIR}/consul-ca.pem"
        change_mode = "restart"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/caravan-proxy" }}{{- range $k, $v := . }}{{ if eq $k "consul_ca_pem" }}{{ $v }}{{ end }}{{ end }}{{ end }}
        EOT
      }

      # Drains finish within caravan server's --drain-delay.
      kill_timeout = "35s"

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
