package router_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/caravanhq/caravan/router"
)

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"hello", "hello"},
		{"Hello", "hello"},
		{"hello-world", "hello-world"},
		{"Hello World", "hello-world"},
		{"my_app.v2", "my-app-v2"},
		{"--edge--", "edge"},
		{"_x_", "x"},
		{"", ""},
		{"---", ""},
		{"ABC123", "abc123"},
	}
	for _, tt := range tests {
		if got := router.Normalize(tt.in); got != tt.want {
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHostLabel(t *testing.T) {
	tests := []struct {
		name                       string
		workspace, environment, fn string
		want                       string
	}{
		{"default environment", "dev", "", "hello-web", "dev--hello-web"},
		{"with environment", "shop", "staging", "store-frontend", "shop-staging--store-frontend"},
		{"with label", "shop", "staging", "api", "shop-staging--api"},
		{"normalized parts", "Dev", "QA", "Hello_Web", "dev-qa--hello-web"},
		{"empty environment after normalizing", "dev", "--", "web", "dev--web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := router.HostLabel(tt.workspace, tt.environment, tt.fn); got != tt.want {
				t.Errorf("HostLabel(%q, %q, %q) = %q, want %q", tt.workspace, tt.environment, tt.fn, got, tt.want)
			}
		})
	}
}

var (
	dnsLabelRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	hashTailRE  = regexp.MustCompile(`-[0-9a-f]{8}$`)
	sixtyPrefix = strings.Repeat("abcdefghij", 6)
)

func TestHostLabelAtLimit(t *testing.T) {
	// "dev--" is 5 characters, so a 58-character name fills the label.
	name := strings.Repeat("a", 58)
	if got := router.HostLabel("dev", "", name); got != "dev--"+name {
		t.Errorf("a 63-character label was changed: %q", got)
	}
	long := router.HostLabel("dev", "", name+"b")
	if len(long) > router.MaxLabel || !hashTailRE.MatchString(long) {
		t.Errorf("a 64-character label was not cut: %q", long)
	}
}

func TestHostLabelTruncation(t *testing.T) {
	tests := []struct {
		name                       string
		workspace, environment, fn string
	}{
		{"long name", "dev", "", strings.Repeat("a", 70)},
		{"long workspace and environment", strings.Repeat("w", 63), strings.Repeat("e", 63), "app-web"},
		// The cut falls right after a hyphen, which must not be kept.
		{"cut at a hyphen", "dev", "", strings.Repeat("a", 48) + "-" + strings.Repeat("b", 20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := router.HostLabel(tt.workspace, tt.environment, tt.fn)
			if len(got) > router.MaxLabel {
				t.Errorf("len(%q) = %d, want <= %d", got, len(got), router.MaxLabel)
			}
			if !hashTailRE.MatchString(got) {
				t.Errorf("%q does not end in - and 8 hex digits", got)
			}
			if !dnsLabelRE.MatchString(got) {
				t.Errorf("%q is not a DNS label", got)
			}
			if strings.Contains(got[len(got)-10:], "--") {
				t.Errorf("%q has a double hyphen before its hash", got)
			}
			if again := router.HostLabel(tt.workspace, tt.environment, tt.fn); again != got {
				t.Errorf("HostLabel is not stable: %q, then %q", got, again)
			}
		})
	}
}

func TestHostLabelLongNamesDoNotCollide(t *testing.T) {
	a := router.HostLabel("dev", "", sixtyPrefix+"-one")
	b := router.HostLabel("dev", "", sixtyPrefix+"-two")
	if a == b {
		t.Fatalf("two long names share the label %q", a)
	}
	for _, l := range []string{a, b} {
		if len(l) > router.MaxLabel || !hashTailRE.MatchString(l) {
			t.Errorf("%q is not a cut label", l)
		}
	}
	// Both keep the same readable prefix; only the hash tells them apart.
	if a[:len(a)-8] != b[:len(b)-8] {
		t.Errorf("prefixes differ: %q, %q", a, b)
	}
}
