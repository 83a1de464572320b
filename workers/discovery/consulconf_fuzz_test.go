package discovery

import (
	"regexp"
	"strings"
	"testing"
)

// FuzzConsulConfig: whatever name and addresses a user gives, an endpoint's
// Consul configuration has the lines of one with plain values, or is refused.
func FuzzConsulConfig(f *testing.F) {
	f.Add("consul-10", "10.77.1.10", "10.77.2.20")
	f.Add("consul-10\"\nui = false\n#", "10.77.1.10", "")
	f.Add("c", "10.77.1.10\"\nserver = false", "10.77.2.20\"]\nacl {")
	f.Fuzz(func(t *testing.T, name, ip, join string) {
		var joins []string
		if join != "" {
			joins = []string{join}
		}
		got, err := ConsulConfig(name, ip, joins)
		if err != nil {
			return
		}
		var plainJoin []string
		if join != "" {
			plainJoin = []string{"10.0.0.2"}
		}
		want, err := ConsulConfig("x", "10.0.0.1", plainJoin)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := keys(got), keys(want); g != w {
			t.Fatalf("input changed the configuration's keys:\n%s\n--- plain:\n%s", got, want)
		}
	})
}

// keys is a configuration's skeleton: each line up to its '='.
func keys(conf string) string {
	var out []string
	for _, line := range strings.Split(conf, "\n") {
		k, _, _ := strings.Cut(line, "=")
		if strings.HasPrefix(line, "#") {
			k = "#"
		}
		out = append(out, strings.TrimSpace(k))
	}
	return strings.Join(out, "\n")
}

// FuzzConsulACL: whatever token and server name reach them, the endpoints' ACL
// file and a server's policy have the lines of plain ones, or are refused.
func FuzzConsulACL(f *testing.F) {
	f.Add("11111111-2222-4333-8444-555555555555", "s1")
	f.Add("1\"\n  }\n  default_policy = \"allow\"\n#", "s1\" {\n policy = \"write\"\n}\nkey_prefix \"")
	f.Add("11111111-2222-4333-8444-55555555555", "s1.")
	f.Fuzz(func(t *testing.T, token, server string) {
		if got, err := ConsulACL(token); err == nil {
			want, _ := ConsulACL("00000000-0000-4000-8000-000000000000")
			if skeleton(got) != skeleton(want) {
				t.Fatalf("token %q changed the ACL file:\n%s", token, got)
			}
		}
		if got, err := ServerPolicy(server); err == nil {
			want, _ := ServerPolicy("s")
			if skeleton(got.Rules) != skeleton(want.Rules) {
				t.Fatalf("server %q changed the policy:\n%s", server, got.Rules)
			}
			if !strings.HasPrefix(got.Rules, `node_prefix "`+server+`." {`) {
				t.Fatalf("server %q: the policy writes other nodes:\n%s", server, got.Rules)
			}
		}
	})
}

// skeleton is a configuration with every quoted value emptied.
func skeleton(conf string) string { return quoted.ReplaceAllString(conf, `""`) }

var quoted = regexp.MustCompile(`"[^"\n]*"`)
