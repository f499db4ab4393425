# A web function that scales with its traffic, from zero: no container runs
# until the first request, which caravan's proxy holds through the cold
# start; each container takes at most 4 requests at once, the autoscaler
# aims for 2, and after 30 s without requests the function goes back to
# zero. Deploy it with `caravan deploy examples/autoscale.hcl`.
app "autoscale" {
  workspace = "dev"

  function "web" {
    driver  = "raw_exec"
    command = "node"
    args = ["-e", <<-JS
      require("http").createServer((req, res) => {
        res.setHeader("content-type", "text/plain");
        res.end("hello from a container that started for you\n");
      }).listen(process.env.PORT, process.env.HOST);
    JS
    ]

    resources {
      cpu    = 100
      memory = 64
    }

    min_containers   = 0
    max_containers   = 5
    scaledown_window = "30s"

    concurrency {
      max_inputs    = 4
      target_inputs = 2
    }

    queue {
      max_requests = 100
      timeout      = "30s"
    }

    web {
      health_path = "/"
    }
  }
}
