package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServerRefusesABadPolicyFile: caravan server does not start on a
// policy file with mistakes; it prints each with its file and line.
func TestServerRefusesABadPolicyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.hcl")
	src := `workspace "dev" {
  drivers = ["raw_exec", "qemu"]
}

workspace "*" {
  max_memory = -1
}
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	// --listen on a port nobody may take: were the policy ignored, the
	// server would fail there instead, with another message.
	_, errOut, err := runCLI(t, "server", "--policy", path, "--listen", "256.0.0.1:1")
	if err == nil {
		t.Fatal("caravan server started with a bad policy file")
	}
	for _, want := range []string{
		"Unknown driver", path + " line 2", `drivers = ["raw_exec", "qemu"]`,
		"Negative limit", path + " line 6", "max_memory = -1",
		"the policy file has errors",
	} {
		if !strings.Contains(errOut+err.Error(), want) {
			t.Errorf("output lacks %q:\n%s\n%v", want, errOut, err)
		}
	}

	_, _, err = runCLI(t, "server", "--policy", filepath.Join(t.TempDir(), "missing.hcl"), "--listen", "256.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "--policy") {
		t.Errorf("a missing policy file: %v", err)
	}
}

// caravan server and caravan proxy refuse a token file they cannot read,
// naming the flag's file, before they serve anything.
func TestClientFlagsRefuseAMissingTokenFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-token")
	for _, args := range [][]string{
		{"server", "--listen", "127.0.0.1:0", "--nomad-token-file", missing},
		{"server", "--listen", "127.0.0.1:0", "--consul-token-file", missing},
		{"proxy", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--consul-token-file", missing},
	} {
		_, errOut, err := runCLI(t, args...)
		if err == nil || !strings.Contains(errOut+err.Error(), "reading the token file "+missing) {
			t.Errorf("caravan %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
	}
}

// caravan server refuses --nats-token TOKEN, the old form that put the
// secret in the process list, saying where the token goes now.
func TestServerRefusesNATSTokenFlag(t *testing.T) {
	_, errOut, err := runCLI(t, "server", "--listen", "127.0.0.1:0", "--nats-token", "s3cret")
	if err == nil || !strings.Contains(errOut+err.Error(), "--nats-token TOKEN is gone") || !strings.Contains(errOut+err.Error(), "CARAVAN_NATS_TOKEN") || !strings.Contains(errOut+err.Error(), "--nats-token-file") {
		t.Fatalf("caravan server --nats-token: %v\n%s", err, errOut)
	}
	if strings.Contains(errOut+err.Error(), "s3cret") {
		t.Error("the refusal prints the token")
	}
}

// caravan server refuses a worker credential lifetime out of 2s to 24h.
func TestServerRefusesABadCredentialLifetime(t *testing.T) {
	for _, d := range []string{"1s", "0s", "48h"} {
		_, errOut, err := runCLI(t, "server", "--listen", "127.0.0.1:0", "--nats-credential-lifetime", d)
		if err == nil || !strings.Contains(errOut+err.Error(), "give 2s to 24h") {
			t.Errorf("--nats-credential-lifetime %s: %v\n%s", d, err, errOut)
		}
	}
}

// caravan server refuses --nats-replicas outside 1 to 5, and above 1
// without --nats-url (the embedded NATS is one server), before it
// connects to anything.
func TestServerNATSReplicasFlag(t *testing.T) {
	for _, args := range [][]string{
		{"--nats-replicas", "3"},
		{"--nats-replicas", "0", "--nats-url", "nats://127.0.0.1:1"},
		{"--nats-replicas", "6", "--nats-url", "nats://127.0.0.1:1"},
	} {
		_, errOut, err := runCLI(t, append([]string{"server", "--listen", "127.0.0.1:0"}, args...)...)
		if err == nil || !strings.Contains(errOut+err.Error(), "--nats-replicas") {
			t.Errorf("caravan server %v: %v\n%s; want a refusal naming --nats-replicas", args, err, errOut)
		}
	}
}
