package container

import "testing"

func TestRenderDNSForward(t *testing.T) {
	cases := []struct {
		name, raw string
		servers   []string
		want      string
	}{
		{"add to the test bed's line", "no-resolv", []string{"10.77.1.10#8600"}, "no-resolv\nserver=/consul/10.77.1.10#8600"},
		{"replace", "no-resolv\nserver=/consul/10.77.1.10#8600", []string{"10.77.1.11#8600", "10.77.2.12#8600"}, "no-resolv\nserver=/consul/10.77.1.11#8600\nserver=/consul/10.77.2.12#8600"},
		{"remove", "server=/consul/10.77.1.10#8600\nno-resolv", nil, "no-resolv"},
		{"other domains kept", "server=/other/1.2.3.4\nserver=/consul/10.77.1.10#8600", nil, "server=/other/1.2.3.4"},
		{"empty", "", []string{"10.77.1.10#8600"}, "server=/consul/10.77.1.10#8600"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := renderDNSForward(tc.raw, "consul", tc.servers); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
