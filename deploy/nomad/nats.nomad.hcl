# NATS with JetStream for caravan's warm calls: the one queue every caravan
# server shares (an embedded NATS serves its own server only). A cluster
# of three nodes (var.nodes), one group each, pinned to the Nomad client
# at its host: a node's JetStream files stay on that client (the host
# volume jetstream_volume), and every node routes to every other by the
# addresses listed, so they find each other in any start order. caravan
# server's --nats-replicas 3 keeps every stream on all three, so losing
# one node loses nothing stored. The token clients present (and the routes'
# password) comes from the Nomad Variable nomad/jobs/nats; the same token
# goes into nomad/jobs/caravan-server as nats_token:
#
#   nomad var put -namespace caravan-system nomad/jobs/nats token=@nats.token
#   nomad job run -var-file VARS.hcl nats.nomad.hcl
#
# with VARS.hcl listing the nodes:
#
#   nodes = [
#     { host = "10.0.0.11", port = 4222, cluster_port = 6222, monitor_port = 8222 },
#     { host = "10.0.0.12", port = 4222, cluster_port = 6222, monitor_port = 8222 },
#     { host = "10.0.0.13", port = 4222, cluster_port = 6222, monitor_port = 8222 },
#   ]
#
# caravan server's --nats-url is then every node's client address,
# nats://10.0.0.11:4222,nats://10.0.0.12:4222,nats://10.0.0.13:4222 (or
# nats.service.consul:4222 through Consul DNS), with --nats-worker-token
# (README, The queue). driver = "raw_exec" runs nats_command already on
# the clients instead of the docker image (the cluster e2e tests do,
# several nodes on one host on ports of their own, files in the
# allocation's directory: jetstream_volume = "").

variable "namespace" {
  type    = string
  default = "caravan-system"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "driver" {
  type        = string
  default     = "docker"
  description = "docker (the nats image) or raw_exec (nats_command on every client)"
}

variable "nats_version" {
  type        = string
  default     = "2.11"
  description = "tag of the nats image (docker)"
}

variable "nats_command" {
  type        = string
  default     = "nats-server"
  description = "path of nats-server on every client (raw_exec)"
}

variable "nodes" {
  type = list(object({
    host         = string
    port         = number
    cluster_port = number
    monitor_port = number
  }))
  description = "one object per node: the address of its Nomad client (attr.unique.network.ip-address), its client, cluster (routes) and monitoring ports"
}

variable "cluster_name" {
  type    = string
  default = "caravan"
}

variable "jetstream_volume" {
  type        = string
  default     = "nats-jetstream"
  description = "Nomad host volume on each node's client that keeps JetStream's files across restarts; empty: the allocation's directory (lost with it)"
}

variable "max_file_store" {
  type        = string
  default     = "10G"
  description = "JetStream's file storage limit on each node"
}

locals {
  docker    = var.driver == "docker"
  store_dir = var.jetstream_volume == "" ? "{{ env \"NOMAD_ALLOC_DIR\" }}/jetstream" : "/data"
  # The routes' password is the clients' token: one secret to rotate.
  routes = join("\n", [for n in var.nodes : "    \"nats-route://route:{{ with nomadVar \"nomad/jobs/nats\" }}{{ .token }}{{ end }}@${n.host}:${n.cluster_port}\""])
}

job "nats" {
  namespace   = var.namespace
  datacenters = var.datacenters

  # Nodes restart in place, one at a time: a node keeps its name and its
  # files, and two of three keep JetStream's quorum meanwhile.
  update {
    max_parallel = 1
  }

  dynamic "group" {
    for_each = var.nodes
    labels   = ["nats-${group.key}"]

    content {
      constraint {
        attribute = "${attr.unique.network.ip-address}"
        value     = group.value.host
      }

      network {
        port "client" {
          static = group.value.port
        }
        port "cluster" {
          static = group.value.cluster_port
        }
        port "monitor" {
          static = group.value.monitor_port
        }
      }

      dynamic "volume" {
        for_each = var.jetstream_volume == "" ? [] : [var.jetstream_volume]
        labels   = ["jetstream"]
        content {
          type   = "host"
          source = volume.value
        }
      }

      service {
        name     = "nats"
        port     = "client"
        provider = "consul"
        meta {
          server_name = "nats-${group.key}"
        }
        # Healthy once its JetStream is up and current with the cluster.
        check {
          type     = "http"
          port     = "monitor"
          path     = "/healthz"
          interval = "5s"
          timeout  = "2s"
        }
      }

      restart {
        attempts = 10
        interval = "5m"
        delay    = "5s"
        mode     = "delay"
      }

      task "nats" {
        driver = var.driver

        # The docker image or the binary on the client: the one config
        # block the driver knows.
        dynamic "config" {
          for_each = local.docker ? [var.nats_version] : []
          content {
            image        = "nats:${config.value}"
            network_mode = "host"
            args         = ["--config", "/secrets/nats.conf"]
          }
        }
        dynamic "config" {
          for_each = local.docker ? [] : [var.nats_command]
          content {
            command = config.value
            args    = ["--config", "${NOMAD_SECRETS_DIR}/nats.conf"]
          }
        }

        dynamic "volume_mount" {
          for_each = var.jetstream_volume == "" ? [] : ["/data"]
          content {
            volume      = "jetstream"
            destination = volume_mount.value
          }
        }

        template {
          destination = "secrets/nats.conf"
          perms       = "0600"
          # A new token restarts the node (a reload would keep old clients).
          change_mode = "restart"
          data        = <<-EOT
            server_name: nats-${group.key}
            port: ${group.value.port}
            http_port: ${group.value.monitor_port}
            jetstream {
              store_dir: "${local.store_dir}"
              max_file_store: ${var.max_file_store}
            }
            authorization {
              token: "{{ with nomadVar "nomad/jobs/nats" }}{{ .token }}{{ end }}"
            }
            cluster {
              name: ${var.cluster_name}
              port: ${group.value.cluster_port}
              authorization {
                user: route
                password: "{{ with nomadVar "nomad/jobs/nats" }}{{ .token }}{{ end }}"
              }
              routes: [
            ${local.routes}
              ]
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
}
