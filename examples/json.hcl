# A JSON API: POST /sum with {"numbers": [1, 2, 3]} answers {"sum": 6}; the same sum as
# a callable function: `caravan call calc sum --data '{"numbers": [1, 2, 3]}'` prints {"sum":6}.
app "calc" {
  workspace = "dev"

  function "api" {
    command = "node"
    args = ["-e", <<-JS
      require("http").createServer((req, res) => {
        if (req.method !== "POST" || req.url !== "/sum") {
          res.setHeader("content-type", "application/json");
          return res.end(JSON.stringify({ok: true}));
        }
        let body = "";
        req.on("data", c => body += c);
        req.on("end", () => {
          let numbers;
          try { numbers = JSON.parse(body).numbers; } catch (e) {}
          res.setHeader("content-type", "application/json");
          if (!Array.isArray(numbers)) {
            res.statusCode = 400;
            return res.end(JSON.stringify({error: "send {\"numbers\": [...]}"}));
          }
          res.end(JSON.stringify({sum: numbers.reduce((a, b) => a + b, 0)}));
        });
      }).listen(process.env.PORT, process.env.HOST);
    JS
    ]

    web {}
  }

  # Runs once per call, with the call's input (JSON) in the file $CARAVAN_INPUT;
  # what it prints is the call's output, its exit code the call's.
  function "sum" {
    command  = "node"
    callable = true
    args = ["-e", <<-JS
      const input = JSON.parse(require("fs").readFileSync(process.env.CARAVAN_INPUT, "utf8"));
      const numbers = input && input.numbers;
      if (!Array.isArray(numbers)) {
        console.error('send {"numbers": [...]}');
        process.exit(2);
      }
      console.log(JSON.stringify({sum: numbers.reduce((a, b) => a + b, 0)}));
    JS
    ]
  }
}
