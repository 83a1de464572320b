package container

import "testing"

func TestRenderServersFile(t *testing.T) {
	const path = "/etc/skein/dns/skeinbr1.servers"
	cases := []struct{ name, raw, want string }{
		{"test bed's default", "no-resolv", "no-resolv\nservers-file=" + path},
		{"already there", "no-resolv\nservers-file=" + path, "no-resolv\nservers-file=" + path},
		{"inline lines of older skeins dropped", "no-resolv\nserver=/consul/10.77.1.10#8600", "no-resolv\nservers-file=" + path},
		{"other domains kept", "server=/other/1.2.3.4", "server=/other/1.2.3.4\nservers-file=" + path},
		{"empty", "", "servers-file=" + path},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := renderServersFile(tc.raw, "consul", path); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSubnetOfAndPool(t *testing.T) {
	cases := []struct{ name, addr, ranges, first, last string }{
		{"skein's bridge", "10.77.1.1/24", "10.77.1.50-10.77.1.250", "10.77.1.50", "10.77.1.250"},
		{"first of several ranges", "10.0.0.1/16", "10.0.1.0-10.0.1.255,10.0.9.0-10.0.9.9", "10.0.1.0", "10.0.1.255"},
		{"no range: the whole subnet", "10.0.0.1/24", "", "10.0.0.0", "10.0.0.255"},
		{"a range outside the subnet: the whole subnet", "10.0.0.1/24", "10.9.0.5-10.9.0.9", "10.0.0.0", "10.0.0.255"},
		{"a reversed range: the whole subnet", "10.0.0.1/24", "10.0.0.9-10.0.0.5", "10.0.0.0", "10.0.0.255"},
		{"garbage: the whole subnet", "10.0.0.1/24", "x-y", "10.0.0.0", "10.0.0.255"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sn, err := subnetOf(map[string]string{"ipv4.address": tc.addr, "ipv4.dhcp.ranges": tc.ranges})
			if err != nil {
				t.Fatal(err)
			}
			if f, l := sn.Pool(); f.String() != tc.first || l.String() != tc.last {
				t.Errorf("pool %s-%s, want %s-%s", f, l, tc.first, tc.last)
			}
		})
	}
	if _, err := subnetOf(map[string]string{"ipv4.address": "none"}); err == nil {
		t.Error("a bridge without an IPv4 address was taken")
	}
}
