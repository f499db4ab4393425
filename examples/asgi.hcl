# An ASGI app run with uvicorn (Debian: apt-get install uvicorn).
app "asgi" {
  workspace = "dev"

  function "web" {
    command = "uvicorn"
    args    = ["--app-dir", "${spec_dir}/asgi", "app:app", "--host", "${host}", "--port", "${port}"]

    web {}
  }
}
