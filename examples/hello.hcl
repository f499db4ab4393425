# The smallest caravan app: one web function that runs on any Nomad client
# with raw_exec and Node.js. Deploy it with `caravan deploy examples/hello.hcl`.
app "hello" {
  workspace = "dev"

  function "web" {
    driver  = "raw_exec"
    command = "node"
    # Nomad picks a free port for each container and passes it as $PORT (and
    # as ${port} in command, args and env); $HOST is the address to bind.
    args = ["-e", <<-JS
      require("http").createServer((req, res) => {
        res.setHeader("content-type", "text/plain");
        res.end("hello from caravan\n");
      }).listen(process.env.PORT, process.env.HOST);
    JS
    ]

    resources {
      cpu    = 100
      memory = 64
    }

    web {
      health_path = "/"
    }
  }
}
