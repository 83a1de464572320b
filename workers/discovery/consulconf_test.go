package discovery

import (
	"flag"
	"strings"
	"testing"

	"github.com/skeinhq/skein/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestConsulConfigGolden renders each case in testdata/consul-*.golden: the input
// line, a "---" separator, then the expected configuration.
func TestConsulConfigGolden(t *testing.T) {
	cases := map[string]struct {
		name, ip string
		join     []string
	}{
		"consul-first":  {"consul-10", "10.77.1.10", nil},
		"consul-second": {"consul-20", "10.77.2.20", []string{"10.77.1.10"}},
		"consul-third":  {"consul-30", "10.77.3.30", []string{"10.77.1.10", "10.77.2.20"}},
	}
	for file, tc := range cases {
		t.Run(file, func(t *testing.T) {
			input := tc.name + " " + tc.ip + " join=" + strings.Join(tc.join, ",")
			conf, err := ConsulConfig(tc.name, tc.ip, tc.join)
			if err != nil {
				t.Fatal(err)
			}
			got := input + "\n---\n" + conf
			testutil.Golden(t, file, got, *update)
		})
	}
}

// TestConsulACLGolden: ACLs on, default deny, the management token as the
// master and the agent's token; a token that is not a UUID is refused.
func TestConsulACLGolden(t *testing.T) {
	const mgmt = "11111111-2222-4333-8444-555555555555"
	conf, err := ConsulACL(mgmt)
	if err != nil {
		t.Fatal(err)
	}
	got := mgmt + "\n---\n" + conf
	testutil.Golden(t, "consul-acl", got, *update)
	for _, bad := range []string{"", "root", "11111111-2222-4333-8444-555555555555\"", "11111111-2222-4333-8444-55555555555G"} {
		if _, err := ConsulACL(bad); err == nil {
			t.Errorf("ConsulACL(%q) accepted", bad)
		}
	}
}

// TestServerPolicy: a server's token writes the nodes named after it, and
// a server whose name is a prefix of another's does not reach the other's.
func TestServerPolicy(t *testing.T) {
	p, err := ServerPolicy("s1")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "skein-server-s1" || !strings.HasPrefix(p.Rules, "node_prefix \"s1.\" {\n  policy = \"write\"") {
		t.Errorf("policy of s1: %s\n%s", p.Name, p.Rules)
	}
	if strings.HasPrefix("s10.web", NodePrefix("s1")) {
		t.Error("s1's prefix covers s10's nodes")
	}
	for _, bad := range []string{"", "s1.x", "s1\"", "-s"} {
		if _, err := ServerPolicy(bad); err == nil {
			t.Errorf("ServerPolicy(%q) accepted", bad)
		}
	}
}
