# caravan server: the API the CLI talks to, two instances on different
# Nomad clients. Both share one address (caravan_url: a load balancer,
# or Consul DNS caravan-server.service.consul on the static port), which
# Traefik's forwardAuth (--auth-url) and Nomad's clients fetching bundles
# (--bundle-url) use; locks in Consul keep one server on each app change
# and one autoscaler at a time. Their queue is one external NATS with
# JetStream (an embedded NATS serves one server only; nats.nomad.hcl runs
# one), their bundles one S3 bucket or one directory both mount.
#
# Every secret comes from the Nomad Variable nomad/jobs/caravan-server,
# which the job's tasks may read with their default workload identity:
#
#   nomad var put -namespace caravan-system nomad/jobs/caravan-server \
#     nomad_token=@nomad-server.token consul_token=@consul-server.token \
#     nats_token=@nats.token \
#     [nomad_ca_pem=@nomad-ca.pem] [consul_ca_pem=@consul-ca.pem] \
#     [AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...]
#   nomad job run -var-file VARS.hcl caravan-server.nomad.hcl
#
# The tokens are of deploy/acl's caravan-server policies.

variable "namespace" {
  type    = string
  default = "caravan-system"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "count" {
  type    = number
  default = 2
}

variable "caravan_artifact" {
  type        = string
  default     = ""
  description = "go-getter URL of the caravan binary; empty: caravan_command is already on every client"
}

variable "caravan_command" {
  type    = string
  default = "local/caravan"
}

variable "driver" {
  type    = string
  default = "exec"
}

variable "port" {
  type        = number
  default     = 7474
  description = "static port of the API on each client (caravan_url names it)"
}

variable "caravan_url" {
  type        = string
  description = "the one address of every server, http://host:port, reachable from Traefik and the Nomad clients"
}

variable "nomad_addr" {
  type    = string
  default = "https://nomad.service.consul:4646"
}

variable "consul_addr" {
  type    = string
  default = "127.0.0.1:8500"
}

variable "domain" {
  type        = string
  description = "parent domain of the apps' hostnames; *.domain points at Traefik"
}

variable "https_port" {
  type    = number
  default = 0
}

variable "proxy_addr" {
  type        = string
  default     = ""
  description = "Traefik's HTTPS host:port; deploys wait until web functions answer there (empty: they do not)"
}

variable "traefik_api" {
  type        = string
  default     = ""
  description = "URL of Traefik's API entry point (traefik.nomad.hcl's admin port), to see traffic splits applied"
}

variable "nats_url" {
  type        = string
  description = "the servers' shared NATS with JetStream, nats://host:4222"
}

variable "bundle_s3_endpoint" {
  type    = string
  default = ""
}

variable "bundle_s3_bucket" {
  type    = string
  default = ""
}

variable "bundle_s3_region" {
  type    = string
  default = ""
}

variable "bundle_dir" {
  type        = string
  default     = ""
  description = "without S3: a directory every client mounts (one store for both servers)"
}

variable "workspace_policy" {
  type        = string
  default     = ""
  description = "HCL of what each workspace may run (README, Security model); empty: exec and docker"
}

locals {
  bundle_args = var.bundle_s3_endpoint != "" ? concat(
    ["--bundle-s3-endpoint", var.bundle_s3_endpoint, "--bundle-s3-bucket", var.bundle_s3_bucket],
    var.bundle_s3_region == "" ? [] : ["--bundle-s3-region", var.bundle_s3_region],
  ) : (var.bundle_dir == "" ? [] : ["--bundle-dir", var.bundle_dir])
  optional_args = concat(
    var.proxy_addr == "" ? [] : ["--proxy-addr", var.proxy_addr],
    var.traefik_api == "" ? [] : ["--traefik-api", var.traefik_api],
    var.workspace_policy == "" ? [] : ["--policy", "local/policy.hcl"],
  )
}

job "caravan-server" {
  namespace   = var.namespace
  datacenters = var.datacenters

  update {
    max_parallel = 1
    auto_revert  = true
  }

  group "server" {
    count = var.count

    # Two servers never share a client: losing one loses one server.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }
    spread {
      attribute = "${node.unique.id}"
    }

    network {
      port "http" {
        static = var.port
      }
    }

    service {
      name     = "caravan-server"
      port     = "http"
      provider = "consul"
      check {
        type     = "http"
        path     = "/v1/health"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "server" {
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
        args = concat([
          "server",
          "--listen", "${NOMAD_ADDR_http}",
          "--nomad-addr", var.nomad_addr,
          "--nomad-token-file", "${NOMAD_SECRETS_DIR}/nomad.token",
          "--consul-addr", var.consul_addr,
          "--consul-token-file", "${NOMAD_SECRETS_DIR}/consul.token",
          "--domain", var.domain,
          "--https-port", "${var.https_port}",
          "--auth-url", "${var.caravan_url}/v1/auth/proxy",
          "--bundle-url", var.caravan_url,
          "--nats-url", var.nats_url,
          "--nats-token-file", "${NOMAD_SECRETS_DIR}/nats.token",
        ], local.bundle_args, local.optional_args)
      }

      template {
        destination = "${NOMAD_SECRETS_DIR}/nomad.token"
        perms       = "0600"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/caravan-server" }}{{ .nomad_token }}{{ end }}
        EOT
      }
      template {
        destination = "${NOMAD_SECRETS_DIR}/consul.token"
        perms       = "0600"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/caravan-server" }}{{ .consul_token }}{{ end }}
        EOT
      }
      template {
        destination = "${NOMAD_SECRETS_DIR}/nats.token"
        perms       = "0600"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/caravan-server" }}{{ .nats_token }}{{ end }}
        EOT
      }
      template {
        destination = "${NOMAD_SECRETS_DIR}/nomad-ca.pem"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/caravan-server" }}{{- range $k, $v := . }}{{ if eq $k "nomad_ca_pem" }}{{ $v }}{{ end }}{{ end }}{{ end }}
        EOT
      }
      template {
        destination = "${NOMAD_SECRETS_DIR}/consul-ca.pem"
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/caravan-server" }}{{- range $k, $v := . }}{{ if eq $k "consul_ca_pem" }}{{ $v }}{{ end }}{{ end }}{{ end }}
        EOT
      }
      # The CAs only when the Variable has them, and its items named like
      # environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY for S3).
      template {
        destination = "${NOMAD_SECRETS_DIR}/caravan.env"
        env         = true
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/caravan-server" }}
          {{- range $k, $v := . }}{{ if eq $k "nomad_ca_pem" }}NOMAD_CACERT={{ env "NOMAD_SECRETS_DIR" }}/nomad-ca.pem{{ "\n" }}{{ end }}{{ end }}
          {{- range $k, $v := . }}{{ if eq $k "consul_ca_pem" }}CONSUL_CACERT={{ env "NOMAD_SECRETS_DIR" }}/consul-ca.pem{{ "\n" }}{{ end }}{{ end }}
          {{- range $k, $v := . }}{{ if $k | regexMatch "^[A-Z][A-Z0-9_]*$" }}{{ $k }}={{ $v }}{{ "\n" }}{{ end }}{{ end }}
          {{- end }}
        EOT
      }
      dynamic "template" {
        for_each = var.workspace_policy == "" ? [] : [var.workspace_policy]
        content {
          destination = "local/policy.hcl"
          data        = template.value
        }
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
