package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/caravanhq/caravan/agent"
	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/autoscale"
	"github.com/caravanhq/caravan/autoscaler"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/queue"
	"github.com/caravanhq/caravan/router"
	nomad "github.com/hashicorp/nomad/api"
)

// NATSConfig says where warm calls queue: an external NATS (URL), or a
// NATS server embedded in caravan server (no URL).
type NATSConfig struct {
	// URL of an external NATS with JetStream ("nats://10.0.0.5:4222");
	// empty embeds one.
	URL string
	// Token or CredsFile authenticates caravan server to an external NATS;
	// CAFile, CertFile and KeyFile are its TLS settings.
	Token, CredsFile, CAFile, CertFile, KeyFile string
	// WorkerToken, when set, is what every worker presents to an external
	// NATS (the operator's credential for them, with the permissions the
	// operator gave it); unset, workers get credentials minted under Token
	// for their function (queue.Grant), which only a NATS that checks
	// them does: the embedded one (another caravan server's, too).
	WorkerToken string
	// Dir keeps the embedded server's files and its token (default
	// DefaultNATSDir()); Listen is its host:port (default: 127.0.0.1 on a
	// port chosen once and kept in Dir).
	Dir, Listen string
	// Replicas is how many servers of an external JetStream cluster keep
	// each stream and bucket (0: 1; queue.CheckReplicas).
	Replicas int
	// AckWait and MaxAttempts: each warm function's lease and retry limit
	// (zero: queue.DefaultAckWait, queue.DefaultMaxAttempts).
	AckWait     time.Duration
	MaxAttempts int
	// CredentialLifetime is how long a minted worker credential is valid
	// (zero: queue.DefaultCredentialLifetime); workers renew theirs at
	// half of it.
	CredentialLifetime time.Duration
}

// DefaultNATSDir is $XDG_DATA_HOME/caravan/nats (~/.local/share/...).
func DefaultNATSDir() string { return filepath.Join(filepath.Dir(DefaultBundleDir()), "nats") }

// NATSWorkers mints what a warm function's worker presents to NATS
// (GET agent.NATSPath).
type NATSWorkers struct {
	// URL is the NATS URL workers connect to.
	URL string
	// Key is the admin token credentials are minted under.
	Key string
	// Token, when set, is every worker's credential instead (an external
	// NATS's, --nats-worker-token); it does not expire.
	Token string
	// Lifetime is how long a minted credential is valid (zero:
	// queue.DefaultCredentialLifetime).
	Lifetime time.Duration
	// Now is the clock credentials are minted by (nil: time.Now).
	Now func() time.Time
}

// Credential is the NATS URL and credential of worker g.
func (n NATSWorkers) Credential(g queue.Grant) (agent.NATSAnswer, error) {
	if n.Token != "" {
		ans := agent.NATSAnswer{URL: n.URL, Token: n.Token}
		if n.Key != "" {
			ans.InputKey = queue.InputKey(n.Key, g.Func)
		}
		return ans, nil
	}
	if n.Key == "" {
		return agent.NATSAnswer{}, api.Errorf(api.CodeUnavailable, "this server has no NATS token to mint workers' credentials under: give it $CARAVAN_NATS_TOKEN or --nats-token-file, or --nats-worker-token")
	}
	now, lifetime := time.Now(), n.Lifetime
	if n.Now != nil {
		now = n.Now()
	}
	if lifetime <= 0 {
		lifetime = queue.DefaultCredentialLifetime
	}
	g.Exp = queue.Expiry(now, lifetime)
	cred, err := queue.Mint(n.Key, g)
	if err != nil {
		return agent.NATSAnswer{}, err
	}
	return agent.NATSAnswer{URL: n.URL, Token: cred, InboxPrefix: g.InboxPrefix(), InputKey: queue.InputKey(n.Key, g.Func),
		ExpiresIn: g.Expires().Sub(now).Seconds()}, nil
}

// startQueue connects to the queue cfg names, starting the embedded NATS
// first when there is no URL. It returns what workers need to reach it.
func startQueue(ctx context.Context, cfg NATSConfig) (*queue.Queue, *queue.Embedded, router.Worker, NATSWorkers, error) {
	w := router.Worker{AckWait: cfg.AckWait, MaxAttempts: cfg.MaxAttempts}
	replicas := max(cfg.Replicas, 1)
	if err := queue.CheckReplicas(replicas, cfg.URL != ""); err != nil {
		return nil, nil, w, NATSWorkers{}, err
	}
	qc := queue.Config{URL: cfg.URL, Token: cfg.Token, CredsFile: cfg.CredsFile, CAFile: cfg.CAFile,
		CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, Name: "caravan server", Replicas: replicas}
	var emb *queue.Embedded
	if cfg.URL == "" {
		dir := cfg.Dir
		if dir == "" {
			dir = DefaultNATSDir()
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, w, NATSWorkers{}, fmt.Errorf("NATS directory: %w", err)
		}
		token, err := keptSecret(filepath.Join(dir, "token"))
		if err != nil {
			return nil, nil, w, NATSWorkers{}, err
		}
		listen, err := keptListen(filepath.Join(dir, "listen"), cfg.Listen)
		if err != nil {
			return nil, nil, w, NATSWorkers{}, err
		}
		emb, err = queue.StartEmbedded(queue.EmbeddedConfig{Dir: filepath.Join(dir, "jetstream"), Listen: listen, Token: token})
		if err != nil {
			return nil, nil, w, NATSWorkers{}, err
		}
		qc.URL, qc.Token = emb.URL(), token
	}
	nw := NATSWorkers{URL: qc.URL, Key: qc.Token, Token: cfg.WorkerToken, Lifetime: cfg.CredentialLifetime}
	q, err := queue.Connect(ctx, qc)
	if err != nil {
		if emb != nil {
			emb.Shutdown()
		}
		return nil, nil, w, NATSWorkers{}, err
	}
	return q, emb, w, nw, nil
}

// keptSecret reads the secret in path, making one the first time.
func keptSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	s := hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the NATS token: %w", err)
	}
	return s, nil
}

// keptListen is the embedded NATS's address: listen when given, else the
// one kept in path, else 127.0.0.1 on a free port, kept there so that a
// restarted server listens where its workers look.
func keptListen(path, listen string) (string, error) {
	if listen != "" {
		return listen, nil
	}
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := os.WriteFile(path, []byte(addr+"\n"), 0o600); err != nil {
		return "", err
	}
	return addr, nil
}

// workerQueues is the autoscaler's view of warm callables: their workers'
// jobs in Nomad (whose meta says how they scale) and their queues' depth.
type workerQueues struct {
	nomad *nomad.Client
	queue *queue.Queue
}

var _ autoscaler.Queues = workerQueues{}

// Functions lists the workers' jobs whose count can change
// (max_containers above min_containers); Service is the job's ID.
func (w workerQueues) Functions(ctx context.Context) ([]autoscaler.Function, error) {
	// Every namespace the token may read ("*"); a workspace's jobs are the
	// ones in its own (jobs.NamespaceOfJob).
	stubs, _, err := w.nomad.Jobs().ListOptions(&nomad.JobListOptions{Fields: &nomad.JobListFields{Meta: true}}, (&nomad.QueryOptions{Namespace: "*"}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("nomad: the workers' jobs: %w", err)
	}
	var out []autoscaler.Function
	for _, s := range stubs {
		if s.Stop || s.ParentID != "" || s.Meta[jobs.MetaWorkers] != "true" || s.Namespace != jobs.NamespaceOfJob(s.ID) {
			continue
		}
		if fn, ok := workerFunction(s.ID, s.Meta); ok {
			out = append(out, fn)
		}
	}
	return out, nil
}

// workerFunction reads how the workers' job id scales from its meta.
func workerFunction(id string, meta map[string]string) (autoscaler.Function, bool) {
	lo, err1 := strconv.Atoi(meta[jobs.MetaMinWorkers])
	hi, err2 := strconv.Atoi(meta[jobs.MetaMaxWorkers])
	per, err3 := strconv.Atoi(meta[jobs.MetaWorkerInputs])
	window, err4 := time.ParseDuration(meta[jobs.MetaScaledownWindow])
	fn := meta[jobs.MetaFunction]
	if errors.Join(err1, err2, err3, err4) != nil || fn == "" || hi <= lo || !strings.HasSuffix(id, jobs.CallSeparator+fn) {
		return autoscaler.Function{}, false
	}
	return autoscaler.Function{Service: id, Job: id, Group: fn,
		Config: autoscale.Config{MinContainers: lo, MaxContainers: hi, TargetInputs: per, ScaledownWindow: window}}, true
}

// Depth is how many inputs of the workers' function wait or run.
func (w workerQueues) Depth(ctx context.Context, fn autoscaler.Function) (int, error) {
	appJob := strings.TrimSuffix(fn.Job, jobs.CallSeparator+fn.Group)
	// The stream's name needs no workspace: Depth reads it by name.
	return w.queue.Depth(ctx, queue.Func{AppJobID: appJob, Name: fn.Group})
}
