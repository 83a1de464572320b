package mesh

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Protocol marks the routes skein makes (`ip route show proto 77`): it
// lists, changes and removes those only.
const Protocol = 77

// Router is this server's route table, as the mesh uses it.
type Router interface {
	// Routes are the routes skein made.
	Routes() ([]Route, error)
	// Replace makes or changes the route to r.Dst.
	Replace(r Route) error
	// Delete removes a route skein made.
	Delete(r Route) error
	// Local reads the addresses of this server's interfaces (with their
	// networks' lengths) and the destinations of the routes skein did not make.
	Local() (addrs, others []netip.Prefix, err error)
	// Forward turns on IPv4 forwarding, when it is off.
	Forward() error
	// LimitForwarding limits what is forwarded from the peers' side to the
	// policy's; before Forward, always.
	LimitForwarding(p ForwardPolicy) error
}

// Netlink is the Router of the kernel this agent runs on.
type Netlink struct{}

var _ Router = Netlink{}

// Routes lists the main table's routes of protocol Protocol.
func (Netlink) Routes() ([]Route, error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: Protocol}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	var out []Route
	for _, r := range rs {
		dst, ok := prefixOf(r.Dst)
		if !ok {
			continue
		}
		if via, vok := netip.AddrFromSlice(r.Gw); vok {
			out = append(out, Route{Dst: dst, Via: via.Unmap()})
			continue
		}
		// A route through a device: the WireGuard one.
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		src, _ := netip.AddrFromSlice(r.Src)
		out = append(out, Route{Dst: dst, Dev: l.Attrs().Name, Src: src.Unmap()})
	}
	return out, nil
}

// Replace makes or changes the route, marked as skein's.
func (Netlink) Replace(r Route) error {
	nr, err := kernelRoute(r)
	if err == nil {
		err = netlink.RouteReplace(nr)
	}
	if err != nil {
		return fmt.Errorf("route to %s: %w", r, err)
	}
	return nil
}

// Delete removes the route, when it is still skein's.
func (Netlink) Delete(r Route) error {
	nr, err := kernelRoute(r)
	if errors.Is(err, errNoDevice) {
		return nil // the device went, and its routes with it
	}
	if err == nil {
		err = netlink.RouteDel(nr)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("removing the route to %s: %w", r, err)
	}
	return nil
}

var errNoDevice = errors.New("no such device")

// kernelRoute is r for netlink: via a gateway, or through a device from a source.
func kernelRoute(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{Dst: ipNet(r.Dst), Protocol: Protocol, Table: unix.RT_TABLE_MAIN}
	if r.Via.IsValid() {
		nr.Gw = net.IP(r.Via.AsSlice())
		return nr, nil
	}
	l, err := netlink.LinkByName(r.Dev)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", r.Dev, errNoDevice)
	}
	nr.LinkIndex, nr.Scope = l.Attrs().Index, netlink.SCOPE_LINK
	if r.Src.IsValid() {
		nr.Src = net.IP(r.Src.AsSlice())
	}
	return nr, nil
}

// Local reads the interfaces' addresses and the main table's other routes.
func (Netlink) Local() (addrs, others []netip.Prefix, err error) {
	list, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range list {
		if p, ok := prefixOf(a.IPNet); ok && !p.Addr().IsLoopback() {
			addrs = append(addrs, p)
		}
	}
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range rs {
		if r.Protocol == Protocol {
			continue
		}
		if p, ok := prefixOf(r.Dst); ok {
			others = append(others, p)
		}
	}
	return addrs, others, nil
}

// Forward turns on IPv4 forwarding.
func (Netlink) Forward() error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("turning on IPv4 forwarding: %w (set net.ipv4.ip_forward = 1)", err)
	}
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}
