package discovery

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
			path := filepath.Join("testdata", file+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("rendered config differs from %s:\n%s", path, got)
			}
		})
	}
}
