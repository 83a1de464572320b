package lb

import (
	"encoding/json"
	"flag"
	"testing"

	"github.com/skeinhq/skein/events"

	"github.com/skeinhq/skein/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestRenderGolden compares each rendering with testdata/<case>.golden: the
// input as JSON, a "---" line, then every file of the load balancer's
// configuration set, each under a "==> PATH <==" line.
func TestRenderGolden(t *testing.T) {
	cases := map[string]events.LB{
		"haproxy-empty":       {Resource: events.Resource{Name: "ha1"}, Kind: "haproxy"},
		"haproxy-three":       {Resource: events.Resource{Name: "ha1"}, Kind: "haproxy", Mode: "roundrobin", Backends: []events.Backend{{Name: "web1", Host: "10.77.1.5", Port: 80}, {Name: "web2", Host: "10.77.2.6", Port: 80}, {Name: "web3", Host: "10.77.3.7", Port: 8080}}},
		"haproxy-source":      {Resource: events.Resource{Name: "ha2"}, Kind: "haproxy", Mode: "source", Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}},
		"haproxy-leastconn":   {Resource: events.Resource{Name: "ha3"}, Kind: "haproxy", Mode: "leastconn", Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}},
		"haproxy-consul-name": {Resource: events.Resource{Name: "ha4"}, Kind: "haproxy", Mode: "roundrobin", Resolvers: []string{"10.77.1.10:8600", "10.77.2.20:8600"}, Backends: []events.Backend{{Name: "wp", Host: "wordpress.service.consul", Port: 80}, {Name: "static", Host: "10.77.1.5", Port: 80}}},
		"haproxy-tls-threads": {Resource: events.Resource{Name: "ha5"}, Kind: "haproxy", Mode: "roundrobin", TLS: true, Workers: 2, Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}},
		"nginx-plain":         {Resource: events.Resource{Name: "ng1"}, Kind: "nginx", Mode: "default", URL: "mywordpress.org", Backends: []events.Backend{{Name: "10-77-1-5-80", Host: "10.77.1.5", Port: 80}, {Name: "10-77-2-6-80", Host: "10.77.2.6", Port: 80}}},
		"nginx-tls-iphash":    {Resource: events.Resource{Name: "ng2"}, Kind: "nginx", Mode: "ip_hash", URL: "secure.example", TLS: true, Backends: []events.Backend{{Name: "10-77-1-5-80", Host: "10.77.1.5", Port: 80}}},
		"nginx-consul-name":   {Resource: events.Resource{Name: "ng4"}, Kind: "nginx", Mode: "default", URL: "blog.test", Resolvers: []string{"10.77.1.10:8600"}, Backends: []events.Backend{{Name: "blog-service-consul-80", Host: "blog.service.consul", Port: 80}}},
		"nginx-empty":         {Resource: events.Resource{Name: "ng3"}, Kind: "nginx", Mode: "least_conn", URL: "x.example"},
	}
	for name, lb := range cases {
		t.Run(name, func(t *testing.T) {
			got := goldenInput(lb) + "\n---\n"
			set, err := files(lb, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range set {
				if i > 0 {
					got += "\n"
				}
				got += "==> " + f.Path + " <==\n" + string(f.Data)
			}
			testutil.Golden(t, name, got, *update)
		})
	}
}

func goldenInput(lb events.LB) string {
	b, _ := json.Marshal(lb)
	return string(b)
}
