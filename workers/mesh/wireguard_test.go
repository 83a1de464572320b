package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/skeinhq/skein/events"
)

// key makes a private key for a test, from a seed byte so that tables read alike.
func key(seed byte) wgtypes.Key {
	b := make([]byte, 32)
	for i := range b {
		b[i] = seed + byte(i)
	}
	k, _ := wgtypes.NewKey(b)
	return k
}

func pub(seed byte) wgtypes.Key { return key(seed).PublicKey() }

func wgBeat(name, addr, subnet, wgKey, endpoint string) events.Heartbeat {
	hb := beat(name, addr, subnet)
	hb.Mesh = &events.Mesh{Mode: ModeWireGuard, WGKey: wgKey, WGEndpoint: endpoint}
	return hb
}

// w1 across the internet at 198.51.100.1 with containers on 10.77.1.0/24.
var w1 = Local{Name: "w1", Address: addr("198.51.100.1"), Subnet: pfx("10.77.1.0/24"), Gateway: addr("10.77.1.1"),
	Routes: []netip.Prefix{pfx("198.51.100.0/24"), pfx("10.77.1.0/24"), pfx("0.0.0.0/0"), pfx("192.168.5.0/24")},
	Device: "skein-wg0", Key: pub(1), Endpoint: netip.MustParseAddrPort("198.51.100.1:51820")}

// Each wireguard peer with a sound key and endpoint becomes a peer of the
// device with a route through it; every other is refused with the reason
// and the fix, or waits for its heartbeat to say more.
func TestPlanWireGuard(t *testing.T) {
	routed := beat("routed", "203.0.113.9", "10.77.9.0/24")
	routed.Mesh = &events.Mesh{Mode: ModeRouted}
	off := beat("off", "203.0.113.10", "10.77.10.0/24")
	off.Mesh = &events.Mesh{Mode: ModeOff, Problem: "the container bridge 10.77.10.1 is not on this host"}
	down := wgBeat("w3", "203.0.113.3", "10.77.3.0/24", pub(3).String(), "203.0.113.3:51820")
	down.Time = now.Add(-time.Minute)
	peers := []events.Heartbeat{
		wgBeat("w1", "198.51.100.1", "10.77.1.0/24", pub(1).String(), "198.51.100.1:51820"),
		wgBeat("w2", "203.0.113.2", "10.77.2.0/24", pub(2).String(), "203.0.113.2:51820"),
		down,
		routed, off,
		beat("old", "203.0.113.11", "10.77.11.0/24"),
		wgBeat("nokey", "203.0.113.12", "10.77.12.0/24", "", ""),
		wgBeat("forged", "203.0.113.13", "10.77.13.0/24", "forged", "203.0.113.13:51820"),
		wgBeat("zero", "203.0.113.14", "10.77.14.0/24", wgtypes.Key{}.String(), "203.0.113.14:51820"),
		wgBeat("mine", "203.0.113.15", "10.77.15.0/24", pub(1).String(), "203.0.113.15:51820"),
		wgBeat("copy1", "203.0.113.16", "10.77.16.0/24", pub(16).String(), "203.0.113.16:51820"),
		wgBeat("copy2", "203.0.113.17", "10.77.17.0/24", pub(16).String(), "203.0.113.17:51820"),
		wgBeat("badep", "203.0.113.18", "10.77.18.0/24", pub(18).String(), "nope:51820"),
		wgBeat("port0", "203.0.113.19", "10.77.19.0/24", pub(19).String(), "203.0.113.19:0"),
		wgBeat("loop", "127.0.0.1", "10.77.20.0/24", pub(20).String(), "127.0.0.1:51820"),
		wgBeat("same", "198.51.100.1", "10.77.21.0/24", pub(21).String(), "198.51.100.1:51821"),
		wgBeat("inside", "10.77.2.7", "10.77.22.0/24", pub(22).String(), "10.77.2.7:51820"),
		wgBeat("overlapsme", "203.0.113.23", "10.77.1.128/25", pub(23).String(), "203.0.113.23:51820"),
		wgBeat("w2twin", "203.0.113.24", "10.77.2.0/24", pub(24).String(), "203.0.113.24:51820"),
		wgBeat("collides", "203.0.113.25", "192.168.0.0/16", pub(25).String(), "203.0.113.25:51820"),
		wgBeat("badnet", "203.0.113.26", "10.77.26.1/24", pub(26).String(), "203.0.113.26:51820"),
	}
	routes, tunneled, links := PlanWireGuard(w1, peers, now, 7*time.Second)
	wantRoutes := []Route{
		{Dst: pfx("10.77.2.0/24"), Dev: "skein-wg0", Src: addr("10.77.1.1")},
		{Dst: pfx("10.77.3.0/24"), Dev: "skein-wg0", Src: addr("10.77.1.1")},
	}
	if !slices.Equal(routes, wantRoutes) {
		t.Errorf("routes %v, want %v", routes, wantRoutes)
	}
	wantPeers := []Tunneled{
		{Peer: "w2", Key: pub(2), Endpoint: netip.MustParseAddrPort("203.0.113.2:51820"), Subnet: pfx("10.77.2.0/24")},
		{Peer: "w3", Key: pub(3), Endpoint: netip.MustParseAddrPort("203.0.113.3:51820"), Subnet: pfx("10.77.3.0/24")},
	}
	if !slices.Equal(tunneled, wantPeers) {
		t.Errorf("peers %v, want %v", tunneled, wantPeers)
	}
	states := map[string]Link{}
	for _, l := range links {
		states[l.Peer] = l
	}
	if _, ok := states["w1"]; ok {
		t.Error("a link to itself")
	}
	for peer, want := range map[string]string{
		"w2":         "tunnel",
		"w3":         "tunnel",
		"routed":     "refused: it uses the routed mesh: give every server the same --mesh (wireguard)",
		"off":        "refused: its mesh is off (the container bridge 10.77.10.1 is not on this host): give every server --mesh wireguard",
		"old":        "waiting",
		"nokey":      "waiting",
		"forged":     `refused: its WireGuard key "forged" is not a public key (44 characters of base64): only its agent's own heartbeat can say it; restart that agent, or remove the heartbeat that is not its`,
		"zero":       `refused: its WireGuard key "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" is not a public key`,
		"mine":       "refused: its WireGuard key is this server's own: one of the two copied the other's state directory; remove wireguard.key from that agent's --state and restart it",
		"copy1":      "refused: its WireGuard key is also announced by copy2: a copied state directory or a forged heartbeat",
		"copy2":      "refused: its WireGuard key is also announced by copy1",
		"badep":      `refused: its WireGuard endpoint "nope:51820" is not a unicast IPv4 ADDRESS:PORT: give its agent --address (the address its peers reach it at) and --mesh-port`,
		"port0":      `refused: its WireGuard endpoint "203.0.113.19:0" is not a unicast IPv4 ADDRESS:PORT`,
		"loop":       `refused: its WireGuard endpoint "127.0.0.1:51820" is not a unicast IPv4 ADDRESS:PORT`,
		"same":       "same host",
		"inside":     "refused: its WireGuard endpoint 10.77.2.7:51820 lies in the container subnet of w2: the tunnel cannot carry its own packets",
		"overlapsme": "refused: its subnet 10.77.1.128/25 overlaps this server's 10.77.1.0/24: give each server a /24 of its own",
		"w2twin":     "refused: its subnet 10.77.2.0/24 overlaps w2's",
		"collides":   "refused: its subnet 192.168.0.0/16 collides with this server's route to 192.168.5.0/24",
		"badnet":     `refused: its subnet "10.77.26.1/24" is not an IPv4 network`,
	} {
		l := states[peer]
		got := l.State
		if l.Problem != "" {
			got += ": " + l.Problem
		}
		if !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, want %q", peer, got, want)
		}
	}
	if !states["w3"].Down || states["w2"].Down || states["w2"].Via != "203.0.113.2:51820" {
		t.Errorf("w3 down %v, w2 %+v", states["w3"].Down, states["w2"])
	}
}

// What a heartbeat written past the store's checks says cannot make this
// server's own heartbeat invalid: a peer without a valid name is left out,
// the rest is quoted in ASCII and cut short.
func TestForgedWireGuardPeersKeepTheHeartbeatValid(t *testing.T) {
	long := strings.Repeat("é\n", 700)
	off := wgBeat("off", "203.0.113.9", "10.77.9.0/24", "", "")
	off.Mesh.Mode, off.Mesh.Problem = ModeOff, long
	peers := []events.Heartbeat{
		wgBeat("bad name!", "203.0.113.2", "10.77.2.0/24", pub(2).String(), "203.0.113.2:51820"),
		wgBeat("key", "203.0.113.3", "10.77.3.0/24", long, "203.0.113.3:51820"),
		wgBeat("endpoint", "203.0.113.4", "10.77.4.0/24", pub(4).String(), long),
		wgBeat("subnet", "203.0.113.5", long, pub(5).String(), "203.0.113.5:51820"),
		off,
	}
	_, _, links := PlanWireGuard(w1, peers, now, 7*time.Second)
	m := events.Mesh{Mode: ModeWireGuard, WGKey: pub(1).String(), WGEndpoint: "198.51.100.1:51820"}
	for _, l := range links {
		if l.Peer == "bad name!" {
			t.Errorf("a peer without a valid name is listed")
		}
		m.Peers = append(m.Peers, peerOf(l, nil))
	}
	if len(m.Peers) != 4 {
		t.Errorf("%d peers: %+v", len(m.Peers), m.Peers)
	}
	b, _ := json.Marshal(events.Heartbeat{Name: "w1", Status: "up", Mesh: &m, Time: now})
	if err := events.ValidateState(events.TypeHeartbeat, b); err != nil {
		t.Errorf("this server's heartbeat is refused: %v", err)
	}
}

// The device's MTU leaves room for WireGuard over IPv6 on the underlay and
// never exceeds what the internet's 1500 bytes carry.
func TestTunnelMTU(t *testing.T) {
	for _, tc := range []struct{ underlay, want int }{
		{0, 1420}, {1500, 1420}, {9000, 1420}, {1450, 1370}, {1400, 1320}, {1300, 1280}, {576, 1280},
	} {
		if got := tunnelMTU(tc.underlay); got != tc.want {
			t.Errorf("underlay %d: %d, want %d", tc.underlay, got, tc.want)
		}
	}
}

func nets(ps ...string) []net.IPNet {
	var out []net.IPNet
	for _, p := range ps {
		out = append(out, ipNetOf(pfx(p)))
	}
	return out
}

func udp(s string) *net.UDPAddr { return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

// Only what differs from the plan is sent to the device: unchanged peers
// are not touched (their sessions go on), a roamed endpoint is not undone.
func TestPeerDelta(t *testing.T) {
	ka := Keepalive
	t2 := Tunneled{Peer: "w2", Key: pub(2), Endpoint: netip.MustParseAddrPort("203.0.113.2:51820"), Subnet: pfx("10.77.2.0/24")}
	t3 := Tunneled{Peer: "w3", Key: pub(3), Endpoint: netip.MustParseAddrPort("203.0.113.3:51820"), Subnet: pfx("10.77.3.0/24")}
	dev2 := wgtypes.Peer{PublicKey: pub(2), Endpoint: udp("203.0.113.2:51820"), PersistentKeepaliveInterval: Keepalive, AllowedIPs: nets("10.77.2.0/24")}
	dev3 := wgtypes.Peer{PublicKey: pub(3), Endpoint: udp("203.0.113.3:51820"), PersistentKeepaliveInterval: Keepalive, AllowedIPs: nets("10.77.3.0/24")}
	applied := map[wgtypes.Key]netip.AddrPort{pub(2): t2.Endpoint, pub(3): t3.Endpoint}
	moved := t3
	moved.Endpoint = netip.MustParseAddrPort("203.0.113.33:51820")
	renumbered := t3
	renumbered.Subnet = pfx("10.77.33.0/24")
	roamed := dev3
	roamed.Endpoint = udp("192.0.2.50:40000")
	lesser, greater := wgtypes.Key{}, wgtypes.Key{}
	for i := range greater {
		greater[i] = 0xff
	}
	noKeepalive := dev3
	noKeepalive.PersistentKeepaliveInterval = 0
	for _, tc := range []struct {
		name     string
		self     wgtypes.Key
		want     []Tunneled
		have     []wgtypes.Peer
		applied  map[wgtypes.Key]netip.AddrPort
		out      []wgtypes.PeerConfig
		deferred bool
		hold     map[wgtypes.Key]bool
	}{
		{"new peers", lesser, []Tunneled{t2, t3}, nil, nil, []wgtypes.PeerConfig{
			{PublicKey: pub(2), Endpoint: udp("203.0.113.2:51820"), PersistentKeepaliveInterval: &ka, ReplaceAllowedIPs: true, AllowedIPs: nets("10.77.2.0/24")},
			{PublicKey: pub(3), Endpoint: udp("203.0.113.3:51820"), PersistentKeepaliveInterval: &ka, ReplaceAllowedIPs: true, AllowedIPs: nets("10.77.3.0/24")},
		}, false, nil},
		{"unchanged", lesser, []Tunneled{t2, t3}, []wgtypes.Peer{dev2, dev3}, applied, nil, false, nil},
		{"a peer left", lesser, []Tunneled{t2}, []wgtypes.Peer{dev2, dev3}, applied, []wgtypes.PeerConfig{{PublicKey: pub(3), Remove: true}}, false, nil},
		{"a new endpoint", lesser, []Tunneled{t2, moved}, []wgtypes.Peer{dev2, dev3}, applied, []wgtypes.PeerConfig{
			{PublicKey: pub(3), UpdateOnly: true, Endpoint: udp("203.0.113.33:51820")},
		}, false, nil},
		{"a roamed peer is left where it roamed", lesser, []Tunneled{t2, t3}, []wgtypes.Peer{dev2, roamed}, applied, nil, false, nil},
		{"a new subnet", lesser, []Tunneled{t2, renumbered}, []wgtypes.Peer{dev2, dev3}, applied, []wgtypes.PeerConfig{
			{PublicKey: pub(3), UpdateOnly: true, ReplaceAllowedIPs: true, AllowedIPs: nets("10.77.33.0/24")},
		}, false, nil},
		{"a new key", lesser, []Tunneled{t2, {Peer: "w3", Key: pub(33), Endpoint: t3.Endpoint, Subnet: t3.Subnet}}, []wgtypes.Peer{dev2, dev3}, applied, []wgtypes.PeerConfig{
			{PublicKey: pub(3), Remove: true},
			{PublicKey: pub(33), Endpoint: udp("203.0.113.3:51820"), PersistentKeepaliveInterval: &ka, ReplaceAllowedIPs: true, AllowedIPs: nets("10.77.3.0/24")},
		}, false, nil},
		{"a device not made by this agent gets the plan's endpoints", lesser, []Tunneled{t2}, []wgtypes.Peer{dev2}, nil, []wgtypes.PeerConfig{
			{PublicKey: pub(2), UpdateOnly: true, Endpoint: udp("203.0.113.2:51820")},
		}, false, nil},
		{"the greater key waits to start the handshake", greater, []Tunneled{t2}, nil, nil, []wgtypes.PeerConfig{
			{PublicKey: pub(2), Endpoint: udp("203.0.113.2:51820"), ReplaceAllowedIPs: true, AllowedIPs: nets("10.77.2.0/24")},
		}, true, nil},
		{"and does not start it while held", greater, []Tunneled{t2, t3}, []wgtypes.Peer{dev2, noKeepalive}, applied, nil, false, map[wgtypes.Key]bool{pub(3): true}},
		{"then starts it", greater, []Tunneled{t2, t3}, []wgtypes.Peer{dev2, noKeepalive}, applied, []wgtypes.PeerConfig{
			{PublicKey: pub(3), UpdateOnly: true, PersistentKeepaliveInterval: &ka},
		}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, deferred := peerDelta(tc.self, tc.want, tc.have, tc.applied, tc.hold)
			if uapiSet(got) != uapiSet(wgtypes.Config{Peers: tc.out}) || (len(deferred) > 0) != tc.deferred {
				t.Errorf("got (deferred %v)\n%s\nwant (deferred %v)\n%s", deferred, uapiSet(got), tc.deferred, uapiSet(wgtypes.Config{Peers: tc.out}))
			}
		})
	}
}

// The configuration protocol's text, as wireguard-go's IpcSet takes it.
func TestUAPISet(t *testing.T) {
	ka := Keepalive
	port := 51820
	priv := key(1)
	got := uapiSet(wgtypes.Config{PrivateKey: &priv, ListenPort: &port, Peers: []wgtypes.PeerConfig{
		{PublicKey: pub(3), Remove: true},
		{PublicKey: pub(2), UpdateOnly: true, Endpoint: udp("203.0.113.2:51820"), PersistentKeepaliveInterval: &ka, ReplaceAllowedIPs: true, AllowedIPs: nets("10.77.2.0/24")},
	}})
	want := "private_key=0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20\n" +
		"listen_port=51820\n" +
		"public_key=" + hexOf(pub(3)) + "\nremove=true\n" +
		"public_key=" + hexOf(pub(2)) + "\nupdate_only=true\nendpoint=203.0.113.2:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.77.2.0/24\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func hexOf(k wgtypes.Key) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for _, c := range k {
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&0xf])
	}
	return b.String()
}

// The device's answer is read into peers; its private key goes nowhere.
func TestParseUAPI(t *testing.T) {
	get := "private_key=" + hexOf(key(1)) + "\nlisten_port=51820\n" +
		"public_key=" + hexOf(pub(2)) + "\npreshared_key=" + hexOf(wgtypes.Key{}) + "\nprotocol_version=1\nendpoint=203.0.113.2:51820\n" +
		"last_handshake_time_sec=1796558400\nlast_handshake_time_nsec=5\ntx_bytes=1200\nrx_bytes=3400\npersistent_keepalive_interval=25\nallowed_ip=10.77.2.0/24\n" +
		"public_key=" + hexOf(pub(3)) + "\nprotocol_version=1\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n" +
		"errno=0\n\n"
	peers, err := parseUAPI(get)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 2 {
		t.Fatalf("%d peers", len(peers))
	}
	p := peers[0]
	if p.PublicKey != pub(2) || p.Endpoint.String() != "203.0.113.2:51820" || !p.LastHandshakeTime.Equal(time.Unix(1796558400, 5)) ||
		p.TransmitBytes != 1200 || p.ReceiveBytes != 3400 || p.PersistentKeepaliveInterval != Keepalive || !sameNets(p.AllowedIPs, nets("10.77.2.0/24")) {
		t.Errorf("peer %+v", p)
	}
	if q := peers[1]; q.PublicKey != pub(3) || q.Endpoint != nil || !q.LastHandshakeTime.IsZero() {
		t.Errorf("peer %+v", q)
	}
	if _, err := parseUAPI("public_key=zz\n"); err == nil {
		t.Error("a bad key was read")
	}
}

// The key is made once, kept 0600 in a 0700 directory, read back the same;
// a key others may read, or a file that holds none, is refused with the fix.
func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", KeyFile)
	k, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Errorf("directory %v", di.Mode())
	}
	again, err := LoadOrCreateKey(path)
	if err != nil || again != k {
		t.Fatalf("read back %v, %v", again == k, err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Errorf("a key others read: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("not a key\n"), 0o600)
	if _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "remove it to make a new one") {
		t.Errorf("garbage: %v", err)
	}
}

// fakeTunnel is a WireGuard device in memory.
type fakeTunnel struct {
	failUp error
	spec   TunnelSpec
	up     bool
	peers  map[wgtypes.Key]wgtypes.Peer
	calls  []string
}

func (f *fakeTunnel) Up(spec TunnelSpec) error {
	if f.failUp != nil {
		return f.failUp
	}
	if !f.up || f.spec != spec {
		f.calls = append(f.calls, "up")
		f.peers = map[wgtypes.Key]wgtypes.Peer{}
	}
	f.spec, f.up = spec, true
	return nil
}

func (f *fakeTunnel) Configure(cfg wgtypes.Config) error {
	for _, p := range cfg.Peers {
		cur, ok := f.peers[p.PublicKey]
		switch {
		case p.Remove:
			f.calls = append(f.calls, "remove "+p.PublicKey.String()[:4])
			delete(f.peers, p.PublicKey)
			continue
		case !ok:
			f.calls = append(f.calls, "add "+p.PublicKey.String()[:4])
			cur = wgtypes.Peer{PublicKey: p.PublicKey}
		default:
			f.calls = append(f.calls, "change "+p.PublicKey.String()[:4])
		}
		if p.Endpoint != nil {
			cur.Endpoint = p.Endpoint
		}
		if p.PersistentKeepaliveInterval != nil {
			cur.PersistentKeepaliveInterval = *p.PersistentKeepaliveInterval
		}
		if p.ReplaceAllowedIPs {
			cur.AllowedIPs = nil
		}
		cur.AllowedIPs = append(cur.AllowedIPs, p.AllowedIPs...)
		f.peers[p.PublicKey] = cur
	}
	return nil
}

func (f *fakeTunnel) Peers() ([]wgtypes.Peer, error) {
	if !f.up {
		return nil, errors.New("not up")
	}
	var out []wgtypes.Peer
	for _, p := range f.peers {
		out = append(out, p)
	}
	return out, nil
}

func (f *fakeTunnel) Close() error { f.up = false; f.calls = append(f.calls, "close"); return nil }

func newWGWorker(r Router, tun Tunnel) *Worker {
	return New(Config{Server: "w1", Mode: ModeWireGuard, Router: r, Tunnel: tun, Key: key(1), DownAfter: 7 * time.Second, Log: zerolog.Nop(),
		Self: func() (netip.Addr, netip.Prefix, netip.Addr, bool) {
			return addr("198.51.100.1"), pfx("10.77.1.0/24"), addr("10.77.1.1"), true
		}})
}

var wgHost = []netip.Prefix{pfx("198.51.100.1/24"), pfx("10.77.1.1/24")}

// Converge brings the device up, makes its peers, then the routes through
// it; a second converge changes nothing, a new key replaces only that peer,
// a peer gone is removed from the device and loses its route.
func TestConvergeWireGuard(t *testing.T) {
	r := &fakeRouter{addrs: wgHost, others: []netip.Prefix{pfx("198.51.100.0/24"), pfx("10.77.1.0/24")},
		routes: []Route{{Dst: pfx("10.77.9.0/24"), Via: addr("198.51.100.9")}}}
	tun := &fakeTunnel{}
	w := newWGWorker(r, tun)
	peers := []events.Heartbeat{
		wgBeat("w2", "203.0.113.2", "10.77.2.0/24", pub(2).String(), "203.0.113.2:51820"),
		wgBeat("w3", "203.0.113.3", "10.77.3.0/24", pub(3).String(), "203.0.113.3:51820"),
	}
	w.Converge(context.Background(), peers)
	if tun.spec != (TunnelSpec{Name: "skein-wg0", PrivateKey: key(1), Port: 51820, Address: pfx("10.77.1.1/32"), Underlay: addr("198.51.100.1")}) {
		t.Errorf("spec %+v", tun.spec)
	}
	want := []Route{{Dst: pfx("10.77.2.0/24"), Dev: "skein-wg0", Src: addr("10.77.1.1")}, {Dst: pfx("10.77.3.0/24"), Dev: "skein-wg0", Src: addr("10.77.1.1")}}
	sortRoutes := func() []Route {
		got := slices.Clone(r.routes)
		slices.SortFunc(got, func(a, b Route) int { return strings.Compare(a.Dst.String(), b.Dst.String()) })
		return got
	}
	if got := sortRoutes(); !slices.Equal(got, want) || !r.forward || len(tun.peers) != 2 {
		t.Fatalf("routes %v (forwarding %v), %d peers", got, r.forward, len(tun.peers))
	}
	s := w.Status()
	if s.Mode != ModeWireGuard || s.WGKey != pub(1).String() || s.WGEndpoint != "198.51.100.1:51820" || len(s.Peers) != 2 || s.Peers[0].State != StateTunnel || s.Peers[0].Endpoint != "203.0.113.2:51820" {
		t.Errorf("status %+v", s)
	}
	tun.calls, r.calls = nil, nil
	w.Converge(context.Background(), peers)
	if len(tun.calls)+len(r.calls) != 0 {
		t.Errorf("a second converge changed %v %v", tun.calls, r.calls)
	}
	peers[1] = wgBeat("w3", "203.0.113.3", "10.77.3.0/24", pub(33).String(), "203.0.113.3:51820")
	w.Converge(context.Background(), peers)
	if !slices.Equal(tun.calls, []string{"remove " + pub(3).String()[:4], "add " + pub(33).String()[:4]}) || len(r.calls) != 0 {
		t.Errorf("a new key: device %v, routes %v", tun.calls, r.calls)
	}
	tun.calls = nil
	w.Converge(context.Background(), peers[:1])
	if !slices.Equal(tun.calls, []string{"remove " + pub(33).String()[:4]}) || !slices.Equal(sortRoutes(), want[:1]) {
		t.Errorf("a peer gone: device %v, routes %v", tun.calls, r.routes)
	}
}

// Without its device the mesh makes no route and leaves none of skein's:
// never a route table half made. The heartbeat says why with the fix and
// does not announce the key, so that peers do not send into the void.
func TestTunnelFailureLeavesNoRoutes(t *testing.T) {
	r := &fakeRouter{addrs: wgHost, others: []netip.Prefix{pfx("198.51.100.0/24"), pfx("10.77.1.0/24")},
		routes: []Route{{Dst: pfx("10.77.2.0/24"), Dev: "skein-wg0", Src: addr("10.77.1.1")}, {Dst: pfx("10.77.9.0/24"), Via: addr("198.51.100.9")}}}
	tun := &fakeTunnel{failUp: tunError("/dev/net/tun", os.ErrNotExist)}
	w := newWGWorker(r, tun)
	w.Converge(context.Background(), []events.Heartbeat{wgBeat("w2", "203.0.113.2", "10.77.2.0/24", pub(2).String(), "203.0.113.2:51820")})
	if len(r.routes) != 0 || slices.ContainsFunc(r.calls, func(c string) bool { return strings.HasPrefix(c, "replace") }) {
		t.Errorf("routes %v after %v", r.routes, r.calls)
	}
	p := w.Problems()
	if len(p) != 1 || !strings.Contains(p[0], "mesh: the WireGuard device is not up: /dev/net/tun does not exist: load the tun module (modprobe tun)") {
		t.Errorf("problems %q", p)
	}
	if s := w.Status(); s.WGKey != "" || s.WGEndpoint != "" {
		t.Errorf("announced %+v", s)
	}
}
