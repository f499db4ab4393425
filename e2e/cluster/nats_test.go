package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/caravanhq/caravan/devstack"
	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/queue"
	"github.com/caravanhq/caravan/router"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsModule is the module nats-server is built from, at the version
// go.mod pins.
const natsModule = "github.com/nats-io/nats-server/v2"

// natsServerBinary is the pinned nats-server, built once into the cache
// (`just nats-server` does the same) and kept there by version. The
// second result says why there is none.
func natsServerBinary() (string, string) {
	root := filepath.Join("..", "..")
	list := exec.Command("go", "list", "-m", "-f", "{{.Version}}", natsModule)
	list.Dir = root
	out, err := list.Output()
	version := strings.TrimSpace(string(out))
	if err != nil || version == "" {
		return "", fmt.Sprintf("go list -m %s: %v", natsModule, err)
	}
	path := filepath.Join(devstack.CacheDir(), "bin", "nats-server-"+version)
	if _, err := os.Stat(path); err == nil {
		return path, ""
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err.Error()
	}
	// The packages are in the build cache already (the embedded NATS):
	// this links the command, seconds.
	cmd := exec.Command("go", "build", "-o", path+".tmp", natsModule)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Sprintf("building %s@%s: %v\n%s", natsModule, version, err, out)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return "", err.Error()
	}
	return path, ""
}

// natsNode is one node of nats.nomad.hcl as its nodes variable lists it.
type natsNode struct {
	Host                           string
	Port, ClusterPort, MonitorPort int
}

// natsNodes are three nodes on the stack's clients' addresses, each on
// free ports of its own (the clients share a host).
func natsNodes(t *testing.T) []natsNode {
	t.Helper()
	var hosts []string
	for _, id := range env.nodes {
		n, _, err := env.nomad.Nodes().Info(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, n.Attributes["unique.network.ip-address"])
	}
	// Free ports, none twice: the kernel may hand out a port it just
	// freed again, and nodes on one host would then share a static port.
	taken := map[int]bool{}
	port := func() int {
		for {
			_, p, _ := strings.Cut(freeAddr(), ":")
			n, _ := strconv.Atoi(p)
			if !taken[n] {
				taken[n] = true
				return n
			}
		}
	}
	var out []natsNode
	for i := range 3 {
		out = append(out, natsNode{Host: hosts[i%len(hosts)], Port: port(), ClusterPort: port(), MonitorPort: port()})
	}
	return out
}

// natsVars are nats.nomad.hcl's variables for nodes; with command, the
// raw_exec variant running it, files in the allocations' directories.
func natsVars(nodes []natsNode, command string) string {
	var b strings.Builder
	if command != "" {
		fmt.Fprintf(&b, "driver = \"raw_exec\"\nnats_command = %q\njetstream_volume = \"\"\n", command)
	}
	b.WriteString("nodes = [\n")
	for _, n := range nodes {
		fmt.Fprintf(&b, "  { host = %q, port = %d, cluster_port = %d, monitor_port = %d },\n", n.Host, n.Port, n.ClusterPort, n.MonitorPort)
	}
	b.WriteString("]\n")
	return b.String()
}

// natsURL is every node's client address, as --nats-url takes them.
func natsURL(nodes []natsNode) string {
	var urls []string
	for _, n := range nodes {
		urls = append(urls, fmt.Sprintf("nats://%s:%d", n.Host, n.Port))
	}
	return strings.Join(urls, ",")
}

// jsz is what a node's monitoring endpoint /jsz says of JetStream's
// cluster.
type jsz struct {
	Meta *struct {
		Leader      string `json:"leader"`
		ClusterSize int    `json:"cluster_size"`
		Replicas    []struct {
			Name    string `json:"name"`
			Current bool   `json:"current"`
		} `json:"replicas"`
	} `json:"meta_cluster"`
}

// metaLeader is the JetStream meta leader every one of nodes (nats-N,
// N its index) agrees on, one of them, whose two followers are current;
// or an error saying what is missing.
func metaLeader(nodes []natsNode) (string, error) {
	leader, led := "", false
	for i, n := range nodes {
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/jsz", n.Host, n.MonitorPort))
		if err != nil {
			return "", fmt.Errorf("nats-%d: %w", i, err)
		}
		var z jsz
		err = json.NewDecoder(resp.Body).Decode(&z)
		resp.Body.Close()
		if err != nil {
			return "", fmt.Errorf("nats-%d /jsz: %w", i, err)
		}
		if z.Meta == nil || z.Meta.Leader == "" || z.Meta.ClusterSize != 3 {
			return "", fmt.Errorf("nats-%d: no meta leader of a cluster of 3 yet: %+v", i, z.Meta)
		}
		if leader != "" && z.Meta.Leader != leader {
			return "", fmt.Errorf("nats-%d sees meta leader %s, another %s", i, z.Meta.Leader, leader)
		}
		leader = z.Meta.Leader
		if leader != fmt.Sprintf("nats-%d", i) {
			continue
		}
		// The leader knows whether its followers are current.
		current := 0
		for _, r := range z.Meta.Replicas {
			if !r.Current {
				return "", fmt.Errorf("nats-%d, the leader: peer %s not current", i, r.Name)
			}
			current++
		}
		if current != 2 {
			return "", fmt.Errorf("nats-%d, the leader: %d followers current, want 2", i, current)
		}
		led = true
	}
	if !led {
		return "", fmt.Errorf("meta leader %s is none of the job's nodes", leader)
	}
	return leader, nil
}

// TestClusterNATSJob: deploy/nomad/nats.nomad.hcl runs on the cluster
// (raw_exec, the pinned nats-server built from go.mod's module), its
// token from its Nomad Variable: three nodes that find each other by
// their routes and elect a JetStream meta leader. A caravan server with
// --nats-url (every node), --nats-worker-token and --nats-replicas 3
// answers a warm call through it; then the node leading the call
// records' bucket is stopped (its group scaled to 0), and calls still
// answer, a call spawned before stays readable, and a new one is spawned
// and answered; the node comes back empty and catches up.
//
// The stack's own servers share the first's embedded NATS, and every
// server of a cluster must render the same --bundle-url (where workers ask
// for their NATS credential): this test's server is one of a second
// caravan on the same Nomad and Consul, with its own --auth-url and
// --bundle-url, started while the cluster's record of route settings is
// set aside (and put back at once).
func TestClusterNATSJob(t *testing.T) {
	ctx := context.Background()
	s := env.stack
	bin, why := natsServerBinary()
	if bin == "" {
		t.Skip("no nats-server: " + why)
	}
	if err := s.CreateNamespaces(ctx, systemNamespace); err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	token := hex.EncodeToString(secret)
	w := &nomad.WriteOptions{Namespace: systemNamespace}
	if _, _, err := env.nomad.Variables().Create(&nomad.Variable{Namespace: systemNamespace, Path: "nomad/jobs/nats",
		Items: map[string]string{"token": token}}, w); err != nil {
		t.Fatal(err)
	}
	nodes := natsNodes(t)
	job := parseJob(t, "nats.nomad.hcl", natsVars(nodes, bin))
	began := time.Now()
	if _, _, err := env.nomad.Jobs().Register(job, w); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTasks(t, *job.ID, "nats")
		}
		if _, _, err := env.nomad.Jobs().Deregister(*job.ID, true, w); err != nil {
			t.Logf("purging %s: %v", *job.ID, err)
		}
		if _, err := env.nomad.Variables().Delete("nomad/jobs/nats", w); err != nil {
			t.Logf("deleting its Variable: %v", err)
		}
	})
	var leader string
	eventually(t, 2*time.Minute, "3 NATS nodes in one JetStream cluster with a meta leader", func() error {
		var err error
		leader, err = metaLeader(nodes)
		return err
	})
	t.Logf("NATS cluster of 3, JetStream meta leader %s, %s after the job's registration", leader, time.Since(began).Round(100*time.Millisecond))

	// A token without the Variable's is refused.
	if nc, err := nats.Connect(natsURL(nodes), nats.Token("wrong"), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("the NATS job took a wrong token")
	}

	cl := startNATSCaravan(t, nodes, token)
	const app, fn = "natsjob", "echo"
	appJob := jobs.JobID("e2e", "", app)
	purge(t, appJob)
	purge(t, jobs.CallableID(appJob, fn))
	res := deploy(t, cl, "natsjob.hcl", fmt.Sprintf(`app %q {
  workspace = "e2e"
  function "idle" {
    command = "sleep"
    args    = ["3600"]
    resources {
      memory = 16
    }
  }
  function %q {
    command        = "sh"
    args           = ["-c", "cat \"$CARAVAN_INPUT\""]
    callable       = true
    min_containers = 2
    resources {
      memory = 64
    }
  }
}
`, app, fn), api.DeployBody{})
	t.Logf("deployed a warm callable through the server on the NATS job: version %d in %s", res.Version, res.Duration.Round(time.Millisecond))
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if r, err := cl.Call(cctx, app, fn, api.ChangeBody{}, []byte(`"first"`), 2*time.Minute); err != nil || r.Output != `"first"` {
		t.Fatalf("call %s: %+v %v", fn, r, err)
	}
	spawned, err := cl.Spawn(cctx, app, fn, api.ChangeBody{}, []byte(`"kept"`))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := cl.CallGet(cctx, spawned.ID, time.Minute); err != nil || st.State != queue.Done || st.Result.Output != `"kept"` {
		t.Fatalf("spawned call %s: %+v %v", spawned.ID, st, err)
	}

	// What caravan made is on all three nodes; the node leading the call
	// records' bucket goes.
	nc, err := nats.Connect(natsURL(nodes), nats.Token(token))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	for _, name := range []string{"KV_" + queue.ResultsBucket, queue.Func{AppJobID: appJob, Name: fn}.Stream()} {
		st, err := js.Stream(cctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info := st.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream %s: %d replicas, cluster %+v; want 3", name, info.Config.Replicas, info.Cluster)
		}
		if victim == "" {
			victim = info.Cluster.Leader
		}
	}
	var down natsNode
	for i, n := range nodes {
		if fmt.Sprintf("nats-%d", i) == victim {
			down = n
		}
	}
	awaitDeployment(t, *job.ID)
	t.Logf("the NATS job's deployment successful %s after its registration", time.Since(began).Round(100*time.Millisecond))
	scaleNATSNode(t, *job.ID, victim, down, 0)
	t.Logf("stopped %s (its group scaled to 0), the leader of %s", victim, "KV_"+queue.ResultsBucket)

	// Calls answer through the two left; a failover may refuse the first
	// tries (each is counted and logged), none may be lost once answered.
	lost := time.Now()
	failed := 0
	eventually(t, time.Minute, "a warm call answering with a NATS node down", func() error {
		r, err := cl.Call(cctx, app, fn, api.ChangeBody{}, []byte(`"after"`), 30*time.Second)
		if err == nil && r.Output != `"after"` {
			err = fmt.Errorf("output %q", r.Output)
		}
		if err != nil {
			failed++
		}
		return err
	})
	t.Logf("with %s down: a call answered %s after the stop (%d tries failed first)", victim, time.Since(lost).Round(100*time.Millisecond), failed)
	if st, err := cl.CallGet(cctx, spawned.ID, 0); err != nil || st.State != queue.Done || st.Result.Output != `"kept"` {
		t.Fatalf("the call spawned before %s went: %+v %v", victim, st, err)
	}
	again, err := cl.Spawn(cctx, app, fn, api.ChangeBody{}, []byte(`"spawned after"`))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := cl.CallGet(cctx, again.ID, time.Minute); err != nil || st.State != queue.Done || st.Result.Output != `"spawned after"` {
		t.Fatalf("a call spawned with %s down: %+v %v", victim, st, err)
	}

	// The node comes back with no files (a new allocation's directory)
	// and catches up from the two others.
	back := time.Now()
	scaleNATSNode(t, *job.ID, victim, down, 1)
	eventually(t, time.Minute, victim+" back and current in the call records' bucket", func() error {
		if _, err := metaLeader(nodes); err != nil {
			return err
		}
		st, err := js.Stream(cctx, "KV_"+queue.ResultsBucket)
		if err != nil {
			return err
		}
		info := st.CachedInfo()
		if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return fmt.Errorf("cluster %+v", info.Cluster)
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return fmt.Errorf("replica %s: current %v, offline %v", r.Name, r.Current, r.Offline)
			}
		}
		return nil
	})
	t.Logf("%s back and current %s after its restart", victim, time.Since(back).Round(100*time.Millisecond))
	if st, err := cl.CallGet(cctx, spawned.ID, 0); err != nil || st.State != queue.Done || st.Result.Output != `"kept"` {
		t.Fatalf("the call spawned first, with %s back: %+v %v", victim, st, err)
	}
}

// startNATSCaravan starts a caravan server on the NATS job's nodes, with
// the job's token for itself and its workers, and 3 replicas of
// everything; it is stopped when the test ends. Its --auth-url and
// --bundle-url are its own (see TestClusterNATSJob): the cluster's
// record of route settings is set aside while it starts, then put back.
func startNATSCaravan(t *testing.T, nodes []natsNode, token string) *api.Client {
	t.Helper()
	s := env.stack
	tokenFile := filepath.Join(t.TempDir(), "nats.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const record = "caravan/router-config"
	kv := env.consul.KV()
	saved, _, err := kv.Get(record, nil)
	if err != nil || saved == nil {
		t.Fatalf("the cluster's route settings %s: %v %v", record, saved, err)
	}
	if _, err := kv.Delete(record, nil); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr()
	const name = "caravan-server-nats"
	cl := &api.Client{Addr: "http://" + listen, Token: env.client.Token}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = s.StartProcess(ctx, name, listen, append(append([]string{env.bin, "server", "--log-level", "debug"}, s.ServerFlags()...),
		"--listen", listen,
		"--nomad-addr", "https://127.0.0.1:"+strconv.Itoa(s.Cluster.NomadServers[2].HTTP),
		"--consul-addr", s.ConsulAddr(),
		"--domain", s.Domain, "--https-port", strconv.Itoa(s.Ports.TraefikWebsecure),
		"--auth-url", router.AuthURL(listen), "--bundle-url", router.BundleURL(listen),
		"--proxy-addr", s.HTTPSAddr(), "--root-ca", s.PebbleRootPath(), "--traefik-api", s.TraefikAPI(),
		"--dns-resolver", s.ChallDNSAddr(), "--policy", policyPath(),
		"--bundle-dir", filepath.Join(s.StateDir, "bundles"),
		"--nomad-token-file", s.Cluster.TokenFile("nomad", "caravan-server"),
		"--nats-url", natsURL(nodes), "--nats-token-file", tokenFile, "--nats-worker-token", token, "--nats-replicas", "3"), nil, cl.Health)
	// The other servers' record goes back whether this one started or not.
	saved.ModifyIndex = 0
	if _, perr := kv.Put(saved, nil); perr != nil {
		t.Errorf("putting back %s: %v", record, perr)
	}
	t.Cleanup(func() {
		if p := s.Proc(name); p != nil {
			if err := p.Stop(15 * time.Second); err != nil {
				t.Logf("stopping %s: %v", name, err)
			}
		}
	})
	if err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	return cl
}

// awaitDeployment waits until job's latest deployment is successful:
// Nomad scales no group while one runs (its new allocations healthy in
// Consul, /healthz, for update's min_healthy_time).
func awaitDeployment(t *testing.T, job string) {
	t.Helper()
	eventually(t, 2*time.Minute, job+"'s deployment successful", func() error {
		d, _, err := env.nomad.Jobs().LatestDeployment(job, &nomad.QueryOptions{Namespace: systemNamespace})
		if err != nil {
			return err
		}
		if d == nil || d.Status != "successful" {
			return fmt.Errorf("deployment %+v", d)
		}
		return nil
	})
}

// scaleNATSNode sets the count of job's group of server name (nats-N:
// group nats-N) to count, 0 stopping the node with nothing in its place,
// and waits until the group runs count allocations and the node's
// monitoring port answers (1) or refuses (0).
func scaleNATSNode(t *testing.T, job, name string, node natsNode, count int) {
	t.Helper()
	awaitDeployment(t, job)
	w := &nomad.WriteOptions{Namespace: systemNamespace}
	if _, _, err := env.nomad.Jobs().Scale(job, name, &count, "TestClusterNATSJob", false, nil, w); err != nil {
		t.Fatal(err)
	}
	q := &nomad.QueryOptions{Namespace: systemNamespace}
	monitor := fmt.Sprintf("http://%s:%d/healthz", node.Host, node.MonitorPort)
	eventually(t, time.Minute, fmt.Sprintf("%s at %d allocations", name, count), func() error {
		allocs, _, err := env.nomad.Jobs().Allocations(job, false, q)
		if err != nil {
			return err
		}
		running := 0
		for _, a := range allocs {
			if a.TaskGroup == name && a.ClientStatus == "running" {
				running++
			}
		}
		if running != count {
			return fmt.Errorf("%d allocations of %s running", running, name)
		}
		resp, err := http.Get(monitor)
		if err == nil {
			resp.Body.Close()
		}
		switch {
		case count == 0 && err == nil:
			return fmt.Errorf("%s still answers", monitor)
		case count > 0 && err != nil:
			return err
		}
		return nil
	})
}
