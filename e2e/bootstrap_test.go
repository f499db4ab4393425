package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
)

// TestTokenBootstrap: an operator with Consul access and no caravan token
// makes a workspace's first API token with `caravan token bootstrap`; the
// server accepts it at once, for that workspace only, and Consul keeps
// only its hash.
func TestTokenBootstrap(t *testing.T) {
	cmd := exec.Command(caravanBinary(t), "token", "bootstrap", "--name", "first-of-boot", "--workspace", "boot",
		"--consul-addr", env.stack.ConsulAddr())
	cmd.Env = append(cmd.Environ(), "CARAVAN_TOKEN=", "CONSUL_HTTP_TOKEN=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("caravan token bootstrap: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`CARAVAN_TOKEN=(cvn_\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no token in its output:\n%s", out)
	}
	secret := string(m[1])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := &api.Client{Addr: env.client.Addr, Token: secret}
	toks, err := cl.Tokens(ctx)
	if err != nil {
		t.Fatalf("the bootstrapped token is refused: %v", err)
	}
	for _, tk := range toks {
		if tk.Workspace != "boot" {
			t.Errorf("a token of workspace boot lists %s's token %s", tk.Workspace, tk.Name)
		}
	}
	pairs, _, err := env.consul.KV().List("caravan/", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		if strings.Contains(string(p.Value), secret) || strings.Contains(string(p.Value), secret[strings.LastIndex(secret, "_")+1:]) {
			t.Errorf("Consul key %s holds the token's secret", p.Key)
		}
	}
}
