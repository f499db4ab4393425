package jobs_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/router"
	"github.com/caravanhq/caravan/spec"
	"github.com/traefik/traefik/v3/pkg/config/label"
	"github.com/traefik/traefik/v3/pkg/middlewares/requestdecorator"
	httpmuxer "github.com/traefik/traefik/v3/pkg/muxer/http"
)

// fuzzSeeds are tricky specs beside the examples: every web setting,
// wildcard and upper-case domains, labels, long names that are cut,
// previews, and specs just past or at the bounds.
var fuzzSeeds = []string{
	`app "a" {
  workspace   = "w"
  environment = "e"
  deploy {
    strategy = "canary"
    traffic  = 25
  }
  function "web" {
    command = "x"
    env     = { A = "${port}", B = "${host}:${port}" }
    web {
      label               = "api"
      custom_domains      = ["*.Example.COM", "example.com.", "a.b.example.org"]
      requires_proxy_auth = true
      rate_limit          = 0
      max_body_size       = "1KiB"
      health_path         = "/h?x=1&y=%2F"
    }
  }
  function "cron" {
    command  = "x"
    schedule = "*/5 * * * *"
  }
  function "sum" {
    command  = "x"
    callable = true
  }
}
`,
	`app "a-very-long-application-name-that-goes-on-and-on-and-on" {
  workspace = "a-very-long-workspace-name-that-goes-on-and-on-too"
  deploy {
    strategy = "blue-green"
  }
  function "a-very-long-function-name-that-also-goes-on" {
    image = "nginx"
    web {
      port       = 80
      rate_limit = 1
      burst      = 10000000
    }
  }
}
`,
	`app "a" {
  workspace = "w"
  function "web" {
    command = "x"
    web {
      custom_domains = ["xn--bcher-kva.example", "a-b.c-d.example"]
      health_path    = "/%7Eready"
    }
  }
}
`,
	`app "a" {
  workspace = "w"
  function "web" {
    command = "x"
    args    = [for s in ["a", "b"] : "${s}-${port}"]
    min_containers = (((((((((((((((((((((((((((((((1)))))))))))))))))))))))))))))))
    web {}
  }
}
`,
	"app \"a\" {\n workspace = \"w\"\n x = " + strings.Repeat("(", 100) + "1" + strings.Repeat(")", 100) + "\n}\n",
	"app \"a\" {\n workspace = \"w\"\n x = \"" + strings.Repeat(`${"`, 40) + strings.Repeat(`"}`, 40) + "\"\n}\n",
	"app \"a\" {\n workspace = \"w\"\n x = <<EOT\n%{ for x in [1] }${x}%{ endfor }\nEOT\n}\n",
}

var fuzzConfig = router.Config{Domain: "caravan.localhost", EntryPoint: "websecure", CertResolver: "caravan",
	DNSCertResolver: "caravan-dns", BodyLimitPlugin: "bodylimit", KVRoot: "traefik", AuthURL: router.DefaultAuthURL, HTTPSPort: 8443}

// FuzzSpec runs spec loading, rendering and Traefik's own decoding of the
// rendered tags over arbitrary specs. Loading must never crash or hang and
// must bound its diagnostics; a spec that loads must render, render the
// same bytes twice, and its service tags must decode, through the label
// decoder Traefik's consulCatalog provider uses, to the routes caravan
// meant, whose rules Traefik's router parses and which serve the function's
// hostnames. Its seed corpus (the examples and fuzzSeeds) runs in every
// `go test`; `just fuzz` explores further.
func FuzzSpec(f *testing.F) {
	paths, err := filepath.Glob("../examples/*.hcl")
	if err != nil || len(paths) == 0 {
		f.Fatalf("no examples: %v", err)
	}
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src))
	}
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		t0 := time.Now()
		app, diags := spec.Parse([]byte(src), "/specs/fuzz.hcl")
		if took := time.Since(t0); took > time.Second {
			t.Fatalf("loading %d bytes took %v", len(src), took)
		}
		if len(diags) > spec.MaxDiagnostics+1 {
			t.Fatalf("%d diagnostics", len(diags))
		}
		if diags.HasErrors() {
			if app != nil && len(diags) == 0 {
				t.Fatal("errors without diagnostics")
			}
			return
		}
		r, err := jobs.Render(app, fuzzConfig)
		if err != nil {
			t.Fatalf("a spec that loads does not render: %v", err)
		}
		again, _ := spec.Parse([]byte(src), "/specs/fuzz.hcl")
		r2, err := jobs.Render(again, fuzzConfig)
		if err != nil || !bytes.Equal(mustJSON(t, r), mustJSON(t, r2)) {
			t.Fatalf("rendering twice differs (%v)", err)
		}
		checkRoutes(t, r)
	})
}

// FuzzWebSettings fills the settings that reach routes and tags (names,
// label, custom domains, health path, body size, strategy) with arbitrary
// strings, where FuzzSpec's byte mutations seldom reach: whatever
// validation lets through must survive rendering and Traefik's decoding as
// in FuzzSpec.
func FuzzWebSettings(f *testing.F) {
	f.Add("a", "w", "e", "web", "", "api.example.com", "/healthz", "1MB", "rolling", false)
	f.Add("shop", "acme", "", "api", "api", "*.Example.com.", "/", "4GiB", "canary", true)
	f.Add("a", "w", "prod", "f", "l", "xn--bcher-kva.example", "/a?b=c&d=%2F", "512", "blue-green", false)
	f.Add("a", "w", "", "f", "", "a`b.example.com", "/`", "1KiB", "recreate", true)
	f.Add("a", "w", "", "f", "", "a.example.com) || Host(`b.example.com", "/", "1B", "rolling", false)
	f.Fuzz(func(t *testing.T, app, workspace, env, fn, lbl, domain, health, size, strategy string, auth bool) {
		q := hclQuote
		src := fmt.Sprintf(`app %s {
  workspace   = %s
  environment = %s
  deploy {
    strategy = %s
  }
  function %s {
    command = "x"
    web {
      label               = %s
      custom_domains      = [%s]
      health_path         = %s
      max_body_size       = %s
      requires_proxy_auth = %t
    }
  }
}
`, q(app), q(workspace), q(env), q(strategy), q(fn), q(lbl), q(domain), q(health), q(size), auth)
		spc, diags := spec.Parse([]byte(src), "/specs/fuzz.hcl")
		if diags.HasErrors() {
			return
		}
		r, err := jobs.Render(spc, fuzzConfig)
		if err != nil {
			t.Fatalf("a spec that loads does not render: %v\n%s", err, src)
		}
		checkRoutes(t, r)
	})
}

// hclQuote is s as an HCL string literal that means s.
func hclQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case (r == '$' || r == '%') && strings.HasPrefix(s[i+1:], "{"):
			// ${ and %{ start templates; doubled, they are literal.
			b.WriteRune(r)
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkRoute decodes tags as Traefik does and checks they hold rt.
// checkRoutes checks every route of r, and its canaries' preview route,
// against the tags of the service that carries it (see checkRoute).
func checkRoutes(t *testing.T, r *jobs.Rendered) {
	t.Helper()
	services := map[string][]string{}
	for _, tg := range r.Job.TaskGroups {
		for _, s := range tg.Services {
			services[s.Name] = s.Tags
			if len(s.CanaryTags) > 0 {
				services[s.Name+" canaries"] = s.CanaryTags
			}
		}
	}
	for _, rt := range r.Routes {
		checkRoute(t, rt, services[rt.Name])
		if rt.Preview != nil {
			checkRoute(t, *rt.Preview, services[rt.Name+" canaries"])
		}
	}
}

func checkRoute(t *testing.T, rt router.Route, tags []string) {
	t.Helper()
	if len(tags) == 0 {
		t.Fatalf("route %s: no service carries its tags", rt.Name)
	}
	labels := map[string]string{}
	for _, tag := range tags {
		if tag == "traefik.enable=true" || tag == jobs.CanaryTag {
			continue
		}
		k, v, ok := strings.Cut(tag, "=")
		if !ok {
			t.Fatalf("tag %q has no =", tag)
		}
		if _, dup := labels[k]; dup {
			t.Fatalf("key %q tagged twice", k)
		}
		labels[k] = v
	}
	conf, err := label.DecodeConfiguration(labels)
	if err != nil {
		t.Fatalf("Traefik cannot decode the tags of %s: %v\n%q", rt.Name, err, tags)
	}
	want := rt.Config.HTTP
	// A route has a router per kind of hostname (generated, exact custom,
	// wildcard), each with its own priority; all of them, and only them,
	// come back.
	if !slices.Equal(keys(conf.HTTP.Routers), keys(want.Routers)) || conf.HTTP.Routers[rt.Router] == nil {
		t.Fatalf("decoded routers %v, want %v (the generated hostname's %s among them)", keys(conf.HTTP.Routers), keys(want.Routers), rt.Router)
	}
	for name, wantRouter := range want.Routers {
		got := conf.HTTP.Routers[name]
		if got.Rule != wantRouter.Rule || got.Service != wantRouter.Service || got.Priority != wantRouter.Priority ||
			!reflect.DeepEqual(got.EntryPoints, wantRouter.EntryPoints) || !reflect.DeepEqual(got.Middlewares, wantRouter.Middlewares) ||
			!reflect.DeepEqual(got.TLS, wantRouter.TLS) {
			t.Fatalf("router %s decodes to\n%+v\nwant\n%+v", name, got, wantRouter)
		}
	}
	// The decoder fills Traefik's defaults in (forwardAuth's
	// maxBodySize, say): everything caravan set must come back as set.
	if path := missing(asTree(t, want.Middlewares), asTree(t, conf.HTTP.Middlewares), "middlewares"); path != "" {
		t.Fatalf("%s does not decode as set:\n%s\nwant\n%s", path, mustJSON(t, conf.HTTP.Middlewares), mustJSON(t, want.Middlewares))
	}
	if path := missing(asTree(t, want.Services), asTree(t, conf.HTTP.Services), "services"); path != "" {
		t.Fatalf("%s does not decode as set:\n%s\nwant\n%s", path, mustJSON(t, conf.HTTP.Services), mustJSON(t, want.Services))
	}

	// Traefik's router parses the rule, and it serves every hostname of
	// the route, and not some other app's.
	parser, err := httpmuxer.NewSyntaxParser()
	if err != nil {
		t.Fatal(err)
	}
	mux := httpmuxer.NewMuxer(parser)
	var rules []string
	for _, got := range conf.HTTP.Routers {
		rules = append(rules, got.Rule)
		if err := mux.AddRoute(got.Rule, "", 0, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(299) })); err != nil {
			t.Fatalf("Traefik refuses the rule of %s: %v", rt.Name, err)
		}
	}
	hosts := []string{rt.Host}
	for _, d := range rt.CustomDomains {
		if parent, ok := strings.CutPrefix(d, "*."); ok {
			d = "sub." + parent
		}
		hosts = append(hosts, d)
	}
	for _, h := range hosts {
		if code := serve(mux, h); code != 299 {
			t.Fatalf("%s: a request for %s gets %d", rt.Name, h, code)
		}
	}
	if code := serve(mux, "other--app-web."+fuzzConfig.Domain); code == 299 {
		t.Fatalf("%s: another app's hostname is routed to it (rules %q)", rt.Name, rules)
	}
}

// serve sends a request for host through Traefik's request decorator
// (which canonizes the Host the matchers read) to mux.
func serve(mux http.Handler, host string) int {
	req := httptest.NewRequest("GET", "http://placeholder/", nil)
	req.Host = host
	rec := httptest.NewRecorder()
	requestdecorator.New(nil).ServeHTTP(rec, req, mux.ServeHTTP)
	return rec.Code
}

// asTree is v as JSON's maps, slices and scalars.
func asTree(t *testing.T, v any) any {
	t.Helper()
	var out any
	if err := json.Unmarshal(mustJSON(t, v), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// missing is the path of the first value of want that got lacks or
// holds differently, or "": got may hold more.
func missing(want, got any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return path
		}
		for k, v := range w {
			if p := missing(v, g[k], path+"."+k); p != "" {
				return p
			}
		}
		return ""
	default:
		if !reflect.DeepEqual(want, got) {
			return path
		}
		return ""
	}
}

func keys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
