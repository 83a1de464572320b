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
