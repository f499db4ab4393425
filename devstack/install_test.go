package devstack

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/proxy/intraefik"
)

// TestCopyTraefikMain copies the pinned Traefik's main beside caravan.go
// with its one change, and the source hash leaves the copies out.
func TestCopyTraefikMain(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"go.mod", "go.sum", "caravan.go"} {
		b, err := os.ReadFile(filepath.Join("..", "tools", "traefik-caravan", f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "go.mod" {
			b = []byte(strings.ReplaceAll(string(b), "=> ../..", "=> "+filepath.Join(mustAbs(t, ".."))))
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tool := TraefikCaravan
	tool.Dir = filepath.Base(dir)
	tool.Links = nil // caravan's packages are not above this directory
	before, err := tool.withSourceHash(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := copyTraefikMain(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	main, err := os.ReadFile(filepath.Join(dir, "traefik.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(main), caravanPluginCall) || strings.Contains(string(main), traefikPluginCall) {
		t.Errorf("traefik.go does not wrap its plugin builder with caravanPlugins")
	}
	for _, f := range traefikMainFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s not copied: %v", f, err)
		}
	}
	after, err := tool.withSourceHash(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if before.Version != after.Version {
		t.Errorf("version %s before the copy, %s after: the copies are in the hash", before.Version, after.Version)
	}
}

// TestSourceHashCoversLinkedPackages: caravan's Traefik build is
// versioned by the caravan packages it links, not only by its wrapper.
func TestSourceHashCoversLinkedPackages(t *testing.T) {
	tools := mustAbs(t, filepath.Join("..", "tools"))
	with, err := TraefikCaravan.withSourceHash(tools)
	if err != nil {
		t.Fatal(err)
	}
	without := TraefikCaravan
	without.Links = nil
	if without, err = without.withSourceHash(tools); err != nil {
		t.Fatal(err)
	}
	if with.Version == without.Version || !strings.HasPrefix(with.Version, Traefik.Version+"-") {
		t.Errorf("versions %s (linked packages hashed) and %s (not): want both %s-<hash>, different", with.Version, without.Version, Traefik.Version)
	}
}

// TestTraefikCaravanPinsTraefik: caravan's Traefik build is of the
// Traefik version the stack names.
func TestTraefikCaravanPinsTraefik(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "tools", "traefik-caravan", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if want := traefikModule + " v" + Traefik.Version; !strings.Contains(string(b), want) {
		t.Errorf("tools/traefik-caravan/go.mod does not require %s", want)
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestTraefikProxyEnvNamesTheProxysSettings: the stack configures the
// proxy inside Traefik by intraefik's own variable names (devstack does
// not link the proxy, so it spells them).
func TestTraefikProxyEnvNamesTheProxysSettings(t *testing.T) {
	s := &Stack{Ports: Ports{TraefikProxyAdmin: 7484, ConsulHTTP: 8500}}
	env := strings.Join(s.traefikProxyEnv(Options{Caravan: "caravan", Domain: "caravan.localhost"}), " ")
	for _, want := range []string{intraefik.EnvAdminListen + "=127.0.0.1:7484", intraefik.EnvDomain + "=caravan.localhost", "CONSUL_HTTP_ADDR="} {
		if !strings.Contains(env, want) {
			t.Errorf("Traefik's environment %q lacks %s", env, want)
		}
	}
	if env := s.traefikProxyEnv(Options{}); len(env) != 0 {
		t.Errorf("a stack without caravan's proxies configures one inside Traefik: %v", env)
	}
}
