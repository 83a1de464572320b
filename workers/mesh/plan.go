// Package mesh connects the container subnets of the servers: each agent
// learns every peer's address and subnet from the heartbeats and keeps its
// route table in step (routed mode: a route to each peer's container subnet
// via the peer's address on a network they share). Routes skein makes carry
// a protocol number of their own, so that it only ever changes its own.
package mesh

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/validate"
)

// Peer link states, as `skein net` shows them.
const (
	// StateRouted: a route to the peer's subnet via its address is in place.
	StateRouted = "routed"
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
}

// Route is a route to a peer's container subnet.
type Route struct {
	// Dst is the peer's container subnet.
	Dst netip.Prefix
	// Via is the peer's address.
	Via netip.Addr
}

// Link is what the plan decided for one peer.
type Link struct {
	// Peer is the peer server.
	Peer string
	// Subnet is its container subnet, as its heartbeat says.
	Subnet string
	// Via is its address.
	Via string
	// State is routed, same host, waiting or refused.
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
		case via == local.Address:
			l.State = StateSameHost
		case local.Subnet.IsValid() && sn.Overlaps(local.Subnet):
			refuse("its subnet %s overlaps this server's %s: give each server a /24 of its own (skein agent --prepare --subnet)", sn, local.Subnet)
		case taken[sn.Masked()] != "" || overlapsAny(sn, taken) != "":
			other := taken[sn.Masked()]
			if other == "" {
				other = overlapsAny(sn, taken)
			}
			refuse("its subnet %s overlaps %s's: give each server a /24 of its own (skein agent --prepare --subnet)", sn, other)
		case collides(sn, local.Routes) != "":
			refuse("its subnet %s collides with this server's route to %s: give it another subnet, or remove that route", sn, collides(sn, local.Routes))
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

// overlapsAny names the peer whose routed subnet overlaps sn, if any.
func overlapsAny(sn netip.Prefix, taken map[netip.Prefix]string) string {
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
