package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"

	"github.com/caravanhq/caravan/api"
)

// TestProxyAuth: a requires_proxy_auth endpoint answers 401 without a
// valid token of its workspace and 200 with one; the function never sees
// the credentials, and sees the client's address.
func TestProxyAuth(t *testing.T) {
	purge(t, "e2e--guarded")
	ctx := context.Background()
	js := `require("http").createServer((q, s) => s.end(JSON.stringify(q.headers))).listen(process.env.PORT, process.env.HOST);`
	src := fmt.Sprintf("app \"guarded\" {\n  workspace = \"e2e\"\n  function \"web\" {\n    command = \"node\"\n    args = [\"-e\", %s]\n    web {\n      requires_proxy_auth = true\n    }\n  }\n}\n", strconv.Quote(js))
	// The deploy's probe gets through with the server's own probe credential.
	res := deploy(t, "guarded.hcl", src, api.DeployBody{})
	url := res.Functions[0].URL

	mine, err := env.client.CreateToken(ctx, "visitor", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	other, err := env.client.CreateToken(ctx, "stranger", "elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	call := func(key, secret string) (int, map[string]string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if key != "" {
			req.Header.Set("Caravan-Key", key)
			req.Header.Set("Caravan-Secret", secret)
		}
		resp, err := env.https.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var headers map[string]string
		json.NewDecoder(resp.Body).Decode(&headers)
		return resp.StatusCode, headers
	}
	for name, kv := range map[string][2]string{
		"no token":           {"", ""},
		"wrong secret":       {mine.ID, "0000"},
		"unknown key":        {"ffffffffffffffff", mine.Secret},
		"another workspace":  {other.ID, other.Secret},
		"whole token as key": {mine.Token, ""},
	} {
		if status, _ := call(kv[0], kv[1]); status != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, status)
		}
	}
	status, headers := call(mine.ID, mine.Secret)
	if status != http.StatusOK {
		t.Fatalf("valid token: status %d, want 200", status)
	}
	for _, h := range []string{"caravan-key", "caravan-secret"} {
		if v, ok := headers[h]; ok {
			t.Errorf("the function saw %s: %q", h, v)
		}
	}
	if headers["x-forwarded-for"] != "127.0.0.1" || headers["x-real-ip"] != "127.0.0.1" {
		t.Errorf("client address: X-Forwarded-For %q, X-Real-Ip %q; want 127.0.0.1", headers["x-forwarded-for"], headers["x-real-ip"])
	}

	if err := env.client.RevokeToken(ctx, mine.ID); err != nil {
		t.Fatal(err)
	}
	if status, _ := call(mine.ID, mine.Secret); status != http.StatusUnauthorized {
		t.Errorf("revoked token: status %d, want 401", status)
	}
	list, err := env.client.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range list {
		if tok.ID == mine.ID {
			t.Error("a revoked token is still listed")
		}
	}
}
