package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"

	"github.com/skeinhq/skein/internal/validate"
)

// ForwardTable is the nftables table (family ip) in which the mesh limits
// what this host forwards from its peers.
const ForwardTable = "skein_mesh"

// ForwardPolicy is what this host forwards of what comes in from the
// interfaces that face its peers (the LAN's, the WireGuard device): replies,
// published ports (DNAT), and the peers' containers and hosts reaching this
// server's containers; nothing else. Forwarding is on for the mesh, and
// without this a LAN neighbour could route through the host anywhere it
// reaches.
type ForwardPolicy struct {
	// Subnet is this server's container subnet.
	Subnet netip.Prefix
	// Underlay is this server's address toward its peers: the interface that
	// holds it faces them.
	Underlay netip.Addr
	// Devices are more interfaces that face the peers (the WireGuard device).
	Devices []string
	// Sources are the peers' container subnets and their hosts' addresses.
	Sources []netip.Prefix
}

// forwardRule is one rule of the forward chain, in order; zero fields match anything.
type forwardRule struct {
	// state matches established or related connections; dnat, ones whose
	// destination was translated (a published port).
	state, dnat bool
	iif         string
	src, dst    netip.Prefix
	drop        bool
}

// forwardRules are the rules of p with uplinks the interfaces that face the
// peers; an interface name that is not one is refused.
func forwardRules(p ForwardPolicy, uplinks []string) ([]forwardRule, error) {
	if !p.Subnet.IsValid() || !p.Subnet.Addr().Is4() {
		return nil, fmt.Errorf("forwarding rules: the container subnet %v is not an IPv4 network", p.Subnet)
	}
	if len(uplinks) == 0 {
		return nil, errors.New("forwarding rules: no interface faces the peers")
	}
	var ifs []string
	for _, u := range uplinks {
		if err := validate.IfName.Check(u); err != nil {
			return nil, fmt.Errorf("forwarding rules: interface %q: %w", u, err)
		}
		if !slices.Contains(ifs, u) {
			ifs = append(ifs, u)
		}
	}
	var srcs []netip.Prefix
	for _, s := range p.Sources {
		if s.IsValid() && s.Addr().Is4() && !slices.Contains(srcs, s.Masked()) {
			srcs = append(srcs, s.Masked())
		}
	}
	slices.SortFunc(srcs, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	rules := []forwardRule{{state: true}, {dnat: true}}
	for _, in := range ifs {
		for _, s := range srcs {
			rules = append(rules, forwardRule{iif: in, src: s, dst: p.Subnet.Masked()})
		}
	}
	for _, in := range ifs {
		rules = append(rules, forwardRule{iif: in, drop: true})
	}
	return rules, nil
}

// RenderForward is the nft script of p's table, made anew in one
// transaction: what LimitForwarding installs, for reading and for tests.
func RenderForward(p ForwardPolicy, uplinks []string) (string, error) {
	rules, err := forwardRules(p, uplinks)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s\ndelete table ip %s\ntable ip %s {\n", ForwardTable, ForwardTable, ForwardTable)
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n")
	for _, r := range rules {
		var m []string
		switch {
		case r.state:
			m = append(m, "ct state established,related")
		case r.dnat:
			m = append(m, "ct status dnat")
		}
		if r.iif != "" {
			m = append(m, `iifname "`+r.iif+`"`)
		}
		if r.src.IsValid() {
			m = append(m, "ip saddr "+r.src.String())
		}
		if r.dst.IsValid() {
			m = append(m, "ip daddr "+r.dst.String())
		}
		verdict := "accept"
		if r.drop {
			verdict = "counter drop"
		}
		b.WriteString("\t\t" + strings.Join(append(m, verdict), " ") + "\n")
	}
	b.WriteString("\t}\n}\n")
	return b.String(), nil
}

// LimitForwarding makes this host's table ForwardTable the policy's, in one
// netlink transaction (no nft program needed).
func (Netlink) LimitForwarding(p ForwardPolicy) error {
	name, err := linkOf(p.Underlay)
	if err != nil {
		return fmt.Errorf("the interface of %s: %w", p.Underlay, err)
	}
	rules, err := forwardRules(p, append(slices.Clone(p.Devices), name))
	if err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	// Made again only when it differs: a table made anew counts its drops
	// from zero, and the mesh syncs every 10 s.
	if holdsRules(c, rules) {
		return nil
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: ForwardTable})
	c.FlushTable(t)
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.exprs()})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: making table %s: %w", ForwardTable, err)
	}
	return nil
}

// holdsRules says whether ForwardTable's forward chain is a filter hook on
// forward that accepts by default and holds exactly rules, counters aside.
func holdsRules(c *nftables.Conn, rules []forwardRule) bool {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: ForwardTable}
	ch, err := c.ListChain(t, "forward")
	if err != nil || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward || ch.Type != nftables.ChainTypeFilter ||
		ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
		return false
	}
	have, err := c.GetRules(t, ch)
	if err != nil || len(have) != len(rules) {
		return false
	}
	for i, r := range have {
		got := slices.Clone(r.Exprs)
		for j, e := range got {
			if _, ok := e.(*expr.Counter); ok {
				got[j] = &expr.Counter{}
			}
		}
		if !reflect.DeepEqual(got, rules[i].exprs()) {
			return false
		}
	}
	return true
}

// ipsDstNAT is IPS_DST_NAT of a connection's status (nf_conntrack_common.h).
const ipsDstNAT = 1 << 5

// exprs is the rule as nftables expressions.
func (r forwardRule) exprs() []expr.Any {
	var out []expr.Any
	bits := func(key expr.CtKey, mask uint32) {
		m := make([]byte, 4)
		binary.NativeEndian.PutUint32(m, mask)
		out = append(out, &expr.Ct{Register: 1, Key: key},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)})
	}
	if r.state {
		bits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
	}
	if r.dnat {
		bits(expr.CtKeySTATUS, ipsDstNAT)
	}
	if r.iif != "" {
		name := make([]byte, 16) // IFNAMSIZ, NUL-padded
		copy(name, r.iif)
		out = append(out, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name})
	}
	prefix := func(offset uint32, p netip.Prefix) {
		m := make([]byte, 4)
		if p.Bits() > 0 {
			binary.BigEndian.PutUint32(m, ^uint32(0)<<(32-p.Bits()))
		}
		a := p.Masked().Addr().As4()
		out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]})
	}
	if r.src.IsValid() {
		prefix(12, r.src) // the IPv4 header's source address
	}
	if r.dst.IsValid() {
		prefix(16, r.dst) // and its destination
	}
	if r.drop {
		out = append(out, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
	} else {
		out = append(out, &expr.Verdict{Kind: expr.VerdictAccept})
	}
	return out
}

// linkOf is the name of the interface that holds a.
func linkOf(a netip.Addr) (string, error) {
	list, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", err
	}
	for _, x := range list {
		if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
			l, err := netlink.LinkByIndex(x.LinkIndex)
			if err != nil {
				return "", err
			}
			return l.Attrs().Name, nil
		}
	}
	return "", errors.New("no interface holds it")
}
