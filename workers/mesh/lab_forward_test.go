package mesh

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"testing"
	"time"
)

// Forwarding in namespaces with the real kernel's nftables: before the
// limit, a LAN neighbour that is no peer reaches a container through its
// server (the server forwards anything); with it, only the peer's
// container and host do, and the neighbour's packets are dropped; made
// again, the table is the same (one transaction, not added to).
func TestForwardingOnlyFromPeers(t *testing.T) {
	l := newLab(t)
	h1, h2, h4 := l.host(1), l.host(2), l.host(4)
	c1, c2 := l.containerOn(h1), l.containerOn(h2)
	echo(t, h1.container, c1, 7000)
	for _, h := range []*host{h2, h4} {
		l.ip("-n", h.ns, "route", "add", h1.subnet.String(), "via", h1.addr.String())
	}
	l.ip("-n", h1.ns, "route", "add", h2.subnet.String(), "via", h2.addr.String())
	inNS(t, h1.ns, func() {
		if err := (Netlink{}).Forward(); err != nil {
			t.Fatal(err)
		}
	})
	to := netip.AddrPortFrom(c1, 7000)
	reach := func(ns string, from netip.Addr) error {
		return roundTrip(t, ns, from, to, []byte("hello"), time.Second)
	}
	if err := reach(h4.ns, h4.addr); err != nil {
		t.Fatalf("before the limit the neighbour does not reach the container either: %v", err)
	}
	policy := ForwardPolicy{Subnet: h1.subnet, Underlay: h1.addr, Sources: []netip.Prefix{h2.subnet, netip.PrefixFrom(h2.addr, 32)}}
	var before uint64
	for round := 1; round <= 2; round++ {
		var err error
		inNS(t, h1.ns, func() { err = (Netlink{}).LimitForwarding(policy) })
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		// The same policy again keeps the table, and what it counted (found
		// on the machines bed: the mesh's sync every 10 s made it anew and
		// a test read a drop counter back at zero).
		if n := dropped(t, h1.ns); n < before {
			t.Errorf("round %d: the drop counter went from %d to %d: the table was made anew", round, before, n)
		}
		if err := reach(h2.container, c2); err != nil {
			t.Errorf("round %d: the peer's container: %v", round, err)
		}
		if err := reach(h2.ns, h2.addr); err != nil {
			t.Errorf("round %d: the peer's host: %v", round, err)
		}
		if err := reach(h4.ns, h4.addr); err == nil {
			t.Errorf("round %d: the neighbour that is no peer reached the container through s1", round)
		}
		if before = dropped(t, h1.ns); before == 0 {
			t.Errorf("round %d: the neighbour's packets were dropped and not counted", round)
		}
	}
	// A policy that differs is made: without the peer's subnet, its
	// container is dropped too.
	narrower := policy
	narrower.Sources = []netip.Prefix{netip.PrefixFrom(h2.addr, 32)}
	var err error
	inNS(t, h1.ns, func() { err = (Netlink{}).LimitForwarding(narrower) })
	if err != nil {
		t.Fatal(err)
	}
	if err := reach(h2.container, c2); err == nil {
		t.Errorf("the peer's subnet left the policy and its container still reaches the container through s1")
	}
	inNS(t, h1.ns, func() { err = (Netlink{}).LimitForwarding(policy) })
	if err != nil {
		t.Fatal(err)
	}
	want, _ := forwardRules(policy, []string{"eth0"})
	var n int
	inNS(t, h1.ns, func() {
		var c *nftables.Conn
		if c, err = nftables.New(); err != nil {
			return
		}
		t4 := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: ForwardTable}
		var rules []*nftables.Rule
		rules, err = c.GetRules(t4, &nftables.Chain{Name: "forward", Table: t4})
		n = len(rules)
	})
	if err != nil || n != len(want) {
		t.Errorf("after two rounds the chain has %d rules (%v), want %d", n, err, len(want))
	}
}

// dropped reads the packets counted by the drop rules of ns's ForwardTable.
func dropped(t *testing.T, ns string) uint64 {
	t.Helper()
	var n uint64
	inNS(t, ns, func() {
		c, err := nftables.New()
		if err != nil {
			t.Error(err)
			return
		}
		t4 := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: ForwardTable}
		rules, err := c.GetRules(t4, &nftables.Chain{Name: "forward", Table: t4})
		if err != nil {
			t.Error(err)
			return
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					n += ctr.Packets
				}
			}
		}
	})
	return n
}
