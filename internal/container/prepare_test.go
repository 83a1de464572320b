package container

import (
	"net/netip"
	"testing"
)

func TestFreeSubnet(t *testing.T) {
	super := netip.MustParsePrefix("10.77.0.0/16")
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	cases := []struct {
		name string
		used []netip.Prefix
		want string
	}{
		{"empty: the second /24", nil, "10.77.1.0/24"},
		{"bridges taken", []netip.Prefix{p("10.77.1.0/24"), p("10.77.2.0/24"), p("10.77.3.0/24")}, "10.77.4.0/24"},
		{"the supernet's blackhole route and a default route do not count", []netip.Prefix{p("10.77.0.0/16"), p("0.0.0.0/0"), p("10.0.0.0/8"), p("10.77.1.0/24")}, "10.77.2.0/24"},
		{"a wider route inside the supernet takes every /24 it covers", []netip.Prefix{p("10.77.0.0/22")}, "10.77.4.0/24"},
		{"a host address inside", []netip.Prefix{p("10.77.1.7/32")}, "10.77.2.0/24"},
	}
	for _, c := range cases {
		got, err := FreeSubnet(super, c.used)
		if err != nil || got.String() != c.want {
			t.Errorf("%s: %v %v, want %s", c.name, got, err, c.want)
		}
	}
	full := []netip.Prefix{p("10.77.0.0/17"), p("10.77.128.0/17")}
	if _, err := FreeSubnet(super, full); err == nil {
		t.Error("a full supernet gave a subnet")
	}
	if got, err := FreeSubnet(p("10.78.5.0/24"), nil); err != nil || got.String() != "10.78.5.0/24" {
		t.Errorf("a /24 supernet: %v %v", got, err)
	}
	for _, bad := range []string{"10.77.0.0/25", "fd00::/64"} {
		if _, err := FreeSubnet(p(bad), nil); err == nil {
			t.Errorf("supernet %s accepted", bad)
		}
	}
}

func TestParseRoutes(t *testing.T) {
	table := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
		"skeinbr1\t00014D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
		"lo\t00004D0A\t00000000\t0201\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
	got := parseRoutes(table)
	want := []string{"0.0.0.0/0", "10.77.1.0/24", "10.77.0.0/16"}
	if len(got) != len(want) {
		t.Fatalf("parseRoutes = %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("route %d = %s, want %s", i, got[i], want[i])
		}
	}
}
