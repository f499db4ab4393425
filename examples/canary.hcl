# A canary rollout: each redeploy starts one new container beside the live
# ones and sends it 10% of the traffic. The canary also answers on its own
# preview hostname, https://dev--birds-web--canary.<domain>, before and while
# it takes traffic. `caravan app promote birds` moves all traffic to it,
# `caravan app abort birds` sends all traffic back and removes it; without
# either, it is promoted on its own after 30 minutes of passing its checks.
# A canary that fails its health checks is aborted automatically.
app "birds" {
  workspace = "dev"

  deploy {
    strategy      = "canary"
    canaries      = 1
    traffic       = 10
    promote_after = "30m"
  }

  function "web" {
    command = "node"
    args = ["-e", <<-JS
      require("http").createServer((req, res) => {
        res.end("tweet\n");
      }).listen(process.env.PORT, process.env.HOST);
    JS
    ]
    min_containers = 3

    web {
      health_path = "/"
    }
  }
}
