# A static file server for the files in ./static beside this spec. They travel
# with each deploy as the function's code bundle (the files block takes only
# that directory), and ${spec_dir} is where Nomad unpacks it.
app "site" {
  workspace = "dev"

  function "files" {
    files {
      include = ["static"]
    }

    command = "node"
    args = ["-e", <<-JS
      const fs = require("fs"), path = require("path");
      const root = process.argv[1];
      const types = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".txt": "text/plain"};
      require("http").createServer((req, res) => {
        const rel = path.normalize(decodeURIComponent(req.url.split("?")[0])).replace(/^(\.\.[\/\\])+/, "");
        let file = path.join(root, rel);
        if (file.endsWith(path.sep)) file = path.join(file, "index.html");
        fs.readFile(file, (err, data) => {
          if (err) { res.statusCode = 404; return res.end("not found\n"); }
          res.setHeader("content-type", types[path.extname(file)] || "application/octet-stream");
          res.end(data);
        });
      }).listen(process.env.PORT, process.env.HOST);
    JS
    , "${spec_dir}/static"]

    web {}
  }
}
