// Package agent delivers the caravan binary into Nomad tasks, so that a
// task can run caravan beside (or around) the user's process: the drain
// supervisor of proxied web functions (`caravan task`, supervise.go), and
// whatever else needs caravan inside a container.
//
// Delivery is an artifact block (Artifact) that fetches the binary from
// caravan server (Path), as a one-file tar so the executable bit
// survives go-getter. Like a code bundle's, the URL names the job it was
// signed for and the fetching allocation (${NOMAD_ALLOC_ID}); Sign adds
// the signature after rendering (the key is in no hash or golden file),
// and the server serves the binary only to a live allocation of that job
// whose group fetches it (orchestrator.OpenAgent).
//
// Rendering (Artifact, Use) is pure; Sign is pure given the key; WriteTar
// is the server's side of the fetch.
package agent

import (
	"archive/tar"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/url"
	"strings"

	"github.com/hashicorp/nomad/api"
)

// Path is where caravan server serves the binary, to Nomad's clients.
const Path = "/v1/agent/caravan.tar"

// DrainPath is where a task's supervisor asks caravan server to drain its
// allocation at every proxy (see Supervisor).
const DrainPath = "/v1/agent/drain"

// NATSPath is where a warm function's worker asks caravan server for its
// NATS URL and credential (NATSAnswer): minted for its function and
// allocation at the worker's start, never written into the job.
const NATSPath = "/v1/agent/nats"

// EnvNATSURL is the worker task's environment variable holding its
// (signed) NATSPath URL.
const EnvNATSURL = "CARAVAN_AGENT_NATS_URL"

// NATSAnswer is the answer of GET NATSPath: how the worker reaches NATS.
type NATSAnswer struct {
	URL   string `json:"url"`
	Token string `json:"token"`
	// InboxPrefix is the connection's inbox prefix, when its credential
	// allows replies on that prefix only.
	InboxPrefix string `json:"inbox_prefix,omitempty"`
	// InputKey checks the function's inputs' signatures (queue.InputKey).
	InputKey string `json:"input_key,omitempty"`
	// ExpiresIn is how many seconds from the answer the credential is
	// valid (absent: it does not expire). The worker fetches a fresh one
	// from the same URL before then, and reconnects with it.
	ExpiresIn float64 `json:"expires_in,omitempty"`
}

// signedEnv are the task environment variables holding agent URLs.
var signedEnv = []string{EnvDrainURL, EnvNATSURL}

// Dir is where the artifact unpacks (NOMAD_TASK_DIR: local/, /local
// inside exec's chroot), and Binary the executable there.
const (
	Dir    = "${NOMAD_TASK_DIR}/caravan-agent"
	Binary = Dir + "/caravan"
	// FileName is the binary's name inside the tar stream.
	FileName = "caravan"
)

// AllocPlaceholder is the query parameter Nomad fills with the fetching
// allocation's ID.
const AllocPlaceholder = "${NOMAD_ALLOC_ID}"

// EnvDrainURL is the task environment variable holding the (signed)
// drain URL of the allocation, for the supervisor; the supervisor does
// not pass it on to the user's process.
const EnvDrainURL = "CARAVAN_AGENT_DRAIN_URL"

// Artifact fetches the caravan binary, for the allocations of job jobID,
// from caravan server at base (router.Config.BundleURL) into Dir. The
// URL is not signed yet (Sign).
func Artifact(base, jobID string) *api.TaskArtifact {
	src := strings.TrimSuffix(base, "/") + Path + "?" + url.Values{"job": {jobID}}.Encode() + "&alloc=" + AllocPlaceholder
	dest := "local/caravan-agent"
	return &api.TaskArtifact{
		GetterSource:  &src,
		GetterOptions: map[string]string{"archive": "tar"},
		RelativeDest:  &dest,
	}
}

// DrainURL is the drain URL of the allocations of job jobID, unsigned.
func DrainURL(base, jobID string) string { return agentURL(base, DrainPath, jobID) }

// NATSURL is the NATS credential URL of the allocations of job jobID,
// unsigned.
func NATSURL(base, jobID string) string { return agentURL(base, NATSPath, jobID) }

func agentURL(base, path, jobID string) string {
	return strings.TrimSuffix(base, "/") + path + "?" + url.Values{"job": {jobID}}.Encode() + "&alloc=" + AllocPlaceholder
}

// Signature signs the agent URLs of job's allocations: an HMAC-SHA256
// under the cluster's key (the bundle key), apart from bundle signatures
// by its prefix.
func Signature(key []byte, job string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("caravan agent\n" + job))
	return hex.EncodeToString(m.Sum(nil))
}

// Sign adds its signature to every agent artifact URL and drain URL of
// js. The signature depends only on the job and the key: the same version
// signs the same, and Nomad sees no change.
func Sign(key []byte, js ...*api.Job) {
	for _, j := range js {
		for _, tg := range j.TaskGroups {
			for _, t := range tg.Tasks {
				for _, a := range t.Artifacts {
					if job, ok := JobOf(a); ok && !strings.Contains(*a.GetterSource, "&sig=") {
						*a.GetterSource += "&sig=" + Signature(key, job)
					}
				}
				for _, k := range signedEnv {
					if v, ok := t.Env[k]; ok && !strings.Contains(v, "&sig=") {
						if u, err := url.Parse(v); err == nil {
							t.Env[k] = v + "&sig=" + Signature(key, u.Query().Get("job"))
						}
					}
				}
			}
		}
	}
}

// JobOf reads the job of an agent artifact; ok is false for any other
// artifact.
func JobOf(a *api.TaskArtifact) (job string, ok bool) {
	if a == nil || a.GetterSource == nil {
		return "", false
	}
	u, err := url.Parse(*a.GetterSource)
	if err != nil || u.Path != Path {
		return "", false
	}
	return u.Query().Get("job"), true
}

// Fetches reports whether task group tg fetches the agent for job, or
// asks for its NATS credential (a worker that runs a caravan binary
// already on the client: --agent-command).
func Fetches(tg *api.TaskGroup, job string) bool {
	if tg == nil {
		return false
	}
	for _, t := range tg.Tasks {
		for _, a := range t.Artifacts {
			if j, ok := JobOf(a); ok && j == job {
				return true
			}
		}
		if u, err := url.Parse(t.Env[EnvNATSURL]); err == nil && u.Path == NATSPath && u.Query().Get("job") == job {
			return true
		}
	}
	return false
}

// Uses reports whether task group tg uses the agent URLs of job: it
// fetches the agent, or a task has the drain URL (a task that runs a
// caravan installed on the client fetches nothing).
func Uses(tg *api.TaskGroup, job string) bool {
	if Fetches(tg, job) {
		return true
	}
	if tg == nil {
		return false
	}
	for _, t := range tg.Tasks {
		if v, ok := t.Env[EnvDrainURL]; ok {
			if u, err := url.Parse(v); err == nil && u.Query().Get("job") == job {
				return true
			}
		}
	}
	return false
}

// WriteTar writes the binary at path as a tar stream of one executable
// file, FileName: an ELF executable without what only debuggers read
// (strip.go), ServedSize bytes.
func WriteTar(w io.Writer, path string) error {
	f, img, err := openImage(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: FileName, Mode: 0o755, Size: img.size, ModTime: st.ModTime(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(img.header); err != nil {
		return err
	}
	if _, err := io.Copy(tw, io.NewSectionReader(f, int64(len(img.header)), img.size-int64(len(img.header)))); err != nil {
		return err
	}
	return tw.Close()
}

// TarSize is the length of WriteTar's stream for a file of size bytes:
// a 512-byte header, the content padded to 512, two zero blocks.
func TarSize(size int64) int64 {
	return 512 + (size+511)/512*512 + 1024
}
