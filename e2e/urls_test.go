package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/api"
)

// TestURLForms deploys one app in an environment with a long name, a
// labelled function and a custom domain, and reaches each URL over HTTPS
// with a certificate Pebble issued that covers that very name.
func TestURLForms(t *testing.T) {
	const app = "a-rather-long-application-name-for-testing"
	purge(t, "e2e.staging--"+app)
	js := func(body string) string {
		return strconv.Quote(fmt.Sprintf(`require("http").createServer((q, s) => s.end(%q)).listen(process.env.PORT, process.env.HOST);`, body))
	}
	src := fmt.Sprintf(`app %q {
  workspace   = "e2e"
  environment = "staging"
  function "an-equally-long-function-name" {
    command = "node"
    args    = ["-e", %s]
    web {}
  }
  function "api" {
    command = "node"
    args    = ["-e", %s]
    web {
      label          = "public-api"
      custom_domains = ["api.caravan-e2e.test"]
    }
  }
}
`, app, js("long\n"), js("api\n"))
	res := deploy(t, "urls.hcl", src, api.DeployBody{})
	urls := map[string]string{}
	for _, f := range res.Functions {
		urls[f.Name] = f.URL
	}
	long := strings.TrimPrefix(urls["an-equally-long-function-name"], "https://")
	label := strings.SplitN(long, ".", 2)[0]
	if len(label) > 63 || !strings.HasPrefix(label, "e2e-staging--a-rather-long") || label[len(label)-9] != '-' {
		t.Fatalf("long name's host label %q: want at most 63 characters, the environment suffix, and a hash at the end", label)
	}
	if want := "https://e2e-staging--public-api." + env.stack.Domain; !strings.HasPrefix(urls["api"], want) {
		t.Fatalf("labelled URL %s, want %s...", urls["api"], want)
	}
	answers(t, urls["an-equally-long-function-name"], "long\n")
	answers(t, urls["api"], "api\n")
	custom := "https://api.caravan-e2e.test:" + strconv.Itoa(env.stack.Ports.TraefikWebsecure)
	answers(t, custom, "api\n")

	// Each name has a certificate from Pebble that names it: the generated
	// one the platform's wildcard, the custom domain its own (answers
	// already verified the chain against Pebble's root; check the names).
	for _, host := range []string{strings.SplitN(long, ":", 2)[0], "api.caravan-e2e.test"} {
		if err := servedCert(t, host).VerifyHostname(host); err != nil {
			t.Errorf("certificate for %s: %v", host, err)
		}
	}
}

// TestWildcardDomain serves *.wild.caravan-e2e.test with a wildcard
// certificate Pebble issued over DNS-01 (the TXT record set in
// pebble-challtestsrv through lego's exec hook).
func TestWildcardDomain(t *testing.T) {
	purge(t, "e2e--wild")
	src := fmt.Sprintf(`app "wild" {
  workspace = "e2e"
  function "web" {
    command = "node"
    args    = ["-e", %s]
    web {
      custom_domains = ["*.wild.caravan-e2e.test"]
    }
  }
}
`, strconv.Quote(`require("http").createServer((q, s) => s.end(q.headers.host.split(":")[0] + "\n")).listen(process.env.PORT, process.env.HOST);`))
	res := deploy(t, "wild.hcl", src, api.DeployBody{})
	port := strconv.Itoa(env.stack.Ports.TraefikWebsecure)
	for _, sub := range []string{"one", "two"} {
		host := sub + ".wild.caravan-e2e.test"
		answers(t, "https://"+host+":"+port, host+"\n")
		if cert := servedCert(t, host); len(cert.DNSNames) != 1 || cert.DNSNames[0] != "*.wild.caravan-e2e.test" {
			t.Errorf("certificate for %s names %v, want the wildcard", host, cert.DNSNames)
		}
	}
	answers(t, res.Functions[0].URL, strings.SplitN(strings.TrimPrefix(res.Functions[0].URL, "https://"), ":", 2)[0]+"\n")
}

// TestPlainHTTPRedirects: http:// answers with a permanent redirect to the
// https:// URL.
func TestPlainHTTPRedirects(t *testing.T) {
	purge(t, "e2e--plain")
	res := deploy(t, "plain.hcl", nodeServer("plain", "secure\n", false), api.DeployBody{})
	host := strings.SplitN(strings.TrimPrefix(res.Functions[0].URL, "https://"), ":", 2)[0]
	client := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(env.stack.Ports.TraefikWeb))
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Get("http://" + host + "/path?q=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := res.Functions[0].URL + "/path?q=1"; resp.StatusCode != http.StatusPermanentRedirect && resp.StatusCode != http.StatusMovedPermanently ||
		resp.Header.Get("Location") != want {
		t.Fatalf("http:// got %d Location %q, want a permanent redirect to %s", resp.StatusCode, resp.Header.Get("Location"), want)
	}
}
