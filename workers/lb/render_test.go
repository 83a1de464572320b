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

// TestRenderGolden compares each rendering with testdata/<case>.golden:
// the input as JSON, a "---" line, then the expected configuration.
func TestRenderGolden(t *testing.T) {
	cases := map[string]events.LB{
		"haproxy-empty":       {Name: "ha1", Kind: "haproxy"},
		"haproxy-three":       {Name: "ha1", Kind: "haproxy", Mode: "roundrobin", Backends: []events.Backend{{Name: "web1", Host: "10.77.1.5", Port: 80}, {Name: "web2", Host: "10.77.2.6", Port: 80}, {Name: "web3", Host: "10.77.3.7", Port: 8080}}},
		"haproxy-source":      {Name: "ha2", Kind: "haproxy", Mode: "source", Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}},
		"haproxy-leastconn":   {Name: "ha3", Kind: "haproxy", Mode: "leastconn", Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}},
		"haproxy-consul-name": {Name: "ha4", Kind: "haproxy", Mode: "roundrobin", Resolvers: []string{"10.77.1.10:8600", "10.77.2.20:8600"}, Backends: []events.Backend{{Name: "wp", Host: "wordpress.service.consul", Port: 80}, {Name: "static", Host: "10.77.1.5", Port: 80}}},
		"haproxy-tls-threads": {Name: "ha5", Kind: "haproxy", Mode: "roundrobin", TLS: true, Workers: 2, Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}},
		"nginx-plain":         {Name: "ng1", Kind: "nginx", Mode: "default", URL: "mywordpress.org", Backends: []events.Backend{{Name: "10-77-1-5-80", Host: "10.77.1.5", Port: 80}, {Name: "10-77-2-6-80", Host: "10.77.2.6", Port: 80}}},
		"nginx-tls-iphash":    {Name: "ng2", Kind: "nginx", Mode: "ip_hash", URL: "secure.example", TLS: true, Backends: []events.Backend{{Name: "10-77-1-5-80", Host: "10.77.1.5", Port: 80}}},
		"nginx-consul-name":   {Name: "ng4", Kind: "nginx", Mode: "default", URL: "blog.test", Resolvers: []string{"10.77.1.10:8600"}, Backends: []events.Backend{{Name: "blog-service-consul-80", Host: "blog.service.consul", Port: 80}}},
		"nginx-empty":         {Name: "ng3", Kind: "nginx", Mode: "least_conn", URL: "x.example"},
	}
	for name, lb := range cases {
		t.Run(name, func(t *testing.T) {
			render := RenderHAProxy
			if lb.Kind == "nginx" {
				render = RenderNginx
			}
			got := goldenInput(lb) + "\n---\n" + render(lb)
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
