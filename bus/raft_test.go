package bus

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// TestRaftDefaultsAreNATSServers: what SetRaft changes holds nats-server's
// own defaults until then (server/raft.go). It fails when nats-server's
// timings change name, type or value: SkeinRaft is then to be judged again
// against them (a name gone fails the link first).
func TestRaftDefaultsAreNATSServers(t *testing.T) {
	want := RaftTimings{MinElection: 4 * time.Second, MaxElection: 9 * time.Second, Heartbeat: time.Second,
		LostQuorum: 10 * time.Second, LostQuorumCheck: 10 * time.Second,
		MinCampaign: 100 * time.Millisecond, MaxCampaign: 800 * time.Millisecond}
	if got := CurrentRaft(); got != want {
		t.Fatalf("nats-server's Raft timings are %+v, not %+v: look again at SkeinRaft", got, want)
	}
}

// TestSetRaftRefusesTimingsThatElectForNothing: an election timeout under
// two heartbeats would have followers stand while their leader is there.
func TestSetRaftRefusesTimingsThatElectForNothing(t *testing.T) {
	before := CurrentRaft()
	for _, bad := range []RaftTimings{
		{MinElection: 400 * time.Millisecond, MaxElection: time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: time.Second, LostQuorumCheck: 2 * time.Second},
		{MinElection: 2 * time.Second, MaxElection: time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: 2 * time.Second, LostQuorumCheck: 2 * time.Second},
		{MinElection: time.Second, MaxElection: 2 * time.Second, Heartbeat: 0, LostQuorum: 2 * time.Second, LostQuorumCheck: 2 * time.Second},
		{MinElection: time.Second, MaxElection: 2 * time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: 500 * time.Millisecond, LostQuorumCheck: 2 * time.Second},
		{MinElection: time.Second, MaxElection: 2 * time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: 2 * time.Second},
		{MinElection: time.Second, MaxElection: 2 * time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: 2 * time.Second, LostQuorumCheck: 2 * time.Second},
		{MinElection: time.Second, MaxElection: 2 * time.Second, Heartbeat: 250 * time.Millisecond, LostQuorum: 2 * time.Second, LostQuorumCheck: 2 * time.Second, MinCampaign: 25 * time.Millisecond, MaxCampaign: time.Second},
	} {
		if err := SetRaft(bad); err == nil {
			t.Errorf("SetRaft(%+v) took it", bad)
		}
	}
	if got := CurrentRaft(); got != before {
		t.Fatalf("a refused SetRaft changed the timings to %+v", got)
	}
}

// TestClusterNameCarriesTheTimings: nodes with other timings announce
// another cluster name, which NATS refuses routes from.
func TestClusterNameCarriesTheTimings(t *testing.T) {
	a := ClusterName("skein", SkeinRaft)
	other := SkeinRaft
	other.MaxElection = 3 * time.Second
	if a == ClusterName("skein", other) || a == "skein" {
		t.Fatalf("cluster names %q and %q do not tell the timings apart", a, ClusterName("skein", other))
	}
	if a != "skein_raft_e1000-2000hb250" {
		t.Fatalf("cluster name %q", a)
	}
}

// freePorts are n ports free on loopback a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		defer l.Close()
	}
	return ports
}

// syncBuffer is a log written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cut is a TCP proxy on loopback to target until cut: then every
// connection through it ends at once and no other is taken, as a killed
// process's sockets do.
type cut struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCut(t *testing.T, target string) *cut {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cut{l: l}
	t.Cleanup(c.cut)
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return c
}

func (c *cut) addr() string { return c.l.Addr().String() }

func (c *cut) cut() {
	c.l.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
}

// TestPeerLossElectsAtOnce: the node leading a replicated stream is lost
// as a killed one is (its connections end at once) and the stream has a new
// leader within 700 ms, under the election timeout's least (750 ms); it
// fails when nats-server's Raft nodes can no longer be found or asked to
// stand. The lost node, cut off from both others, stands for nothing.
func TestPeerLossElectsAtOnce(t *testing.T) {
	// Put back once the nodes are gone (cleanups run last first): their
	// Raft goroutines read the timings until then.
	old := CurrentRaft()
	t.Cleanup(func() {
		if err := SetRaft(old); err != nil {
			t.Error(err)
		}
	})
	if err := SetRaft(SkeinRaft); err != nil {
		t.Fatal(err)
	}
	// Each node reaches each other through a proxy of its own: a node is
	// lost by cutting every proxy to and from it.
	ports := freePorts(t, 4)
	routes, nowhere := ports[:3], ports[3]
	proxies := map[[2]int]*cut{}
	for i := range 3 {
		for j := range 3 {
			if i != j {
				proxies[[2]int{i, j}] = newCut(t, fmt.Sprintf("127.0.0.1:%d", routes[j]))
			}
		}
	}
	var nodes []*server.Server
	for i := range 3 {
		var rs []*url.URL
		for j := range 3 {
			if j != i {
				rs = append(rs, &url.URL{Scheme: "nats", Host: proxies[[2]int{i, j}].addr()})
			}
		}
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: server.RANDOM_PORT,
			JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
			// Told to the others as an address nothing listens on: they reach
			// it through their proxies only.
			Cluster: server.ClusterOpts{Name: ClusterName("test", SkeinRaft), Host: "127.0.0.1", Port: routes[i], Advertise: fmt.Sprintf("127.0.0.1:%d", nowhere)},
			Routes:  rs,
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		nodes = append(nodes, ns)
	}
	for _, ns := range nodes {
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("a node does not take clients")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logs := make([]*syncBuffer, len(nodes))
	for i, ns := range nodes {
		logs[i] = &syncBuffer{}
		go CampaignOnPeerLoss(ctx, ns, zerolog.New(io.MultiWriter(logs[i], zerolog.NewTestWriter(t))).With().Str("node", ns.Name()).Logger())
	}
	var js []jetstream.JetStream
	for _, ns := range nodes {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		j, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		js = append(js, j)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range []string{"T", "U"} {
		for {
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := js[0].CreateStream(cctx, jetstream.StreamConfig{Name: name, Subjects: []string{name}, Replicas: 3})
			ccancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no R3 stream: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	leader := func(j jetstream.JetStream, stream string) string {
		rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		s, err := j.Stream(rctx, stream)
		if err != nil || s.CachedInfo().Cluster == nil {
			return ""
		}
		return s.CachedInfo().Cluster.Leader
	}
	var lost int
	for lost = -1; lost < 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for i, ns := range nodes {
			if leader(js[0], "T") == ns.Name() {
				lost = i
			}
		}
	}
	if lost < 0 {
		t.Fatal("the stream has no leader")
	}
	// U is led by another node: the lost one follows a group whose leader
	// it loses too.
	for l := leader(js[0], "U"); l == "" || l == nodes[lost].Name(); l = leader(js[0], "U") {
		if time.Now().After(deadline) {
			t.Fatal("stream U stays with the node to be lost")
		}
		if l != "" {
			_, _ = js[0].Conn().Request("$JS.API.STREAM.LEADER.STEPDOWN.U", nil, time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
	other := js[(lost+1)%3]
	start := time.Now()
	for k, p := range proxies {
		if k[0] == lost || k[1] == lost {
			p.cut()
		}
	}
	for {
		if l := leader(other, "T"); l != "" && l != nodes[lost].Name() {
			t.Logf("new leader %s after %v", l, time.Since(start))
			if took := time.Since(start); took > 700*time.Millisecond {
				t.Fatalf("the stream's new leader %s was elected %v after its leader's node was lost, want within 700 ms", l, took)
			}
			// The lost node told of its peers' loss, and stood for nothing.
			for strings.Count(logs[lost].String(), "routes all closed") < 2 {
				if time.Since(start) > 5*time.Second {
					t.Fatalf("the lost node did not see both peers go:\n%s", logs[lost].String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if got := logs[lost].String(); strings.Contains(got, `"S-R3F-`) || strings.Contains(got, `"_meta_"`) {
				t.Errorf("a node cut off from every peer stood for election:\n%s", got)
			}
			return
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("no new leader within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
