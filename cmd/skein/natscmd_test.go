package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/skeinhq/skein/bus"
)

// freeLocalPort is a TCP port free on loopback.
func freeLocalPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startNode(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("a node did not start")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// TestANodeWithOtherRaftTimingsIsRefused: a `skein nats` node routes with
// another of the same timings, and refuses a stock nats-server configured
// with the same cluster name (whose elections would run on 4-9 s).
func TestANodeWithOtherRaftTimingsIsRefused(t *testing.T) {
	dir := t.TempDir()
	routeA := freeLocalPort(t)
	conf := func(name string, route, to int) string {
		path := filepath.Join(dir, name+".conf")
		routes := ""
		if to != 0 {
			routes = fmt.Sprintf(", routes: [nats://127.0.0.1:%d]", to)
		}
		body := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:-1\ncluster { name: skein, listen: 127.0.0.1:%d%s }\n", name, route, routes)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	optsA, err := natsOptions(conf("a", routeA, 0), bus.SkeinRaft)
	if err != nil {
		t.Fatal(err)
	}
	a := startNode(t, optsA)
	optsC, err := natsOptions(conf("c", freeLocalPort(t), routeA), bus.SkeinRaft)
	if err != nil {
		t.Fatal(err)
	}
	c := startNode(t, optsC)
	stock, err := server.ProcessConfigFile(conf("stock", freeLocalPort(t), routeA))
	if err != nil {
		t.Fatal(err)
	}
	stock.NoSigs = true
	b := startNode(t, stock)
	deadline := time.Now().Add(10 * time.Second)
	for c.NumRoutes() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if c.NumRoutes() == 0 {
		t.Fatal("two skein nats nodes of the same timings did not route")
	}
	// The stock node keeps trying; give it a few rounds.
	time.Sleep(3 * time.Second)
	if n := b.NumRoutes(); n != 0 {
		t.Fatalf("a stock nats-server joined a skein nats cluster (%d routes): its elections would run on other timings", n)
	}
	if !strings.HasPrefix(a.ClusterName(), "skein_raft_") {
		t.Fatalf("cluster name %q", a.ClusterName())
	}
}

// TestNATSNeedsANamedCluster: an unnamed cluster would take any node's
// name (nats-server's dynamic names), the timings' check with it.
func TestNATSNeedsANamedCluster(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n.conf")
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:-1\ncluster { listen: 127.0.0.1:-1 }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := natsOptions(path, bus.SkeinRaft); err == nil || !strings.Contains(err.Error(), "name: skein") {
		t.Fatalf("an unnamed cluster: %v", err)
	}
}
