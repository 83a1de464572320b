//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
)

// natsCluster is three NATS nodes run by `skein nats` (nats-server with
// skein's Raft timings) in one cluster with JetStream, skein's authority and
// TLS, as the README's recipe has it, with skein's streams and buckets
// (skein init --replicas 3).
type natsCluster struct {
	// monitor are the nodes' monitoring ports (/healthz).
	monitor []int
	dir     string
	ca      string
	urls    []string
	nodes   []*proc
	running []*proc
}

// newNATSCluster starts the cluster, each node's `skein nats` given args.
func newNATSCluster(t testing.TB, args ...string) *natsCluster {
	t.Helper()
	c := &natsCluster{dir: t.TempDir()}
	// The authority of the test's skein server, as nats-server configuration.
	auth, err := exec.Command(skeinBin, "creds", "nats-config", "--data", dataDir).Output()
	if err != nil {
		t.Fatalf("creds nats-config: %v", err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "auth.conf"), auth, 0o600); err != nil {
		t.Fatal(err)
	}
	// Certificates as skein server makes them beyond loopback.
	tlsDir := filepath.Join(c.dir, "tls")
	if _, _, err := bus.ServerTLS(tlsDir, "127.0.0.1", "", "", ""); err != nil {
		t.Fatal(err)
	}
	c.ca = bus.CAFile(tlsDir)
	cert, key := filepath.Join(tlsDir, "server-127.0.0.1.pem"), filepath.Join(tlsDir, "server-127.0.0.1.key")
	client := []int{freePort(), freePort(), freePort()}
	route := []int{freePort(), freePort(), freePort()}
	c.monitor = []int{freePort(), freePort(), freePort()}
	for i := range 3 {
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, fmt.Sprintf("tls://127.0.0.1:%d", route[j]))
			}
		}
		conf := fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
tls { cert_file: %q, key_file: %q }
jetstream { store_dir: %q }
cluster {
  name: skein, listen: 127.0.0.1:%d, routes: [%s]
  tls { cert_file: %q, key_file: %q, ca_file: %q }
}
include auth.conf
`, i+1, client[i], c.monitor[i], cert, key, filepath.Join(c.dir, fmt.Sprintf("n%d", i+1)), route[i], strings.Join(routes, ", "), cert, key, c.ca)
		path := filepath.Join(c.dir, fmt.Sprintf("n%d.conf", i+1))
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.urls = append(c.urls, fmt.Sprintf("tls://127.0.0.1:%d", client[i]))
		p := &proc{name: fmt.Sprintf("nats-n%d", i+1), args: append([]string{"nats", "-c", path}, args...), bin: skeinBin}
		p.start()
		c.nodes = append(c.nodes, p)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.stop()
		}
	})
	for _, port := range client {
		if !waitPort(port, 20*time.Second) {
			t.Fatalf("a NATS node does not listen on %d", port)
		}
	}
	eventually(t, 30*time.Second, func() bool {
		out, err := c.skein("init", "--replicas", "3")
		return err == nil && strings.Contains(out, "replicas 3")
	}, "skein init --replicas 3 on the cluster does not succeed")
	return c
}

// agents starts an agent of each name on the cluster (the Incus projects
// skein-s4 on), and waits until they are up.
func (c *natsCluster) agents(t testing.TB, names ...string) {
	t.Helper()
	credDir := t.TempDir()
	for i, name := range names {
		if out, err := exec.Command(skeinBin, "creds", "agent", name, "--data", dataDir, "-o", credDir).CombinedOutput(); err != nil {
			t.Fatalf("creds agent %s: %v %s", name, err, out)
		}
		// No skein server follows the authority on a NATS of one's own: init makes the agent's consumer and store.
		c.must(t, "init", "--replicas", "3", "--data", dataDir)
		a := startProc("cluster-agent-"+name, "agent", "--name", name, "--nats", strings.Join(c.urls, ","), "--tls-ca", c.ca,
			"--creds", filepath.Join(credDir, "agent-"+name+".creds"), "--network", fmt.Sprintf("skeinbr%d", 4+i), "--incus-project", fmt.Sprintf("skein-s%d", 4+i),
			"--pool", "skein", "--state", filepath.Join(credDir, "state-"+name))
		t.Cleanup(a.stop)
		c.running = append(c.running, a)
	}
	eventually(t, 30*time.Second, func() bool {
		out, err := c.skein("servers", "-o", "json")
		return err == nil && strings.Count(out, `"status": "up"`) == len(names)
	}, "the agents are not up on the cluster")
}

// close stops the agents, then the nodes.
func (c *natsCluster) close() {
	for _, a := range c.running {
		a.stop()
	}
	for _, n := range c.nodes {
		n.stop()
	}
}

// admin connects to the cluster as the admin.
func (c *natsCluster) admin(t testing.TB) *bus.Conn {
	t.Helper()
	creds, err := os.ReadFile(adminCreds)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(c.ca)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := bus.Connect(bus.ConnOptions{URL: strings.Join(c.urls, ","), Name: "test-admin", Log: zerolog.Nop(), Creds: creds, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// healthy says whether node n's JetStream is current (its /healthz).
func (c *natsCluster) healthy(n int) bool {
	resp, err := httpClient.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", c.monitor[n]))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// skein runs the CLI against the cluster as the admin.
func (c *natsCluster) skein(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, skeinBin, append([]string{"--nats", strings.Join(c.urls, ","), "--creds", adminCreds, "--tls-ca", c.ca}, args...)...).CombinedOutput()
	return string(out), err
}

func (c *natsCluster) must(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.skein(args...)
	if err != nil {
		t.Fatalf("skein %v: %v\n%s", args, err, out)
	}
	return out
}

// skein on a three-node NATS cluster: streams and buckets replicated on all
// three (skein init --replicas 3), agents and the CLI given all three URLs;
// each node stalled 500 ms in turn (no election may follow), then one node
// killed (kill -9) while commands flow, then another once the first is back
// and current: no acknowledged command is lost, and the CLI and the agents
// carry on as soon as the streams have leaders again.
func TestNATSCluster(t *testing.T) {
	dumpOnFailure(t)
	c := newNATSCluster(t)
	c.agents(t, "c1", "c2")
	c.must(t, "launch", "skein-busybox", "nc1", "-s", "c1")
	t.Cleanup(func() { _, _ = c.skein("delete", "nc1") })
	conn := c.admin(t)
	// Each agent's backups store is replicated as the other streams are.
	for _, server := range []string{"c1", "c2"} {
		m, err := conn.NC.Request("$JS.API.STREAM.INFO.OBJ_"+bus.BackupsBucket(server), nil, 5*time.Second)
		var info struct {
			Config struct {
				Replicas int `json:"num_replicas"`
			} `json:"config"`
		}
		if err != nil || json.Unmarshal(m.Data, &info) != nil || info.Config.Replicas != 3 {
			t.Errorf("the backups store of %s has %d replicas (%v), not 3 as the other streams", server, info.Config.Replicas, err)
		}
	}
	// skein nats elects within 1-2 s (bus.SkeinRaft): no election may come
	// of a loaded machine alone, before any node is lost.
	var elections atomic.Int32
	// The streams and the agents' command consumers: the replicated groups
	// (watches' ordered consumers come and go with each command).
	for _, subject := range []string{"STREAM.LEADER_ELECTED.>", "CONSUMER.LEADER_ELECTED." + bus.StreamCommands + ".>"} {
		sub, err := conn.NC.Subscribe("$JS.EVENT.ADVISORY."+subject, func(m *nats.Msg) {
			elections.Add(1)
			t.Logf("leader elected: %s", m.Subject)
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}

	const total = 48
	// A node's process stalled (SIGSTOP, SIGCONT after 500 ms, as a starved
	// CPU or a long pause would) while a command runs: under the 1 s least
	// election timeout, no group may elect. n1, n2, n3 in turn: one of them
	// leads each group.
	stalls := map[int]int{3: 0, 6: 1, 9: 2}
	const stall = 500 * time.Millisecond
	kills := map[int]int{12: 0, 30: 1} // command number → node killed just before it
	restarts := map[int]int{22: 0, 40: 1}
	var killedAt time.Time
	var recoveries []time.Duration
	for i := range total {
		if n, ok := kills[i]; ok {
			if i == 12 {
				if n := elections.Load(); n != 0 {
					t.Errorf("%d leader elections with no node lost, in %d commands and three %s stalls: the Raft timings are too short for this machine", n, i, stall)
				}
			}
			c.nodes[n].kill9()
			killedAt = time.Now()
			t.Logf("killed node n%d before command %d", n+1, i)
		}
		if n, ok := restarts[i]; ok {
			c.nodes[n].start()
			restarted := time.Now()
			// Another node is lost only once this one has caught up: losing two of
			// three at once is losing the quorum, which no client can ride out.
			eventually(t, 60*time.Second, func() bool { return c.healthy(n) }, "node n%d does not catch up after its restart", n+1)
			t.Logf("restarted node n%d before command %d; current after %s", n+1, i, time.Since(restarted).Round(100*time.Millisecond))
		}
		if n, ok := stalls[i]; ok {
			p := c.nodes[n].cmd.Process
			if err := p.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			go func() {
				time.Sleep(stall)
				_ = p.Signal(syscall.SIGCONT)
			}()
			t.Logf("stalled node n%d for %s during command %d", n+1, stall, i)
		}
		out, err := c.skein("addservice", "nc1", fmt.Sprintf("svc%d", i), "80", "--id", fmt.Sprintf("nc-%d-%d", i, time.Now().UnixNano()), "--timeout", "60s")
		if err != nil {
			t.Fatalf("command %d: %v\n%s", i, err, out)
		}
		if !killedAt.IsZero() {
			// The first command through after a kill: how long the CLI and agent c1 were held up.
			recoveries = append(recoveries, time.Since(killedAt))
			killedAt = time.Time{}
			if out, err := c.skein("ping", "c2"); err != nil {
				t.Errorf("agent c2 does not answer after the kill: %v %s", err, out)
			}
		}
	}
	t.Logf("from each kill to the next command done (CLI to agent and back): %v", recoveries)
	// The streams led by the killed node answer again once the other two have
	// elected a leader (skein nats: 1-2 s) and the agent has asked the new
	// one for commands (its pull's heartbeats missed: 1 s). The figures are
	// BenchmarkNATSNodeLoss's; this bounds a loaded CI machine's worst.
	for _, d := range recoveries {
		if d > 10*time.Second {
			t.Errorf("a command took %s after a node was killed: more than 10 s", d.Round(time.Millisecond))
		}
	}
	var defs struct {
		Services []struct {
			Name string `json:"name"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(c.must(t, "listservice", "nc1", "-o", "json")), &defs); err != nil {
		t.Fatal(err)
	}
	if len(defs.Services) != total {
		t.Errorf("%d of %d acknowledged services are recorded", len(defs.Services), total)
	}
}
