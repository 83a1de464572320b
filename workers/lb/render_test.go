package lb

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/skeinhq/skein/events"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestRenderHAProxyGolden compares each rendering with testdata/<case>.golden:
// the input as JSON, a "---" line, then the expected configuration.
func TestRenderHAProxyGolden(t *testing.T) {
	cases := map[string]events.LB{
		"haproxy-empty":     {Name: "ha1", Kind: "haproxy"},
		"haproxy-three":     {Name: "ha1", Kind: "haproxy", Mode: "roundrobin", Backends: []events.Backend{{Name: "web1", Host: "10.77.1.5", Port: 80}, {Name: "web2", Host: "10.77.2.6", Port: 80}, {Name: "web3", Host: "10.77.3.7", Port: 8080}}},
		"haproxy-source":    {Name: "ha2", Kind: "haproxy", Mode: "source", Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}},
		"haproxy-leastconn": {Name: "ha3", Kind: "haproxy", Mode: "leastconn", Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}},
	}
	for name, lb := range cases {
		t.Run(name, func(t *testing.T) {
			got := goldenInput(lb) + "\n---\n" + RenderHAProxy(lb)
			path := filepath.Join("testdata", name+".golden")
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
				t.Errorf("rendering differs from %s:\n%s", path, got)
			}
		})
	}
}

func goldenInput(lb events.LB) string {
	b, _ := json.Marshal(lb)
	return string(b)
}
