package agent

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"
)

func TestArtifactSignedOnce(t *testing.T) {
	a := Artifact("http://127.0.0.1:7474/", "acme--shop")
	want := "http://127.0.0.1:7474/v1/agent/caravan.tar?job=acme--shop&alloc=${NOMAD_ALLOC_ID}"
	if *a.GetterSource != want {
		t.Fatalf("source = %s, want %s", *a.GetterSource, want)
	}
	if job, ok := JobOf(a); !ok || job != "acme--shop" {
		t.Fatalf("JobOf = %q, %v", job, ok)
	}
	other := "http://127.0.0.1:7474/v1/bundles/x.tar?job=acme--shop"
	tk := &api.Task{Artifacts: []*api.TaskArtifact{a, {GetterSource: &other}},
		Env: map[string]string{EnvDrainURL: DrainURL("http://127.0.0.1:7474", "acme--shop")}}
	job := &api.Job{TaskGroups: []*api.TaskGroup{{Tasks: []*api.Task{tk}}}}
	key := []byte("k")
	Sign(key, job)
	Sign(key, job) // idempotent
	sig := "&sig=" + Signature(key, "acme--shop")
	if got := *tk.Artifacts[0].GetterSource; got != want+sig {
		t.Errorf("signed source = %s", got)
	}
	if got := *tk.Artifacts[1].GetterSource; got != other {
		t.Errorf("a bundle artifact was touched: %s", got)
	}
	if got, want := tk.Env[EnvDrainURL], "http://127.0.0.1:7474/v1/agent/drain?job=acme--shop&alloc=${NOMAD_ALLOC_ID}"+sig; got != want {
		t.Errorf("drain URL = %s, want %s", got, want)
	}
	if !Fetches(job.TaskGroups[0], "acme--shop") || Fetches(job.TaskGroups[0], "other") {
		t.Error("Fetches is wrong")
	}
	installed := &api.TaskGroup{Tasks: []*api.Task{{Env: map[string]string{EnvDrainURL: DrainURL("http://s", "acme--shop")}}}}
	if Fetches(installed, "acme--shop") || !Uses(installed, "acme--shop") || Uses(installed, "other") || Uses(&api.TaskGroup{}, "acme--shop") {
		t.Error("Uses is wrong")
	}
	if Signature(key, "a") == Signature(key, "b") || Signature(key, "a") == Signature([]byte("other"), "a") {
		t.Error("signatures do not depend on job and key")
	}
}

func TestWriteTar(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bin")
	content := strings.Repeat("x", 1000)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteTar(&buf, path); err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != TarSize(1000) {
		t.Errorf("stream is %d bytes, TarSize says %d", buf.Len(), TarSize(1000))
	}
	tr := tar.NewReader(&buf)
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != FileName || h.Mode&0o111 == 0 {
		t.Errorf("header %s mode %o, want %s executable", h.Name, h.Mode, FileName)
	}
	b, _ := io.ReadAll(tr)
	if string(b) != content {
		t.Error("content differs")
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("more than one file: %v", err)
	}
}

// TestNATSURLSigned: a worker's NATS credential URL in its env is signed
// like the drain URL, and counts as using the agent (an --agent-command
// worker fetches no artifact).
func TestNATSURLSigned(t *testing.T) {
	id, name := "dev--calc--call--sum", "sum"
	tg := &api.TaskGroup{Name: &name, Tasks: []*api.Task{{Env: map[string]string{EnvNATSURL: NATSURL("http://s:1/", id)}}}}
	j := &api.Job{ID: &id, TaskGroups: []*api.TaskGroup{tg}}
	Sign([]byte("k"), j)
	want := "http://s:1" + NATSPath + "?job=" + id + "&alloc=" + AllocPlaceholder + "&sig=" + Signature([]byte("k"), id)
	if got := tg.Tasks[0].Env[EnvNATSURL]; got != want {
		t.Errorf("signed %q, want %q", got, want)
	}
	if !Fetches(tg, id) || Fetches(tg, "dev--other") {
		t.Error("Fetches by the NATS URL")
	}
}
