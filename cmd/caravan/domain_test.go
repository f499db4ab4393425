package main

import (
	"strings"
	"testing"

	"github.com/caravanhq/caravan/api"
)

func TestDomainVerbs(t *testing.T) {
	srv, seen := fakeServer(t, map[string]any{
		"POST /v1/domains/verify": api.DomainBinding{Domain: "shop.example.com", Workspace: "shop", Method: "dns"},
		"POST /v1/domains":        api.DomainBinding{Domain: "example.com", Workspace: "shop", Method: "assigned"},
		"GET /v1/domains":         []api.DomainBinding{{Domain: "example.com", Workspace: "shop", Method: "assigned", By: "root"}},
	})
	out, _, err := runCLI(t, "--addr", srv.URL, "--token", "cvn_x", "domain", "verify", "shop.example.com")
	if err != nil || !strings.Contains(out, "Verified shop.example.com for workspace shop") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	out, _, err = runCLI(t, "--addr", srv.URL, "--token", "cvn_x", "domain", "assign", "--workspace", "shop", "example.com")
	if err != nil || !strings.Contains(out, "Assigned example.com for workspace shop") {
		t.Fatalf("assign: %v\n%s", err, out)
	}
	out, _, err = runCLI(t, "--addr", srv.URL, "--token", "cvn_x", "domain", "list")
	if err != nil || !strings.Contains(out, "example.com  shop") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if len(*seen) != 3 || !strings.Contains((*seen)[1], `"workspace":"shop"`) {
		t.Errorf("requests: %v", *seen)
	}
	if _, _, err := runCLI(t, "--addr", srv.URL, "domain", "assign", "example.com"); err == nil {
		t.Error("assign without --workspace succeeded")
	}
}
