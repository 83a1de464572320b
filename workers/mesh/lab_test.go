package mesh

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

// A lab is a set of network namespaces on this host, standing for servers:
// a hub namespace with a bridge, and one namespace per server joined to it
// by a veth pair (eth0, 10.77.210.N/24), with a veth sub0 holding the
// address of its "container subnet" 10.77.21N.1/24 (this kernel has no dummy
// links), whose other end may lead to a container's namespace. Everything
// lives in namespaces of its own, under 10.77.210.0/24-10.77.219.0/24, and
// goes with them at the end.
type lab struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	names  []string
}

// newLab makes the hub, or skips the test when it cannot run as root.
func newLab(t testing.TB) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it makes network namespaces, veth pairs and TUN devices")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("root, but no ip command (iproute2) to make the namespaces with")
	}
	l := &lab{t: t, prefix: fmt.Sprintf("skwg%d", os.Getpid()%100000)}
	t.Cleanup(l.clean)
	l.add(l.prefix + "-hub")
	l.ip("-n", l.prefix+"-hub", "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.prefix+"-hub", "link", "set", "br0", "up")
	return l
}

func (l *lab) add(ns string) {
	l.mu.Lock()
	l.names = append(l.names, ns)
	l.mu.Unlock()
	l.ip("netns", "add", ns)
}

// clean removes the lab's namespaces, and their links with them.
func (l *lab) clean() {
	for _, ns := range l.names {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if out, err := exec.CommandContext(ctx, "ip", "netns", "del", ns).CombinedOutput(); err != nil {
			l.t.Logf("ip netns del %s: %v: %s", ns, err, out)
		}
		cancel()
	}
}

// ip runs ip(8), bounded in time, and fails the test when it fails.
func (l *lab) ip(args ...string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// host is one server of the lab.
type host struct {
	n      int
	name   string
	ns     string
	mu     sync.Mutex
	addr   netip.Addr   // on eth0, toward the others; moved by readdress
	subnet netip.Prefix // its "container subnet", on sub0
	gw     netip.Addr   // sub0's address: the bridge's, on a server
	// container is the namespace of a container on the subnet, at .10, if made.
	container string
}

// address is h's address on eth0.
func (h *host) address() netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addr
}

// readdress moves h to another address on eth0, as a server whose address changed.
func (l *lab) readdress(h *host, to netip.Addr) {
	from := h.address()
	// The old one first: removing a primary address removes its secondaries.
	l.ip("-n", h.ns, "addr", "del", from.String()+"/24", "dev", "eth0")
	l.ip("-n", h.ns, "addr", "add", to.String()+"/24", "dev", "eth0")
	h.mu.Lock()
	h.addr = to
	h.mu.Unlock()
}

// host makes server n (1-9): its namespace, its veth to the hub, its subnet.
func (l *lab) host(n int) *host {
	h := &host{n: n, name: fmt.Sprintf("s%d", n), ns: fmt.Sprintf("%s-s%d", l.prefix, n),
		addr: netip.AddrFrom4([4]byte{10, 77, 210, byte(n)}), subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 77, byte(210 + n), 0}), 24),
		gw: netip.AddrFrom4([4]byte{10, 77, byte(210 + n), 1})}
	l.add(h.ns)
	hub := l.prefix + "-hub"
	l.ip("-n", hub, "link", "add", h.name, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
	l.ip("-n", hub, "link", "set", h.name, "master", "br0", "up")
	l.ip("-n", h.ns, "link", "set", "lo", "up")
	l.ip("-n", h.ns, "addr", "add", h.addr.String()+"/24", "dev", "eth0")
	l.ip("-n", h.ns, "link", "set", "eth0", "up")
	l.ip("-n", h.ns, "link", "add", "sub0", "type", "veth", "peer", "name", "ct0")
	l.ip("-n", h.ns, "addr", "add", h.gw.String()+"/24", "dev", "sub0")
	l.ip("-n", h.ns, "link", "set", "sub0", "up")
	l.ip("-n", h.ns, "link", "set", "ct0", "up")
	// A server routes for its containers (Incus turns forwarding on); a new
	// namespace would otherwise inherit whatever the host has (found by CI
	// on a fresh machine, whose forwarding is off: the peer's container
	// reached nothing through its own server).
	l.ip("netns", "exec", h.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return h
}

// containerOn puts a container on h's subnet: a namespace of its own on
// sub0's other end, at .10 with its route via h, MTU 1500 as on a bridge.
func (l *lab) containerOn(h *host) netip.Addr {
	h.container = h.ns + "c"
	l.add(h.container)
	a := netip.AddrFrom4([4]byte{10, 77, byte(210 + h.n), 10})
	l.ip("-n", h.ns, "link", "set", "ct0", "netns", h.container, "name", "eth0")
	l.ip("-n", h.container, "link", "set", "lo", "up")
	l.ip("-n", h.container, "addr", "add", a.String()+"/24", "dev", "eth0")
	l.ip("-n", h.container, "link", "set", "eth0", "up")
	l.ip("-n", h.container, "route", "add", "default", "via", h.gw.String())
	return a
}

// inNS runs fn on an OS thread inside the namespace ns and waits for it.
// Sockets and devices made there stay there, whatever thread uses them later.
func inNS(t testing.TB, ns string, fn func()) {
	t.Helper()
	<-goNS(t, ns, fn)
}

// goNS starts fn on an OS thread inside the namespace ns; the channel
// closes when fn returns. The thread is never given back to other
// goroutines: it ends with fn's goroutine.
func goNS(t testing.TB, ns string, fn func()) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	entered := make(chan error, 1)
	go func() {
		defer close(done)
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err == nil {
			err = netns.Set(h)
			h.Close()
		}
		entered <- err
		if err == nil {
			fn()
		}
	}()
	if err := <-entered; err != nil {
		t.Fatalf("entering the namespace %s: %v", ns, err)
	}
	return done
}

// node is a mesh worker of one lab host in wireguard mode, with the
// heartbeat an agent would write for it.
type node struct {
	*host
	key    wgtypes.Key
	w      *Worker
	router *countingRouter
	tunnel *countingTunnel
	cancel context.CancelFunc
	done   []<-chan struct{}
	// announced is when a heartbeat first carried the current key.
	announced chan time.Time
}

// start runs a mesh worker for h in its namespace, following and writing
// heartbeats in hbs every beat.
func start(t testing.TB, h *host, key wgtypes.Key, hbs *bus.Store[events.Heartbeat], beat time.Duration) *node {
	t.Helper()
	n := &node{host: h, key: key, announced: make(chan time.Time, 1)}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Str("server", h.name).Logger()
	n.router, n.tunnel = &countingRouter{}, &countingTunnel{Tunnel: &Device{Userspace: true, Log: log}}
	n.w = New(Config{Server: h.name, Mode: ModeWireGuard, Heartbeats: hbs, Router: n.router, Key: key, DownAfter: 7 * time.Second, Log: log, Tunnel: n.tunnel,
		Self: func() (netip.Addr, netip.Prefix, netip.Addr, bool) { return h.address(), h.subnet, h.gw, true }})
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.done = append(n.done, goNS(t, h.ns, func() { n.w.Run(ctx) }))
	beats := make(chan struct{})
	n.done = append(n.done, beats)
	go func() {
		defer close(beats)
		told := false
		tick := time.NewTicker(beat)
		defer tick.Stop()
		for {
			m := n.w.Status()
			hb := events.Heartbeat{Name: h.name, Status: "up", Address: h.address().String(), Subnet: h.subnet.String(), Gateway: h.gw.String(), Mesh: &m, Time: time.Now().UTC()}
			if _, err := hbs.Put(ctx, h.name, hb); err == nil && !told && m.WGKey == key.PublicKey().String() {
				n.announced <- time.Now()
				told = true
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(n.stop)
	return n
}

// countingRouter is the kernel's route table, counting the changes made to it.
type countingRouter struct {
	Netlink
	changes atomic.Int64
}

func (r *countingRouter) Replace(rt Route) error { r.changes.Add(1); return r.Netlink.Replace(rt) }
func (r *countingRouter) Delete(rt Route) error  { r.changes.Add(1); return r.Netlink.Delete(rt) }

// countingTunnel is a WireGuard device, counting the changes made to its peers.
type countingTunnel struct {
	Tunnel
	changes atomic.Int64
}

func (c *countingTunnel) Configure(cfg wgtypes.Config) error {
	c.changes.Add(1)
	return c.Tunnel.Configure(cfg)
}

// stop ends the worker (which removes its device) and its heartbeats.
func (n *node) stop() {
	n.cancel()
	for _, d := range n.done {
		<-d
	}
}

// peerKeys are the public keys of n's device's peers.
func (n *node) peerKeys() map[wgtypes.Key]wgtypes.Peer {
	ps, _ := n.w.cfg.Tunnel.Peers()
	out := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range ps {
		out[p.PublicKey] = p
	}
	return out
}

// routes are skein's routes in the namespace ns, by destination.
func routesIn(t testing.TB, ns string) map[netip.Prefix]Route {
	t.Helper()
	out := map[netip.Prefix]Route{}
	inNS(t, ns, func() {
		rs, err := Netlink{}.Routes()
		if err != nil {
			t.Errorf("routes in %s: %v", ns, err)
		}
		for _, r := range rs {
			out[r.Dst] = r
		}
	})
	return out
}

// echo serves TCP echo on addr:port inside ns until the test ends.
func echo(t testing.TB, ns string, addr netip.Addr, port int) {
	t.Helper()
	var ln net.Listener
	var err error
	inNS(t, ns, func() { ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, uint16(port)).String()) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// dial connects from inside ns, from the address from, to to.
func dial(t testing.TB, ns string, from netip.Addr, to netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	inNS(t, ns, func() {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: from.AsSlice()}}
		c, err = d.Dial("tcp4", to.String())
	})
	return c, err
}

// roundTrip sends msg from ns (from the address from) to an echo server
// at to and reads it back, within timeout.
func roundTrip(t testing.TB, ns string, from netip.Addr, to netip.AddrPort, msg []byte, timeout time.Duration) error {
	t.Helper()
	c, err := dial(t, ns, from, to, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(c, back); err != nil {
		return err
	}
	if string(back) != string(msg) {
		return fmt.Errorf("echoed %d bytes that differ", len(back))
	}
	return nil
}

// capture records the IPv4 packets seen on the interface dev inside ns
// until stop is called, which returns them.
func capture(t testing.TB, ns, dev string) (stop func() [][]byte) {
	t.Helper()
	var fd int
	var err error
	inNS(t, ns, func() {
		var l netlink.Link
		if l, err = netlink.LinkByName(dev); err != nil {
			return
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP))); err != nil {
			return
		}
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: l.Attrs().Index})
	})
	if err != nil {
		t.Fatalf("capturing on %s in %s: %v", dev, ns, err)
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	var mu sync.Mutex
	var pkts [][]byte
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<17)
		for {
			select {
			case <-quit:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			mu.Lock()
			pkts = append(pkts, append([]byte(nil), buf[:n]...))
			mu.Unlock()
		}
	}()
	return func() [][]byte {
		close(quit)
		<-done
		unix.Close(fd)
		mu.Lock()
		defer mu.Unlock()
		return pkts
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
