package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLocateBinary serves caravan-agent beside the executable when it is
// an executable file there, and the executable itself otherwise.
func TestLocateBinary(t *testing.T) {
	for _, tc := range []struct {
		name   string
		agent  func(t *testing.T, path string) // makes what is at path, if anything
		beside bool
	}{
		{name: "beside", agent: func(t *testing.T, p string) { write(t, p, 0o755) }, beside: true},
		{name: "missing", agent: func(*testing.T, string) {}},
		{name: "not executable", agent: func(t *testing.T, p string) { write(t, p, 0o644) }},
		{name: "a directory", agent: func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			exe := filepath.Join(dir, "caravan")
			write(t, exe, 0o755)
			tc.agent(t, filepath.Join(dir, BinaryName))
			want := exe
			if tc.beside {
				want = filepath.Join(dir, BinaryName)
			}
			got, beside := LocateBinary(exe)
			if got != want || beside != tc.beside {
				t.Errorf("LocateBinary(%q) = %q, %v; want %q, %v", exe, got, beside, want, tc.beside)
			}
		})
	}
}

// write makes an executable-looking file at path with mode perm.
func write(t *testing.T, path string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), perm); err != nil {
		t.Fatal(err)
	}
}
