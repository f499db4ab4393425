# NATS with JetStream for caravan's warm calls: the one queue every caravan
# server shares (an embedded NATS serves its own server only). One
# instance with its JetStream files on a host volume; its token comes
# from the Nomad Variable nomad/jobs/nats (the same token goes into
# nomad/jobs/caravan-server as nats_token):
#
#   nomad var put -namespace caravan-system nomad/jobs/nats token=@nats.token
#   nomad job run -var-file VARS.hcl nats.nomad.hcl
#
# caravan server's --nats-url is then nats://<this client>:4222 (or
# nats.service.consul:4222 through Consul DNS).

variable "namespace" {
  type    = string
  default = "caravan-system"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "nats_version" {
  type    = string
  default = "2.11"
}

variable "port" {
  type    = number
  default = 4222
}

variable "jetstream_volume" {
  type        = string
  default     = "nats-jetstream"
  description = "Nomad host volume that keeps JetStream's files across restarts"
}

job "nats" {
  namespace   = var.namespace
  datacenters = var.datacenters

  group "nats" {
    network {
      port "client" {
        static = var.port
      }
    }

    volume "jetstream" {
      type   = "host"
      source = var.jetstream_volume
    }

    service {
      name     = "nats"
      port     = "client"
      provider = "consul"
      check {
        type     = "tcp"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "nats" {
      driver = "docker"

      config {
        image        = "nats:${var.nats_version}"
        network_mode = "host"
        args         = ["--config", "/secrets/nats.conf"]
      }

      volume_mount {
        volume      = "jetstream"
        destination = "/data"
      }

      template {
        destination = "secrets/nats.conf"
        perms       = "0600"
        data        = <<-EOT
          port: ${var.port}
          jetstream {
            store_dir: /data
          }
          authorization {
            token: "{{ with nomadVar "nomad/jobs/nats" }}{{ .token }}{{ end }}"
          }
        EOT
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
