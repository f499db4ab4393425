# A function that asks Nomad for two H100 GPUs per container. Nomad places it
# only on a client whose nvidia/gpu device plugin reports an H100 model.
app "inference" {
  workspace = "ml"

  deploy {
    strategy = "recreate"
  }

  function "embed" {
    driver  = "docker"
    image   = "ghcr.io/example/embedder:1.4"
    args    = ["--port", "${port}"]
    env = {
      MODEL = "bge-large"
    }

    resources {
      cpu    = 4000
      memory = 16384
      gpu    = "H100:2"
    }

    min_containers = 1
    max_containers = 4

    web {
      port        = 8000
      health_path = "/healthz"
    }
  }

  function "batch" {
    driver  = "raw_exec"
    command = "/usr/local/bin/batch-embed"
    args    = ["--queue", "embeddings"]

    resources {
      gpu = ["H100", "A100"]
    }
  }
}
