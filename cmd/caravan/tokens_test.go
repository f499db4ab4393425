package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// TestKeyCreate: `caravan key create` and `token create --endpoint` ask for
// an endpoint key and print headers, no CARAVAN_TOKEN; `token create`
// asks for an API token and prints no headers.
func TestKeyCreate(t *testing.T) {
	var got []api.TokenBody
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b api.TokenBody
		json.NewDecoder(r.Body).Decode(&b)
		got = append(got, b)
		nt := api.NewToken{TokenInfo: api.TokenInfo{ID: "abcd", Name: b.Name, Workspace: "shop", Kind: b.Kind}, Secret: "s3"}
		if b.Kind == api.TokenAPI {
			nt.Token = "cvn_abcd_s3"
		}
		json.NewEncoder(w).Encode(nt)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		args      []string
		kind      api.TokenKind
		want, not string
	}{
		{[]string{"key", "create", "--name", "frontend"}, api.TokenEndpoint, "Caravan-Key: abcd", "CARAVAN_TOKEN"},
		{[]string{"token", "create", "--endpoint", "--name", "frontend"}, api.TokenEndpoint, "Caravan-Secret: s3", "CARAVAN_TOKEN"},
		{[]string{"token", "create", "--name", "ci"}, api.TokenAPI, "CARAVAN_TOKEN=cvn_abcd_s3", "Caravan-Key"},
	} {
		got = nil
		out, errOut, err := runCLI(t, append([]string{"--addr", srv.URL, "--token", "cvn_x"}, tc.args...)...)
		if err != nil || len(got) != 1 || got[0].Kind != tc.kind || !strings.Contains(out, tc.want) || strings.Contains(out, tc.not) {
			t.Errorf("%v: sent %+v; %v\n%s%s", tc.args, got, err, out, errOut)
		}
	}
}

// TestTokenListAll: --all asks for the revoked tokens too and shows who
// revoked them, by name and ID.
func TestTokenListAll(t *testing.T) {
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		json.NewEncoder(w).Encode([]api.TokenInfo{
			{ID: "aaaa", Name: "ci", Kind: api.TokenAPI, Workspace: "shop"},
			{ID: "bbbb", Name: "ci", Kind: api.TokenEndpoint, Workspace: "shop", RevokedAt: time.Now(), RevokedBy: "ana", RevokedByID: "cccc"},
		})
	}))
	defer srv.Close()
	out, _, err := runCLI(t, "--addr", srv.URL, "--token", "cvn_x", "token", "list", "--all")
	if err != nil || len(queries) != 1 || queries[0] != "all=true" || !strings.Contains(out, "by ana (cccc)") {
		t.Errorf("token list --all: %v %v\n%s", queries, err, out)
	}
	out, _, err = runCLI(t, "--addr", srv.URL, "--token", "cvn_x", "key", "list")
	if err != nil || queries[1] != "" || strings.Contains(out, "aaaa") || !strings.Contains(out, "bbbb") {
		t.Errorf("key list: %v %v\n%s", queries, err, out)
	}
}
