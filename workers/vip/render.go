// Package vip keeps a server's side of its floating IPs: keepalived on the
// server itself (not in a container), VRRP version 3 unicast to the peer,
// configured from skein's records by a pure function, checked with
// keepalived -t, and supervised: a keepalived that dies leaves no address
// behind before it is started again.
package vip

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/validate"
)

// Priorities: the preferred server takes the IP first; neither preempts.
const (
	preferredPriority = 150
	backupPriority    = 100
)

// Check refuses a side that cannot be rendered as it is.
func Check(v events.VIPAdd) error {
	if err := validate.Struct(v); err != nil {
		return err
	}
	// validate.Struct passes empty strings; keepalived cannot use them.
	for what, s := range map[string]string{"name": v.Name, "interface": v.Interface} {
		if s == "" {
			return fmt.Errorf("%w: the %s is empty", validate.ErrInvalid, what)
		}
	}
	ip, err := netip.ParseAddr(v.IP)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("%w: %q is not an IPv4 address", validate.ErrInvalid, v.IP)
	}
	if v.Prefix < 8 || v.Prefix > 30 {
		return fmt.Errorf("%w: prefix /%d: want 8 to 30", validate.ErrInvalid, v.Prefix)
	}
	net := netip.PrefixFrom(ip, v.Prefix).Masked()
	for what, a := range map[string]string{"self": v.Self, "peer": v.Peer} {
		addr, err := netip.ParseAddr(a)
		if err != nil || !net.Contains(addr) {
			return fmt.Errorf("%w: %s address %q is not in %s", validate.ErrInvalid, what, a, net)
		}
		if addr == ip {
			return fmt.Errorf("%w: the floating IP %s is the address of the %s server: pick a free address in %s", validate.ErrInvalid, ip, what, net)
		}
	}
	if v.Self == v.Peer {
		return fmt.Errorf("%w: self and peer are both %s", validate.ErrInvalid, v.Self)
	}
	if ip == net.Addr() || ip == lastAddr(net) {
		return fmt.Errorf("%w: %s is the network's or the broadcast address of %s", validate.ErrInvalid, ip, net)
	}
	if v.RouterID < 1 || v.RouterID > 255 {
		return fmt.Errorf("%w: router id %d: want 1 to 255", validate.ErrInvalid, v.RouterID)
	}
	if len(v.Check) > 0 && v.CheckService != "" {
		return fmt.Errorf("%w: give a check command or a service to follow, not both", validate.ErrInvalid)
	}
	for _, a := range v.Check {
		if a == "" {
			return fmt.Errorf("%w: the check command has an empty word", validate.ErrInvalid)
		}
	}
	return nil
}

// checked says whether a side gives the IP up while a check fails.
func checked(v events.VIPAdd) bool { return len(v.Check) > 0 || v.CheckService != "" }

// CheckFile is where the agent writes a side's check result for keepalived
// (0 passing, 1 failing).
func CheckFile(dir, name string) string { return filepath.Join(dir, "check-"+name) }

// safeDir is what a directory may look like to be quoted in keepalived.conf.
var safeDir = regexp.MustCompile(`^/[A-Za-z0-9_./-]*$`)

// lastAddr is the broadcast address of an IPv4 network.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// Render renders keepalived.conf for a server's sides of its floating IPs:
// VRRP v3, adverts every 0.1 s, unicast to the peer, both sides BACKUP with
// nopreempt (the preferred one, with the higher priority, wins the first
// election; after that the IP stays where it is until its holder fails).
// A side with a check tracks its check file (weight 0: a failing check puts
// the instance in FAULT, which gives the IP up at once). dir holds the check
// files. A pure function of the records.
func Render(server, dir string, vips []events.VIPAdd) (string, error) {
	if !validate.Name.Valid(server) {
		return "", fmt.Errorf("%w: server %q", validate.ErrInvalid, server)
	}
	if !safeDir.MatchString(dir) {
		return "", fmt.Errorf("%w: state directory %q: want an absolute path of letters, digits and _ . / -", validate.ErrInvalid, dir)
	}
	sorted := append([]events.VIPAdd(nil), vips...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	ids := map[int]string{}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by skein for server %s; skein rewrites it.\n", server)
	fmt.Fprintf(&b, "global_defs {\n    router_id skein_%s\n    vrrp_version 3\n    vrrp_garp_master_delay 1\n    vrrp_garp_master_repeat 3\n    script_user root\n    enable_script_security\n}\n", strings.ReplaceAll(server, "-", "_"))
	for _, v := range sorted {
		if err := Check(v); err != nil {
			return "", fmt.Errorf("floating IP %s: %w", v.Name, err)
		}
		if other, dup := ids[v.RouterID]; dup {
			return "", fmt.Errorf("%w: floating IPs %s and %s share router id %d", validate.ErrInvalid, other, v.Name, v.RouterID)
		}
		ids[v.RouterID] = v.Name
		prio := backupPriority
		if v.Preferred {
			prio = preferredPriority
		}
		id := strings.ReplaceAll(v.Name, "-", "_")
		if checked(v) {
			fmt.Fprintf(&b, "\ntrack_file skein_%s_check {\n    file \"%s\"\n    weight 0\n}\n", id, CheckFile(dir, v.Name))
		}
		fmt.Fprintf(&b, "\nvrrp_instance skein_%s {\n", id)
		fmt.Fprintf(&b, "    state BACKUP\n    interface %s\n    virtual_router_id %d\n    priority %d\n    nopreempt\n    advert_int 0.1\n", v.Interface, v.RouterID, prio)
		fmt.Fprintf(&b, "    unicast_src_ip %s\n    unicast_peer {\n        %s\n    }\n", v.Self, v.Peer)
		if checked(v) {
			fmt.Fprintf(&b, "    track_file {\n        skein_%s_check weight 0\n    }\n", id)
		}
		fmt.Fprintf(&b, "    virtual_ipaddress {\n        %s/%d dev %s\n    }\n}\n", v.IP, v.Prefix, v.Interface)
	}
	return b.String(), nil
}
