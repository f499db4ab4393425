package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/api"
)

// TestProxyAuth: a requires_proxy_auth endpoint answers 401 without a
// valid endpoint key of its workspace (an API token, split into the
// headers, is not one) and 200 with one; the function never sees the
// credentials, and sees the client's address. A function without proxy
// auth never sees them either.
func TestProxyAuth(t *testing.T) {
	purge(t, "e2e--guarded")
	ctx := context.Background()
	js := `require("http").createServer((q, s) => s.end(JSON.stringify(q.headers))).listen(process.env.PORT, process.env.HOST);`
	src := fmt.Sprintf("app \"guarded\" {\n  workspace = \"e2e\"\n  function \"web\" {\n    command = \"node\"\n    args = [\"-e\", %[1]s]\n    web {\n      requires_proxy_auth = true\n    }\n  }\n"+
		"  function \"open\" {\n    command = \"node\"\n    args = [\"-e\", %[1]s]\n    web {}\n  }\n}\n", strconv.Quote(js))
	// The deploy's probe gets through with the server's own probe credential.
	res := deploy(t, "guarded.hcl", src, api.DeployBody{})
	urls := map[string]string{}
	for _, f := range res.Functions {
		urls[f.Name] = f.URL
	}

	mine, err := env.client.CreateEndpointKey(ctx, "visitor", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	other, err := env.client.CreateEndpointKey(ctx, "stranger", "elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	apiToken, err := env.client.CreateToken(ctx, "ci", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	// The suite's own token, of every workspace, split the same way.
	allID, allSecret, _ := strings.Cut(strings.TrimPrefix(env.client.Token, "cvn_"), "_")
	callFn := func(fn, key, secret string) (int, map[string]string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, urls[fn], nil)
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
	call := func(key, secret string) (int, map[string]string) { return callFn("web", key, secret) }
	for name, kv := range map[string][2]string{
		"no token":             {"", ""},
		"wrong secret":         {mine.ID, "0000"},
		"unknown key":          {"ffffffffffffffff", mine.Secret},
		"another workspace":    {other.ID, other.Secret},
		"API token split":      {apiToken.ID, apiToken.Secret},
		"whole API token":      {apiToken.Token, ""},
		"API token of all (*)": {allID, allSecret},
	} {
		if status, _ := call(kv[0], kv[1]); status != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, status)
		}
	}
	status, headers := call(mine.ID, mine.Secret)
	if status != http.StatusOK {
		t.Fatalf("valid endpoint key: status %d, want 200", status)
	}
	for _, h := range []string{"caravan-key", "caravan-secret"} {
		if v, ok := headers[h]; ok {
			t.Errorf("the function saw %s: %q", h, v)
		}
	}
	if headers["x-forwarded-for"] != "127.0.0.1" || headers["x-real-ip"] != "127.0.0.1" {
		t.Errorf("client address: X-Forwarded-For %q, X-Real-Ip %q; want 127.0.0.1", headers["x-forwarded-for"], headers["x-real-ip"])
	}

	// Without proxy auth the headers are stripped all the same: a caller
	// who sends its key to the wrong function does not hand it over.
	status, headers = callFn("open", mine.ID, mine.Secret)
	if status != http.StatusOK {
		t.Fatalf("function without proxy auth: status %d, want 200", status)
	}
	for _, h := range []string{"caravan-key", "caravan-secret"} {
		if v, ok := headers[h]; ok {
			t.Errorf("the function without proxy auth saw %s: %q", h, v)
		}
	}

	if err := env.client.RevokeToken(ctx, mine.ID); err != nil {
		t.Fatal(err)
	}
	if status, _ := call(mine.ID, mine.Secret); status != http.StatusUnauthorized {
		t.Errorf("revoked endpoint key: status %d, want 401", status)
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
	// Its record stays, marked revoked, so the ID history holds still
	// names someone.
	all, err := env.client.AllTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(all, func(tok api.TokenInfo) bool { return tok.ID == mine.ID }); i < 0 || all[i].RevokedAt.IsZero() || all[i].RevokedBy != "e2e" {
		t.Errorf("the revoked key's tombstone: %+v", all)
	}
}
