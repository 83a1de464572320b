// Package mesh connects the container subnets of the servers: each agent
// learns every peer's address and subnet from the heartbeats and keeps its
// route table in step. In routed mode a route to each peer's container
// subnet goes via the peer's address on a network they share; in wireguard
// mode it goes through a WireGuard device whose peers are the other servers,
// for servers on different networks. Routes skein makes carry a protocol
// number of their own, so that it only ever changes its own.
package mesh

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/validate"
)

// Peer link states, as `skein net` shows them.
const (
	// StateRouted: a route to the peer's subnet via its address is in place.
	StateRouted = "routed"
	// StateTunnel: the peer is a peer of the WireGuard device and its subnet
	// is routed through it.
	StateTunnel = "tunnel"
	// StateSameHost: the peer shares this server's address; nothing to route.
	StateSameHost = "same host"
	// StateWaiting: the peer's heartbeat does not say its subnet or address yet.
	StateWaiting = "waiting"
	// StateRefused: the peer cannot be routed; Problem says why and the fix.
	StateRefused = "refused"
)

// Local is what the plan needs to know of this server.
type Local struct {
	// Name is this server's name.
	Name string
	// Address is this server's address toward its peers.
	Address netip.Addr
	// Subnet is this server's container subnet.
	Subnet netip.Prefix
	// Connected are the networks of this server's interfaces.
	Connected []netip.Prefix
	// Routes are the destinations of the routes skein did not make.
	Routes []netip.Prefix
	// Gateway is the container bridge's address: the WireGuard device
	// carries it too, as the source of this host's own traffic to peers.
	Gateway netip.Addr
	// Device is the WireGuard device's name (wireguard mode).
	Device string
	// Key is this server's WireGuard public key (wireguard mode).
	Key wgtypes.Key
	// Endpoint is where this server's WireGuard device listens (wireguard mode).
	Endpoint netip.AddrPort
}

// Route is a route to a peer's container subnet: via the peer's address
// (routed mode) or through a device, from a source address (wireguard mode).
type Route struct {
	// Dst is the peer's container subnet.
	Dst netip.Prefix
	// Via is the peer's address; unset for a route through Dev.
	Via netip.Addr
	// Dev is the device the route goes through when Via is unset.
	Dev string
	// Src is the source address of this host's own packets on a route through Dev.
	Src netip.Addr
}

// String is the route as `ip route` would say it.
func (r Route) String() string {
	if r.Via.IsValid() {
		return r.Dst.String() + " via " + r.Via.String()
	}
	return r.Dst.String() + " dev " + r.Dev + " src " + r.Src.String()
}

// Link is what the plan decided for one peer.
type Link struct {
	// Peer is the peer server.
	Peer string
	// Subnet is its container subnet, as its heartbeat says.
	Subnet string
	// Via is its address (routed) or its WireGuard endpoint (wireguard).
	Via string
	// State is routed, tunnel, same host, waiting or refused.
	State string
	// Problem says why a peer is refused, and the fix.
	Problem string
	// Down says the peer's agent is down: its route is kept until it is removed.
	Down bool
}

// Plan decides the routes to the peers' container subnets: a route for each
// peer on a network this server shares, whose subnet collides with nothing
// here; every other peer is told with the reason. A pure function.
func Plan(local Local, peers []events.Heartbeat, now time.Time, downAfter time.Duration) ([]Route, []Link) {
	sort.Slice(peers, func(i, j int) bool { return peers[i].Name < peers[j].Name })
	var routes []Route
	var links []Link
	taken := map[netip.Prefix]string{} // subnets routed so far, by peer
	for _, p := range peers {
		if p.Name == local.Name || !nameOK(p.Name) {
			continue
		}
		l := Link{Peer: p.Name, Subnet: shorter(p.Subnet), Via: shorter(p.Address), Down: p.Status != "up" || now.Sub(p.Time) > downAfter}
		refuse := func(format string, a ...any) {
			l.State, l.Problem = StateRefused, fmt.Sprintf(format, a...)
		}
		sn, serr := netip.ParsePrefix(p.Subnet)
		via, verr := netip.ParseAddr(p.Address)
		switch {
		case p.Subnet == "" || p.Address == "":
			l.State = StateWaiting
		case serr != nil || !sn.Addr().Is4() || sn != sn.Masked():
			refuse("its subnet %s is not an IPv4 network", shown(p.Subnet))
		case verr != nil || !via.Is4() || !via.IsGlobalUnicast():
			refuse("its address %s is not a unicast IPv4 address: give its agent --address", shown(p.Address))
		case p.Mesh != nil && p.Mesh.Mode == ModeWireGuard:
			refuse("it connects by WireGuard (--mesh wireguard): give every server the same --mesh")
		case via == local.Address:
			l.State = StateSameHost
		case subnetProblem(sn, local, taken) != "":
			refuse("%s", subnetProblem(sn, local, taken))
		case !onLink(via, local.Connected):
			refuse("its address %s is on no network of this server (%s): servers on different networks need the wireguard mode", via, prefixes(local.Connected))
		default:
			l.State = StateRouted
			taken[sn] = p.Name
			routes = append(routes, Route{Dst: sn, Via: via})
		}
		links = append(links, l)
	}
	return routes, links
}

// A peer's heartbeat lands in this server's own, which the store validates:
// one written past the store's checks must not make this server's invalid.
const shownMax = 64

// nameOK says whether name is a server's name; a peer without one is left out.
func nameOK(name string) bool { return validate.Name.Check(name) == nil }

// shown quotes s, cut short, in ASCII, for a problem's words.
func shown(s string) string { return strconv.QuoteToASCII(shorter(s)) }

// shorter cuts s to shownMax bytes.
func shorter(s string) string {
	if len(s) > shownMax {
		return s[:shownMax] + "..."
	}
	return s
}

// subnetProblem says why a route to the peer subnet sn would fight this
// server's subnet, a subnet already given to another peer (taken) or one of
// this server's routes, with the fix; empty when it fights none.
func subnetProblem(sn netip.Prefix, local Local, taken map[netip.Prefix]string) string {
	if local.Subnet.IsValid() && sn.Overlaps(local.Subnet) {
		return fmt.Sprintf("its subnet %s overlaps this server's %s: give each server a /24 of its own (skein agent --prepare --subnet)", sn, local.Subnet)
	}
	if other := overlapsAny(sn, taken); other != "" {
		return fmt.Sprintf("its subnet %s overlaps %s's: give each server a /24 of its own (skein agent --prepare --subnet)", sn, other)
	}
	if r := collides(sn, local.Routes); r != "" {
		return fmt.Sprintf("its subnet %s collides with this server's route to %s: give it another subnet, or remove that route", sn, r)
	}
	return ""
}

// overlapsAny names the peer whose routed subnet overlaps sn, if any.
func overlapsAny(sn netip.Prefix, taken map[netip.Prefix]string) string {
	if peer := taken[sn]; peer != "" {
		return peer
	}
	for p, peer := range taken {
		if p.Overlaps(sn) {
			return peer
		}
	}
	return ""
}

// collides names a route of this server that a route to sn would fight:
// one to sn itself or to a part of it (a wider route, such as the default
// one, only gives way to the more specific one).
func collides(sn netip.Prefix, routes []netip.Prefix) string {
	for _, r := range routes {
		if r.Bits() >= sn.Bits() && sn.Contains(r.Addr()) {
			return r.String()
		}
	}
	return ""
}

func onLink(a netip.Addr, nets []netip.Prefix) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

func prefixes(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "none"
	}
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		s += p.String()
	}
	return s
}
