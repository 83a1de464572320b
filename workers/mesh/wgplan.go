package mesh

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/skeinhq/skein/events"
)

// Tunneled is a peer of the WireGuard device.
type Tunneled struct {
	// Peer is the peer server's name.
	Peer string
	// Key is the peer's public key.
	Key wgtypes.Key
	// Endpoint is where the peer's device listens, as its heartbeat says.
	Endpoint netip.AddrPort
	// Subnet is the peer's container subnet: what the device sends to the
	// peer and takes from it (its device's address, the bridge's, is in it).
	Subnet netip.Prefix
}

// PlanWireGuard decides the peers of the WireGuard device and the routes
// through it: every other server in wireguard mode whose key and endpoint
// are sound and whose subnet collides with nothing here; every other peer is
// told with the reason and the fix. A pure function.
func PlanWireGuard(local Local, peers []events.Heartbeat, now time.Time, downAfter time.Duration) ([]Route, []Tunneled, []Link) {
	sort.Slice(peers, func(i, j int) bool { return peers[i].Name < peers[j].Name })
	// Keys and subnets announced by anyone, to refuse a copied key and an
	// endpoint the tunnel would have to carry itself.
	holders := map[string][]string{}
	subnets := map[netip.Prefix]string{}
	if local.Subnet.IsValid() {
		subnets[local.Subnet] = "this server"
	}
	for _, p := range peers {
		if p.Name == local.Name || p.Mesh == nil {
			continue
		}
		if p.Mesh.WGKey != "" {
			holders[p.Mesh.WGKey] = append(holders[p.Mesh.WGKey], p.Name)
		}
		if sn, err := netip.ParsePrefix(p.Subnet); err == nil && sn.Addr().Is4() && subnets[sn.Masked()] == "" {
			subnets[sn.Masked()] = p.Name
		}
	}
	var routes []Route
	var tunneled []Tunneled
	var links []Link
	taken := map[netip.Prefix]string{} // subnets given to peers so far, by peer
	for _, p := range peers {
		if p.Name == local.Name || !nameOK(p.Name) {
			continue
		}
		l := Link{Peer: p.Name, Subnet: shorter(p.Subnet), Down: p.Status != "up" || now.Sub(p.Time) > downAfter}
		refuse := func(format string, a ...any) {
			l.State, l.Problem = StateRefused, fmt.Sprintf(format, a...)
		}
		var m events.Mesh
		if p.Mesh != nil {
			m = *p.Mesh
		}
		l.Via = shorter(m.WGEndpoint)
		sn, serr := netip.ParsePrefix(p.Subnet)
		key, kerr := wgtypes.ParseKey(m.WGKey)
		ep, eerr := netip.ParseAddrPort(m.WGEndpoint)
		switch {
		case p.Subnet == "" || m.Mode == "":
			l.State = StateWaiting
		case m.Mode == ModeOff:
			refuse("its mesh is off (%s): give every server --mesh wireguard, with its container bridge on its host", orNone(m.Problem))
		case m.Mode != ModeWireGuard:
			refuse("it uses the %s mesh: give every server the same --mesh (wireguard)", m.Mode)
		case m.WGKey == "" || m.WGEndpoint == "":
			l.State = StateWaiting
		case serr != nil || !sn.Addr().Is4() || sn != sn.Masked():
			refuse("its subnet %s is not an IPv4 network", shown(p.Subnet))
		case kerr != nil || len(m.WGKey) != 44 || key == (wgtypes.Key{}):
			refuse("its WireGuard key %s is not a public key (44 characters of base64): only its agent's own heartbeat can say it; restart that agent, or remove the heartbeat that is not its", shown(m.WGKey))
		case key == local.Key:
			refuse("its WireGuard key is this server's own: one of the two copied the other's state directory; remove %s from that agent's --state and restart it", KeyFile)
		case len(holders[m.WGKey]) > 1:
			refuse("its WireGuard key is also announced by %s: a copied state directory or a forged heartbeat; remove %s from the copy's --state and restart that agent", others(holders[m.WGKey], p.Name), KeyFile)
		case eerr != nil || !ep.Addr().Is4() || !ep.Addr().IsGlobalUnicast() || ep.Port() == 0:
			refuse("its WireGuard endpoint %s is not a unicast IPv4 ADDRESS:PORT: give its agent --address (the address its peers reach it at) and --mesh-port", shown(m.WGEndpoint))
		case ep.Addr() == local.Endpoint.Addr():
			l.State = StateSameHost
		case inSubnet(ep.Addr(), subnets) != "":
			refuse("its WireGuard endpoint %s lies in the container subnet of %s: the tunnel cannot carry its own packets; give its agent --address outside every container subnet", ep, inSubnet(ep.Addr(), subnets))
		case subnetProblem(sn, local, taken) != "":
			refuse("%s", subnetProblem(sn, local, taken))
		default:
			l.State = StateTunnel
			taken[sn] = p.Name
			tunneled = append(tunneled, Tunneled{Peer: p.Name, Key: key, Endpoint: ep, Subnet: sn})
			routes = append(routes, Route{Dst: sn, Dev: local.Device, Src: local.Gateway})
		}
		links = append(links, l)
	}
	return routes, tunneled, links
}

// inSubnet names the holder of the subnet a is in, if any.
func inSubnet(a netip.Addr, subnets map[netip.Prefix]string) string {
	for sn, who := range subnets {
		if sn.Contains(a) {
			return who
		}
	}
	return ""
}

// others lists names but one, for a message.
func others(names []string, but string) string {
	s := ""
	for _, n := range names {
		if n == but {
			continue
		}
		if s != "" {
			s += ", "
		}
		s += n
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "no reason given"
	}
	q := shown(s)
	return q[1 : len(q)-1]
}
