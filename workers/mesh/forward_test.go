package mesh

import (
	"context"
	"errors"
	"flag"
	"net/netip"
	"strings"
	"testing"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

var routedPolicy = ForwardPolicy{Subnet: pfx("10.77.1.0/24"), Underlay: addr("10.0.0.11"),
	Sources: []netip.Prefix{pfx("10.77.3.0/24"), pfx("10.0.0.12/32"), pfx("10.77.2.0/24"), pfx("10.0.0.13/32"), pfx("10.77.2.0/24")}}

// The forward chain, as nft would list it: replies and published ports
// pass, the peers' containers and hosts reach this server's containers, and
// nothing else that comes in from the peers' side is forwarded.
func TestRenderForward(t *testing.T) {
	got, err := RenderForward(routedPolicy, []string{"eth0"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "forward-routed", got, *update)
	wg := routedPolicy
	wg.Sources = wg.Sources[:2]
	if got, err = RenderForward(wg, []string{"skein-wg0", "eth0"}); err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "forward-wireguard", got, *update)
}

// An interface name, a subnet or no interface at all that would make a
// wrong table is refused, naming it.
func TestRenderForwardRefuses(t *testing.T) {
	for _, tc := range []struct {
		p       ForwardPolicy
		uplinks []string
		says    string
	}{
		{routedPolicy, []string{`eth0" accept`}, "interface"},
		{routedPolicy, []string{"eth0\n}"}, "interface"},
		{routedPolicy, []string{"an-interface-name-too-long"}, "interface"},
		{routedPolicy, nil, "no interface"},
		{ForwardPolicy{Subnet: pfx("fd00::/64")}, []string{"eth0"}, "not an IPv4 network"},
	} {
		if _, err := RenderForward(tc.p, tc.uplinks); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%v %q: %v, want it refused saying %q", tc.p.Subnet, tc.uplinks, err, tc.says)
		}
	}
}

// FuzzRenderForward: whatever the interface names, the chain has its fixed
// shape (one line per rule, no other statement): a name is one of the
// interfaces' or refused.
func FuzzRenderForward(f *testing.F) {
	for _, s := range []string{"eth0", "skein-wg0", `a" drop`, "x\ny", "{", "br.10"} {
		f.Add(s, "eth1")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		got, err := RenderForward(routedPolicy, []string{a, b})
		if err != nil {
			return
		}
		uplinks := 2
		if a == b {
			uplinks = 1
		}
		lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
		// 3 table lines, 2 chain lines, 2 ct rules, 4 sources and a drop per uplink, 2 closing braces.
		if want := 3 + 2 + 2 + uplinks*5 + 2; len(lines) != want {
			t.Fatalf("%d lines, want %d:\n%s", len(lines), want, got)
		}
		for _, l := range lines[7 : 7+uplinks*5] {
			if !strings.HasPrefix(l, "\t\tiifname \""+a+"\" ") && !strings.HasPrefix(l, "\t\tiifname \""+b+"\" ") {
				t.Fatalf("a line that is not a rule of an uplink: %q", l)
			}
		}
	})
}

// Converge limits forwarding to the peers' containers and hosts before it
// turns forwarding on; where that cannot be done it turns nothing on and
// makes no route, and says why.
func TestConvergeLimitsForwarding(t *testing.T) {
	r := &fakeRouter{addrs: []netip.Prefix{pfx("10.0.0.11/24"), pfx("10.77.1.1/24")}, others: []netip.Prefix{pfx("10.0.0.0/24"), pfx("10.77.1.0/24")}}
	w := newWorker(r, "10.77.1.1")
	peers := []events.Heartbeat{beat("m2", "10.0.0.12", "10.77.2.0/24"), beat("m3", "10.0.0.13", "10.77.3.0/24")}
	w.Converge(context.Background(), peers)
	if r.limited == nil || !r.forward || len(r.routes) != 2 {
		t.Fatalf("limited %+v, forwarding %v, routes %v", r.limited, r.forward, r.routes)
	}
	want := []netip.Prefix{pfx("10.77.2.0/24"), pfx("10.0.0.12/32"), pfx("10.77.3.0/24"), pfx("10.0.0.13/32")}
	if r.limited.Subnet != pfx("10.77.1.0/24") || r.limited.Underlay != addr("10.0.0.11") || len(r.limited.Sources) != len(want) {
		t.Fatalf("policy %+v", r.limited)
	}
	for i, s := range want {
		if r.limited.Sources[i] != s {
			t.Errorf("source %d: %v, want %v", i, r.limited.Sources[i], s)
		}
	}

	r2 := &fakeRouter{addrs: r.addrs, others: r.others, failLimit: errors.New("nftables: operation not permitted")}
	w2 := newWorker(r2, "10.77.1.1")
	w2.Converge(context.Background(), peers)
	st := w2.Status()
	if r2.forward || len(r2.routes) != 0 || !strings.Contains(st.Problem, "not limited") || !strings.Contains(st.Problem, "operation not permitted") {
		t.Errorf("forwarding %v, routes %v, problem %q", r2.forward, r2.routes, st.Problem)
	}
	for _, p := range st.Peers {
		if p.State != StateRefused {
			t.Errorf("peer %s: %s, want refused", p.Name, p.State)
		}
	}
}
