# Two web functions, a background worker and a nightly job in one app, in the "staging"
# environment. "frontend" is served at https://shop-staging--store-frontend.<domain>;
# "api" has a custom label, so it is https://shop-staging--api.<domain>
# (and api.shop.example.com) rather than https://shop-staging--store-api.<domain>.
app "store" {
  workspace   = "shop"
  environment = "staging"

  deploy {
    strategy = "rolling"
  }

  function "frontend" {
    command = "node"
    args    = ["server.js", "--port", "${port}"]
    env = {
      API_URL = "https://shop-staging--api.caravan.localhost"
    }
    min_containers = 2

    web {}
  }

  function "api" {
    command = "node"
    args    = ["api.js"]

    web {
      label          = "api"
      health_path    = "/healthz"
      custom_domains = ["api.shop.example.com"]
      # Callers must send a workspace token in Caravan-Key / Caravan-Secret.
      requires_proxy_auth = true
      rate_limit          = 50
    }
  }

  function "worker" {
    command = "node"
    args    = ["worker.js"]
  }

  # Runs every night at 03:00 UTC as a Nomad periodic job the app owns;
  # `caravan run store nightly` runs it now.
  function "nightly" {
    command  = "node"
    args     = ["reindex.js"]
    schedule = "0 3 * * *"
  }
}
