package testutil

import (
	"net"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/skeinhq/skein/bus"
)

// RestartableBus is an embedded NATS server (no credentials) that a test
// stops and starts again on its port and data, as `skein server` restarted.
type RestartableBus struct {
	dir, listen string
	mu          sync.Mutex
	ns          *server.Server
}

// NewRestartableBus starts one in t's temp dir; it is stopped when t ends.
func NewRestartableBus(t testing.TB) *RestartableBus {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	b := &RestartableBus{dir: t.TempDir(), listen: addr}
	b.Start(t)
	t.Cleanup(b.Stop)
	return b
}

// URL is where clients connect.
func (b *RestartableBus) URL() string { return "nats://" + b.listen }

// Start starts the server (again).
func (b *RestartableBus) Start(t testing.TB) {
	t.Helper()
	ns, err := bus.StartServer(bus.ServerOptions{DataDir: b.dir, Listen: b.listen})
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.ns = ns
	b.mu.Unlock()
}

// Stop stops it, its clients cut off.
func (b *RestartableBus) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ns != nil {
		b.ns.Shutdown()
		b.ns.WaitForShutdown()
		b.ns = nil
	}
}
