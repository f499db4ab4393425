# A WSGI app run with gunicorn (Debian: apt-get install gunicorn).
app "wsgi" {
  workspace = "dev"

  function "web" {
    command = "gunicorn"
    args    = ["--chdir", "${spec_dir}/wsgi", "--bind", "${host}:${port}", "--workers", "2", "app:app"]

    web {}
  }
}
