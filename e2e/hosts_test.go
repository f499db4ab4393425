package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/api"
)

func labelled(app, label, domain, body string) string {
	js := fmt.Sprintf(`require("http").createServer((q, s) => s.end(%q)).listen(process.env.PORT, process.env.HOST);`, body)
	web := fmt.Sprintf("label = %q", label)
	if domain != "" {
		web += fmt.Sprintf("\n      custom_domains = [%q]", domain)
	}
	return fmt.Sprintf("app %q {\n  workspace = \"e2e\"\n  function \"web\" {\n    command = \"node\"\n    args = [\"-e\", %s]\n    web {\n      %s\n    }\n  }\n}\n",
		app, strconv.Quote(js), web)
}

// TestHostnameClaims: an app may not take a hostname another app serves
// (generated or custom); stopping the first frees it.
func TestHostnameClaims(t *testing.T) {
	purge(t, "e2e--claima")
	purge(t, "e2e--claimb")
	ctx := context.Background()
	a := deploy(t, "a.hcl", labelled("claima", "shared", "shop.example.test", "a\n"), api.DeployBody{})

	for name, src := range map[string]string{
		"same label":         labelled("claimb", "shared", "", "b\n"),
		"same custom domain": labelled("claimb", "own", "shop.example.test", "b\n"),
	} {
		_, err := env.client.Deploy(ctx, "b.hcl", []byte(src), 0)
		var apiErr *api.APIError
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict || !strings.Contains(apiErr.Message, `app "claima"`) {
			t.Fatalf("%s: %v, want 409 naming app claima", name, err)
		}
	}
	if _, _, err := env.nomad.Jobs().Info("e2e--claimb", nsq("e2e--claimb")); err == nil {
		t.Fatal("a refused deploy registered a job")
	}
	answers(t, a.Functions[0].URL, "a\n")

	// app url names the same URL deploy printed.
	if u, err := env.client.URL(ctx, "claima", "web", api.ChangeBody{}); err != nil || u != a.Functions[0].URL {
		t.Fatalf("app url = %q %v, want %s", u, err, a.Functions[0].URL)
	}
	if _, err := env.client.URL(ctx, "claima", "nope", api.ChangeBody{}); err == nil {
		t.Fatal("app url of a missing function succeeded")
	}

	// Moving claima off the custom domain frees it for claimb.
	deploy(t, "a.hcl", labelled("claima", "shared", "", "a2\n"), api.DeployBody{})
	b := deploy(t, "b.hcl", labelled("claimb", "own", "shop.example.test", "b\n"), api.DeployBody{})
	answers(t, b.Functions[0].URL, "b\n")

	// Stopping claima frees its label.
	if _, err := env.client.Stop(ctx, "claima", api.ChangeBody{}); err != nil {
		t.Fatal(err)
	}
	c := deploy(t, "c.hcl", labelled("claimc", "shared", "", "c\n"), api.DeployBody{})
	answers(t, c.Functions[0].URL, "c\n")
	purge(t, "e2e--claimc")
}
