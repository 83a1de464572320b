package discovery

import (
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
