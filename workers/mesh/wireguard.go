package mesh

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// WireGuard defaults.
const (
	// DefaultPort is the WireGuard device's UDP port.
	DefaultPort = 51820
	// DefaultDevice is the WireGuard device's name.
	DefaultDevice = "skein-wg0"
	// KeyFile is the private key's file in the agent's state directory.
	KeyFile = "wireguard.key"
	// Keepalive keeps a NAT's mapping open toward each peer.
	Keepalive = 25 * time.Second
	// deferKeepalive is how long the server with the greater key waits
	// before it turns keepalives on toward a new peer, which starts a
	// handshake: two servers that add each other at once would otherwise
	// both initiate, spoil each other's handshake and wait out WireGuard's
	// 5 s retry.
	deferKeepalive = 500 * time.Millisecond
	// overhead is what WireGuard adds to a packet over IPv6, the larger
	// header: IPv6 40, UDP 8, WireGuard 32.
	overhead = 80
	// maxMTU is the device's MTU on an underlay of 1500 bytes, the internet's.
	maxMTU = 1420
	// minMTU is the smallest MTU IPv6 allows, and the floor here.
	minMTU = 1280
)

// Tunnel is the WireGuard device the mesh keeps: wireguard-go over TUN, or
// the kernel's device where the kernel has WireGuard.
type Tunnel interface {
	// Up makes the device as spec says, or leaves it when it already is:
	// its interface, key, port, MTU and address, link up.
	Up(spec TunnelSpec) error
	// Configure applies a change of the device's peers.
	Configure(cfg wgtypes.Config) error
	// Peers are the device's peers with their endpoints, last handshakes
	// and counters.
	Peers() ([]wgtypes.Peer, error)
	// Close removes the device.
	Close() error
}

// TunnelSpec is what the WireGuard device is made of.
type TunnelSpec struct {
	// Name is the interface's name.
	Name string
	// PrivateKey is the server's private key.
	PrivateKey wgtypes.Key
	// Port is the UDP port the device listens on.
	Port int
	// Address is the device's own address: the container bridge's, /32.
	Address netip.Prefix
	// Underlay is this server's address toward its peers: the MTU derives
	// from its interface's.
	Underlay netip.Addr
}

// LoadOrCreateKey reads the WireGuard private key in path, or makes one and
// writes it there (mode 0600, its directory 0700) when there is none. A key
// file others may read is refused: the key would not be this server's alone.
func LoadOrCreateKey(path string) (wgtypes.Key, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return wgtypes.Key{}, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return wgtypes.Key{}, fmt.Errorf("wireguard key: %w", err)
		}
		// O_EXCL: two agents started on one state directory keep one key.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return LoadOrCreateKey(path)
		}
		if err != nil {
			return wgtypes.Key{}, fmt.Errorf("wireguard key: %w", err)
		}
		_, werr := f.WriteString(k.String() + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(path)
			return wgtypes.Key{}, fmt.Errorf("wireguard key: %w", werr)
		}
		return k, nil
	}
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wireguard key: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return wgtypes.Key{}, fmt.Errorf("wireguard key: %s may be read by others (mode %v): chmod 600 %s, or remove it to make a new key", path, fi.Mode().Perm(), path)
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wireguard key: %s does not hold a WireGuard key (base64, as wg genkey writes): remove it to make a new one", path)
	}
	return k, nil
}

// tunnelMTU is the device's MTU over an underlay of mtu bytes (0: unknown):
// WireGuard's overhead below it, so that no packet it sends is fragmented,
// and no more than 1420, so that a jumbo LAN does not make packets too big
// for the internet between servers.
func tunnelMTU(mtu int) int {
	if mtu <= 0 || mtu-overhead > maxMTU {
		return maxMTU
	}
	return max(mtu-overhead, minMTU)
}

// peerDelta is the change that makes the device's peers (have) those of the
// plan (want), touching no peer that is already right: a peer that is not
// wanted is removed, a new one added, a changed one updated in place (its
// session kept). An endpoint is set when the plan's differs from the one
// last set (applied), not from the device's: the device follows a peer that
// roams behind a NAT, and that must not be undone. A new peer gets its
// keepalives, which start the handshake, at once when this server's key
// (self) is the lesser of the two; otherwise it is deferred, and a later
// delta turns them on once the peer is no longer held.
func peerDelta(self wgtypes.Key, want []Tunneled, have []wgtypes.Peer, applied map[wgtypes.Key]netip.AddrPort, hold map[wgtypes.Key]bool) (cfg wgtypes.Config, deferred []wgtypes.Key) {
	wanted := map[wgtypes.Key]Tunneled{}
	for _, t := range want {
		wanted[t.Key] = t
	}
	byKey := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range have {
		byKey[p.PublicKey] = p
		if _, ok := wanted[p.PublicKey]; !ok {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
		}
	}
	keepalive := Keepalive
	for _, t := range want {
		p, ok := byKey[t.Key]
		allowed := []net.IPNet{ipNetOf(t.Subnet)}
		if !ok {
			pc := wgtypes.PeerConfig{PublicKey: t.Key, Endpoint: net.UDPAddrFromAddrPort(t.Endpoint), ReplaceAllowedIPs: true, AllowedIPs: allowed}
			if bytes.Compare(self[:], t.Key[:]) < 0 {
				pc.PersistentKeepaliveInterval = &keepalive
			} else {
				deferred = append(deferred, t.Key)
			}
			cfg.Peers = append(cfg.Peers, pc)
			continue
		}
		pc := wgtypes.PeerConfig{PublicKey: t.Key, UpdateOnly: true}
		changed := false
		if a, ok := applied[t.Key]; !ok || a != t.Endpoint || p.Endpoint == nil {
			pc.Endpoint, changed = net.UDPAddrFromAddrPort(t.Endpoint), true
		}
		if p.PersistentKeepaliveInterval != keepalive && !hold[t.Key] {
			pc.PersistentKeepaliveInterval, changed = &keepalive, true
		}
		if !sameNets(p.AllowedIPs, allowed) {
			pc.ReplaceAllowedIPs, pc.AllowedIPs, changed = true, allowed, true
		}
		if changed {
			cfg.Peers = append(cfg.Peers, pc)
		}
	}
	return cfg, deferred
}

func sameNets(a, b []net.IPNet) bool {
	key := func(ns []net.IPNet) []string {
		out := make([]string, 0, len(ns))
		for _, n := range ns {
			out = append(out, n.String())
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}

func ipNetOf(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// uapiSet writes cfg in WireGuard's configuration protocol ("set"), as
// wireguard-go's IpcSet takes it
// (https://www.wireguard.com/xplatform/#configuration-protocol).
func uapiSet(cfg wgtypes.Config) string {
	var b strings.Builder
	if cfg.PrivateKey != nil {
		fmt.Fprintf(&b, "private_key=%s\n", hex.EncodeToString(cfg.PrivateKey[:]))
	}
	if cfg.ListenPort != nil {
		fmt.Fprintf(&b, "listen_port=%d\n", *cfg.ListenPort)
	}
	if cfg.ReplacePeers {
		b.WriteString("replace_peers=true\n")
	}
	for _, p := range cfg.Peers {
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if p.Remove {
			b.WriteString("remove=true\n")
			continue
		}
		if p.UpdateOnly {
			b.WriteString("update_only=true\n")
		}
		if p.Endpoint != nil {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint.AddrPort())
		}
		if p.PersistentKeepaliveInterval != nil {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepaliveInterval.Seconds()))
		}
		if p.ReplaceAllowedIPs {
			b.WriteString("replace_allowed_ips=true\n")
		}
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a.String())
		}
	}
	return b.String()
}

// parseUAPI reads the peers out of the configuration protocol's "get"
// answer. The device's private key, in the same answer, is skipped: it goes
// nowhere.
func parseUAPI(s string) ([]wgtypes.Peer, error) {
	var peers []wgtypes.Peer
	var p *wgtypes.Peer
	var sec, nsec int64
	flush := func() {
		if p != nil && (sec != 0 || nsec != 0) {
			p.LastHandshakeTime = time.Unix(sec, nsec)
		}
		sec, nsec = 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("wireguard: a line of the device's configuration is not key=value: %q", line)
		}
		if k == "public_key" {
			flush()
			key, err := hexKey(v)
			if err != nil {
				return nil, err
			}
			peers = append(peers, wgtypes.Peer{PublicKey: key})
			p = &peers[len(peers)-1]
			continue
		}
		if p == nil {
			continue // the device's own lines: private_key, listen_port, fwmark
		}
		var err error
		switch k {
		case "endpoint":
			var ap netip.AddrPort
			if ap, err = netip.ParseAddrPort(v); err == nil {
				p.Endpoint = net.UDPAddrFromAddrPort(ap)
			}
		case "last_handshake_time_sec":
			sec, err = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, err = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			p.ReceiveBytes, err = strconv.ParseInt(v, 10, 64)
		case "tx_bytes":
			p.TransmitBytes, err = strconv.ParseInt(v, 10, 64)
		case "persistent_keepalive_interval":
			var n int64
			n, err = strconv.ParseInt(v, 10, 64)
			p.PersistentKeepaliveInterval = time.Duration(n) * time.Second
		case "allowed_ip":
			var pf netip.Prefix
			if pf, err = netip.ParsePrefix(v); err == nil {
				p.AllowedIPs = append(p.AllowedIPs, ipNetOf(pf))
			}
		case "protocol_version":
			p.ProtocolVersion, err = strconv.Atoi(v)
		}
		if err != nil {
			return nil, fmt.Errorf("wireguard: the device's %s %q: %w", k, v, err)
		}
	}
	flush()
	return peers, sc.Err()
}

func hexKey(s string) (wgtypes.Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != wgtypes.KeyLen {
		return wgtypes.Key{}, fmt.Errorf("wireguard: the device's key %q is not 32 bytes of hex", s)
	}
	return wgtypes.NewKey(b)
}
