package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// applyWithin is how soon after a peer's heartbeat the others must have applied it.
const applyWithin = 2 * time.Second

func newKey(t testing.TB) wgtypes.Key {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Three servers, each in a network namespace of its own on one bridge, run
// the mesh in wireguard mode with real userspace WireGuard devices and the
// real heartbeat store: their subnets reach each other through the tunnels,
// only WireGuard's UDP crosses the wire, a new key or a server gone is
// applied within 2 s of its heartbeat, and a forged heartbeat is refused.
func TestWireGuardMeshInNamespaces(t *testing.T) {
	l := newLab(t)
	conn, _ := testutil.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hbs, err := bus.OpenStore[events.Heartbeat](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	h1, h2, h3 := l.host(1), l.host(2), l.host(3)
	for _, h := range []*host{h1, h2, h3} {
		echo(t, h.ns, h.gw, 7000)
	}
	n1, n2 := start(t, h1, newKey(t), hbs, time.Second), start(t, h2, newKey(t), hbs, time.Second)
	n3 := start(t, h3, newKey(t), hbs, time.Second)
	nodes := []*node{n1, n2, n3}
	tunneled := func(n *node, want int) bool {
		c := 0
		for _, p := range n.w.Status().Peers {
			if p.State == StateTunnel {
				c++
			}
		}
		return c == want
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		return tunneled(n1, 2) && tunneled(n2, 2) && tunneled(n3, 2)
	}, "every server has both others as tunnel peers: %+v %+v %+v", n1.w.Status(), n2.w.Status(), n3.w.Status())
	// Servers that add each other at once: the one with the lesser key starts
	// the handshake, so that they do not spoil each other's and wait 5 s.
	began := time.Now()
	testutil.Eventually(t, applyWithin, func() bool {
		for _, n := range nodes {
			for _, p := range n.peerKeys() {
				if p.LastHandshakeTime.IsZero() {
					return false
				}
			}
		}
		return true
	}, "every pair has shaken hands")
	t.Logf("every pair shook hands within %s of every server having the others as peers", time.Since(began).Round(time.Millisecond))

	t.Run("subnets reach each other through the tunnels", func(t *testing.T) {
		for _, from := range nodes {
			for _, to := range nodes {
				if from == to {
					continue
				}
				msg := []byte("hello from " + from.name + " to " + to.name)
				if err := roundTrip(t, from.ns, from.gw, netip.AddrPortFrom(to.gw, 7000), msg, 3*time.Second); err != nil {
					t.Errorf("%s → %s: %v", from.name, to.name, err)
				}
			}
		}
		rs := routesIn(t, h1.ns)
		for _, h := range []*host{h2, h3} {
			if r := rs[h.subnet]; r.Dev != DefaultDevice || r.Src != h1.gw {
				t.Errorf("s1's route to %s: %+v", h.subnet, r)
			}
		}
		for _, p := range n1.w.Status().Peers {
			if p.Handshake == nil || p.RxBytes == 0 || p.TxBytes == 0 || p.Endpoint == "" {
				t.Errorf("s1's peer %s: %+v", p.Name, p)
			}
		}
	})

	t.Run("the wire carries only WireGuard", func(t *testing.T) {
		marker := make([]byte, 8)
		rand.Read(marker)
		payload := bytes.Repeat([]byte("skein-marker-"+hex.EncodeToString(marker)+"|"), 4000) // ~120 KB
		wire := capture(t, h2.ns, "eth0")
		inside := capture(t, h2.ns, DefaultDevice)
		if err := roundTrip(t, h1.ns, h1.gw, netip.AddrPortFrom(h2.gw, 7000), payload, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		onWire, inTunnel := wire(), inside()
		needle := []byte("skein-marker-" + hex.EncodeToString(marker))
		seen := 0
		for _, p := range inTunnel {
			if bytes.Contains(p, needle) {
				seen++
			}
		}
		if seen == 0 {
			t.Fatalf("the marker was not seen inside the tunnel (%d packets): the capture sees nothing", len(inTunnel))
		}
		udp := 0
		for _, p := range onWire {
			if bytes.Contains(p, needle) {
				t.Fatalf("the marker crossed the wire in clear: % x", p[:min(len(p), 64)])
			}
			proto, sport, dport := ipv4Ports(p)
			if proto != 17 || (sport != DefaultPort && dport != DefaultPort) {
				t.Errorf("a packet on the wire that is not WireGuard's: proto %d ports %d → %d", proto, sport, dport)
				continue
			}
			udp++
		}
		t.Logf("%d packets with the marker inside the tunnel; on the wire %d packets, all UDP to or from port %d, none with it", seen, udp, DefaultPort)
	})

	t.Run("an unrelated change touches neither device nor routes", func(t *testing.T) {
		// Deferred keepalives are on: the devices are as the plans want them.
		testutil.Eventually(t, applyWithin, func() bool {
			for _, n := range nodes {
				for _, p := range n.peerKeys() {
					if p.PersistentKeepaliveInterval != Keepalive {
						return false
					}
				}
			}
			return true
		}, "every peer has its keepalives")
		before := map[*node]map[wgtypes.Key]wgtypes.Peer{}
		for _, n := range nodes {
			n.router.changes.Store(0)
			n.tunnel.changes.Store(0)
			before[n] = n.peerKeys()
		}
		// A server that says nothing of its mesh yet: every worker converges again.
		if _, err := hbs.Put(ctx, "s9", events.Heartbeat{Name: "s9", Status: "up", Time: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, applyWithin, func() bool {
			for _, n := range nodes {
				if !slices.ContainsFunc(n.w.Status().Peers, func(p events.MeshPeer) bool { return p.Name == "s9" && p.State == StateWaiting }) {
					return false
				}
			}
			return true
		}, "every server lists s9 as waiting")
		for _, n := range nodes {
			if r, d := n.router.changes.Load(), n.tunnel.changes.Load(); r+d != 0 {
				t.Errorf("%s changed %d routes and its device's peers %d times", n.name, r, d)
			}
			for k, p := range n.peerKeys() {
				if !p.LastHandshakeTime.Equal(before[n][k].LastHandshakeTime) {
					t.Errorf("%s's session with %s was redone", n.name, k)
				}
			}
		}
		e, _ := hbs.Get(ctx, "s9")
		hbs.Delete(ctx, "s9", e.Revision)
	})

	t.Run("a new endpoint is applied within 2 s of its heartbeat", func(t *testing.T) {
		to := netip.MustParseAddr("10.77.210.12")
		hs := n1.peerKeys()[n2.key.PublicKey()].LastHandshakeTime
		l.readdress(h2, to)
		want := netip.AddrPortFrom(to, DefaultPort).String()
		testutil.Eventually(t, 5*time.Second, func() bool {
			e, err := hbs.Get(ctx, "s2")
			return err == nil && e.Value.Mesh != nil && e.Value.Mesh.WGEndpoint == want
		}, "s2's heartbeat says its new endpoint")
		at := time.Now()
		for _, n := range []*node{n1, n3} {
			testutil.Eventually(t, applyWithin, func() bool {
				p, ok := n.peerKeys()[n2.key.PublicKey()]
				return ok && p.Endpoint != nil && p.Endpoint.String() == want
			}, "%s sends to s2 at %s", n.name, want)
		}
		t.Logf("s1 and s3 send to s2's new endpoint %s after its heartbeat", time.Since(at).Round(time.Millisecond))
		if err := roundTrip(t, h1.ns, h1.gw, netip.AddrPortFrom(h2.gw, 7000), []byte("moved"), 3*time.Second); err != nil {
			t.Errorf("s1 → s2 at its new address: %v", err)
		}
		if got := n1.peerKeys()[n2.key.PublicKey()].LastHandshakeTime; !got.Equal(hs) {
			t.Logf("s1 and s2 shook hands again (%s)", got.Sub(hs).Round(time.Millisecond))
		}
	})

	t.Run("a new key is applied within 2 s of its heartbeat", func(t *testing.T) {
		old := n3.key.PublicKey()
		n3.stop()
		n3 = start(t, h3, newKey(t), hbs, time.Second)
		at := <-n3.announced
		fresh := n3.key.PublicKey()
		for _, n := range []*node{n1, n2} {
			testutil.Eventually(t, applyWithin, func() bool {
				ks := n.peerKeys()
				_, hasNew := ks[fresh]
				_, hasOld := ks[old]
				return hasNew && !hasOld
			}, "%s's device has s3's new key and not its old one", n.name)
			t.Logf("%s applied s3's new key %s after its heartbeat", n.name, time.Since(at).Round(time.Millisecond))
		}
		testutil.Eventually(t, applyWithin, func() bool {
			return roundTrip(t, h1.ns, h1.gw, netip.AddrPortFrom(h3.gw, 7000), []byte("again"), 300*time.Millisecond) == nil
		}, "s1 reaches s3's subnet with its new key")
		t.Logf("s1 → s3 answered %s after s3's heartbeat with its new key", time.Since(at).Round(time.Millisecond))
	})

	t.Run("a server gone is removed within 2 s", func(t *testing.T) {
		key3 := n3.key.PublicKey()
		n3.stop()
		e, err := hbs.Get(ctx, "s3")
		if err != nil {
			t.Fatal(err)
		}
		if err := hbs.Delete(ctx, "s3", e.Revision); err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		for _, n := range []*node{n1, n2} {
			testutil.Eventually(t, applyWithin, func() bool {
				_, has := n.peerKeys()[key3]
				_, routed := routesIn(t, n.ns)[h3.subnet]
				return !has && !routed
			}, "%s removed s3's peer and route", n.name)
		}
		t.Logf("s3's peer and route gone from s1 and s2 %s after its heartbeat was removed", time.Since(at).Round(time.Millisecond))
	})

	t.Run("a forged heartbeat is refused with the fix", func(t *testing.T) {
		forged := events.Heartbeat{Name: "evil", Status: "up", Address: "10.77.210.9", Subnet: "10.77.219.0/24", Gateway: "10.77.219.1", Time: time.Now().UTC(),
			Mesh: &events.Mesh{Mode: ModeWireGuard, WGKey: "forged", WGEndpoint: "10.77.210.9:51820"}}
		if _, err := hbs.Put(ctx, "evil", forged); err == nil || !strings.Contains(err.Error(), "wg_key") {
			t.Errorf("the store wrote a heartbeat with a bad key: %v", err)
		}
		// Written past the store's checks, as a client that skips them would.
		kv, err := conn.JS.KeyValue(ctx, hbs.Bucket())
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(forged)
		if _, err := kv.Put(ctx, "evil", raw); err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		want := `peer evil: its WireGuard key "forged" is not a public key (44 characters of base64): only its agent's own heartbeat can say it; restart that agent, or remove the heartbeat that is not its`
		for _, n := range []*node{n1, n2} {
			testutil.Eventually(t, applyWithin, func() bool {
				for _, p := range n.w.Problems() {
					if p == want {
						return true
					}
				}
				return false
			}, "%s refuses evil: %q", n.name, n.w.Problems())
			if len(n.peerKeys()) != 1 {
				t.Errorf("%s's device has %d peers", n.name, len(n.peerKeys()))
			}
			if _, ok := routesIn(t, n.ns)[netip.MustParsePrefix("10.77.219.0/24")]; ok {
				t.Errorf("%s routes evil's subnet", n.name)
			}
		}
		t.Logf("evil refused by s1 and s2 %s after its heartbeat", time.Since(at).Round(time.Millisecond))
		// s1's own heartbeat, refusal included, is still one the store takes.
		testutil.Eventually(t, 3*time.Second, func() bool {
			e, err := hbs.Get(ctx, "s1")
			return err == nil && e.Value.Mesh != nil && slices.ContainsFunc(e.Value.Mesh.Peers, func(p events.MeshPeer) bool { return p.Name == "evil" && p.State == StateRefused })
		}, "s1's heartbeat tells evil refused")
		if err := roundTrip(t, h1.ns, h1.gw, netip.AddrPortFrom(h2.gw, 7000), []byte("still"), 3*time.Second); err != nil {
			t.Errorf("s1 → s2 after the forged heartbeat: %v", err)
		}
	})
}

// ipv4Ports reads an IPv4 packet's protocol and, for TCP and UDP, its ports.
func ipv4Ports(p []byte) (proto byte, sport, dport int) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return 0, 0, 0
	}
	ihl := int(p[0]&0xf) * 4
	proto = p[9]
	if (proto == 6 || proto == 17) && len(p) >= ihl+4 {
		sport, dport = int(binary.BigEndian.Uint16(p[ihl:])), int(binary.BigEndian.Uint16(p[ihl+2:]))
	}
	return proto, sport, dport
}

// Without a TUN device the mesh makes no route and removes skein's own: the
// route table is never left half made, and the heartbeat says the fix.
func TestNoTUNLeavesNoRoutes(t *testing.T) {
	l := newLab(t)
	h1 := l.host(1)
	peer := wgBeat("s2", "10.77.210.2", "10.77.212.0/24", newKey(t).PublicKey().String(), "10.77.210.2:51820")
	for _, tc := range []struct{ tun, want string }{
		{"/nonexistent/net/tun", "mesh: the WireGuard device is not up: /nonexistent/net/tun does not exist: load the tun module (modprobe tun), or give the agent's container that device"},
		{"/dev/null", "mesh: the WireGuard device is not up: /dev/null is not a usable TUN device"},
	} {
		t.Run(tc.tun, func(t *testing.T) {
			// A route skein made earlier (routed mode, say), which must go.
			l.ip("-n", h1.ns, "route", "replace", "10.77.218.0/24", "via", "10.77.210.254", "proto", "77")
			w := New(Config{Server: "s1", Mode: ModeWireGuard, Router: Netlink{}, Key: newKey(t), DownAfter: 7 * time.Second, Log: zerolog.Nop(),
				Tunnel: &Device{TUN: tc.tun, Userspace: true, Log: zerolog.Nop()},
				Self:   func() (netip.Addr, netip.Prefix, netip.Addr, bool) { return h1.addr, h1.subnet, h1.gw, true }})
			inNS(t, h1.ns, func() { w.Converge(context.Background(), []events.Heartbeat{peer}) })
			if rs := routesIn(t, h1.ns); len(rs) != 0 {
				t.Errorf("skein's routes left: %v", rs)
			}
			if p := w.Problems(); len(p) != 1 || !strings.HasPrefix(p[0], tc.want) {
				t.Errorf("problems %q, want %q", p, tc.want)
			}
			if out := l.ip("-n", h1.ns, "link", "show"); strings.Contains(out, DefaultDevice) {
				t.Errorf("a device was left: %s", out)
			}
			if s := w.Status(); s.WGKey != "" || len(s.Peers) != 0 {
				t.Errorf("status %+v", s)
			}
		})
	}
}

// The device comes up as the kernel's where the kernel has WireGuard, else
// as wireguard-go's (this one has none): its interface up with the bridge's
// address and an MTU that fits a 1500-byte underlay; closing removes it.
func TestDeviceUpAndDown(t *testing.T) {
	l := newLab(t)
	h1 := l.host(1)
	d := &Device{Log: zerolog.Nop()}
	spec := TunnelSpec{Name: DefaultDevice, PrivateKey: newKey(t), Port: DefaultPort, Address: netip.PrefixFrom(h1.gw, 32), Underlay: h1.addr}
	// Inside inNS the test's own goroutine is not the one running: Error, then return.
	inNS(t, h1.ns, func() {
		if err := d.Up(spec); err != nil {
			t.Error(err)
			return
		}
		kind := "wireguard-go's"
		if d.kernel != nil {
			kind = "the kernel's"
		}
		t.Logf("the device is %s", kind)
		ln, err := netlink.LinkByName(DefaultDevice)
		if err != nil {
			t.Error(err)
			return
		}
		addrs, _ := netlink.AddrList(ln, netlink.FAMILY_V4)
		if ln.Attrs().MTU != 1420 || ln.Attrs().Flags&net.FlagUp == 0 || len(addrs) != 1 || addrs[0].IPNet.String() != h1.gw.String()+"/32" {
			t.Errorf("link %+v, addresses %v", ln.Attrs(), addrs)
		}
		if ps, err := d.Peers(); err != nil || len(ps) != 0 {
			t.Errorf("peers %v, %v", ps, err)
		}
		// The same spec again keeps the device; a new address moves in place.
		d.Up(spec)
		moved := spec
		moved.Address = netip.MustParsePrefix("10.77.211.2/32")
		if err := d.Up(moved); err != nil {
			t.Error(err)
			return
		}
		addrs, _ = netlink.AddrList(ln, netlink.FAMILY_V4)
		if same, _ := netlink.LinkByName(DefaultDevice); same.Attrs().Index != ln.Attrs().Index || len(addrs) != 1 || addrs[0].IPNet.String() != "10.77.211.2/32" {
			t.Errorf("after a new address: link %d (was %d), addresses %v", same.Attrs().Index, ln.Attrs().Index, addrs)
		}
		d.Close()
		if _, err := netlink.LinkByName(DefaultDevice); err == nil {
			t.Error("the interface is still there after Close")
		}
	})
}
