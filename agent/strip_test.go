package agent

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestWriteTarStripsELF serves this test binary (an ELF executable on
// Linux; `go test` links it without DWARF already, so little is cut),
// unpacks it and runs the copy: it is smaller, names no section headers,
// and runs (a test of it passes).
func TestWriteTarStripsELF(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the test binary is ELF on Linux")
	}
	if os.Getenv("CARAVAN_STRIPPED_COPY") != "" {
		return // the copy, run by the test below
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(self)
	if err != nil {
		t.Fatal(err)
	}
	size, err := ServedSize(self)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteTar(&buf, self); err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != TarSize(size) {
		t.Fatalf("stream is %d bytes, TarSize(ServedSize) says %d", buf.Len(), TarSize(size))
	}
	tr := tar.NewReader(&buf)
	h, err := tr.Next()
	if err != nil || h.Size != size {
		t.Fatalf("tar: %v, %v", h, err)
	}
	copyPath := filepath.Join(t.TempDir(), FileName)
	b, _ := io.ReadAll(tr)
	if err := os.WriteFile(copyPath, b, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("served %d of %d bytes", size, st.Size())
	if size >= st.Size() {
		t.Fatalf("served all %d bytes: nothing stripped", size)
	}
	ef, err := elf.Open(copyPath)
	if err != nil {
		t.Fatalf("the copy is no ELF file: %v", err)
	}
	if len(ef.Sections) != 0 || len(ef.Progs) == 0 {
		t.Errorf("the copy has %d sections and %d program headers, want none and some", len(ef.Sections), len(ef.Progs))
	}
	ef.Close()
	cmd := exec.Command(copyPath, "-test.run=^TestWriteTarStripsELF$", "-test.v")
	cmd.Env = append(os.Environ(), "CARAVAN_STRIPPED_COPY=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") {
		t.Fatalf("the stripped copy does not run: %v\n%s", err, out)
	}
}

// TestLoadedImageNotELF: any other file is served whole.
func TestLoadedImageNotELF(t *testing.T) {
	img, err := loadedImage(strings.NewReader("#!/bin/sh\necho hi\n"), 18)
	if err != nil || img.header != nil || img.size != 18 {
		t.Errorf("got %+v, %v; want the whole file", img, err)
	}
}
