# Functions with code bundles (the render test gives each a bundle ID).
app "bundled" {
  workspace = "dev"

  function "web" {
    command = "python3"
    args    = ["${spec_dir}/server.py", "--port", "${port}"]
    env     = { DATA = "${spec_dir}/data" }
    web {}
  }

  function "nightly" {
    command  = "${spec_dir}/bin/report"
    schedule = "0 3 * * *"
  }

  function "sum" {
    command  = "node"
    args     = ["${spec_dir}/sum.js"]
    callable = true
  }

  function "site" {
    image = "nginx:1.27"
    args  = ["-c", "${spec_dir}/nginx.conf"]
    files {
      include = ["nginx.conf", "static"]
    }
    web {
      port = 80
    }
  }
}
