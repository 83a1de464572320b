package lb

import (
	"strings"
	"testing"

	"github.com/skeinhq/skein/events"
)

// shape is a configuration's skeleton: each line's indentation and first word.
// Two renderings with the same shape have the same lines, sections and
// directives; only values differ.
func shape(conf string) []string {
	var out []string
	for _, line := range strings.Split(conf, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		word, _, _ := strings.Cut(trimmed, " ")
		if strings.HasPrefix(trimmed, "#") {
			word = "#"
		}
		out = append(out, line[:len(line)-len(trimmed)]+word)
	}
	return out
}

// fuzzLB builds a load balancer from fuzzed strings, and its twin with every
// user string replaced by a plain value of the same kind.
func fuzzLB(kind, name, url, bname, bhost, resolver, mode string, port, workers int, tls bool) (events.LB, events.LB) {
	lb := events.LB{Resource: events.Resource{Name: name}, Kind: kind, Mode: mode, URL: url, TLS: tls, Workers: workers,
		Backends: []events.Backend{{Name: bname, Host: bhost, Port: port}, {Name: "fixed", Host: "10.77.1.9", Port: 80}}}
	if resolver != "" {
		lb.Resolvers = []string{resolver}
	}
	twin := lb
	twin.Name, twin.URL = "x", "x.test"
	if url == "" {
		twin.URL = ""
	}
	host := "10.0.0.1"
	if IsName(bhost) {
		host = "s.service.consul"
	}
	twin.Backends = []events.Backend{{Name: "b", Host: host, Port: 1}, lb.Backends[1]}
	if resolver != "" {
		twin.Resolvers = []string{"10.0.0.1:53"}
	}
	if kind == "nginx" && IsName(bhost) {
		// nginx takes a Consul-name backend alone.
		lb.Backends, twin.Backends = lb.Backends[:1], twin.Backends[:1]
	}
	return lb, twin
}

func seeds(f *testing.F) {
	f.Add("ha1", "mywordpress.org", "web1", "10.77.1.5", "10.77.1.10:8600", "roundrobin", 80, 2, true)
	f.Add("ng1", "evil.test; location /pwn { return 200 \"owned\"; } #", "a", "10.77.1.5", "", "ip_hash", 80, 0, false)
	f.Add("ha1", "x.test", "web1\n  program x", "10.77.1.5", "10.77.1.10:53\n  program x", "source", 8080, 1, false)
	f.Add("ha1", "a.b", "wp", "wordpress.service.consul", "10.77.1.10:8600", "leastconn", 80, 0, true)
	f.Add("ha1\nglobal", "a.b", "b", "10.77.1.5 backup", "", "roundrobin\n", 1, 64, false)
}

// FuzzRenderHAProxy: whatever a user gives, a rendered haproxy.cfg has the
// lines, sections and directives of the same configuration with plain values:
// no input adds a line, a section or a directive. What does not validate is refused.
func FuzzRenderHAProxy(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, name, url, bname, bhost, resolver, mode string, port, workers int, tls bool) {
		lb, twin := fuzzLB("haproxy", name, "", bname, bhost, resolver, mode, port, workers, tls)
		got, err := RenderHAProxy(lb)
		if err != nil {
			return
		}
		want, err := RenderHAProxy(twin)
		if err != nil {
			t.Fatalf("the plain twin is refused: %v", err)
		}
		if g, w := shape(got), shape(want); strings.Join(g, "\n") != strings.Join(w, "\n") {
			t.Fatalf("input changed the configuration's shape:\n%s\n--- plain:\n%s", got, want)
		}
	})
}

// FuzzRenderNginx: the same for nginx's site and main configuration files.
func FuzzRenderNginx(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, name, url, bname, bhost, resolver, mode string, port, workers int, tls bool) {
		if url == "" {
			url = "a.test"
		}
		lb, twin := fuzzLB("nginx", name, url, bname, bhost, resolver, mode, port, workers, tls)
		if IsName(bhost) && len(lb.Resolvers) == 0 {
			lb.Resolvers, twin.Resolvers = []string{"10.77.1.10:8600"}, []string{"10.0.0.1:53"}
		}
		for _, render := range []func(events.LB) (string, error){RenderNginx, RenderNginxMain} {
			got, err := render(lb)
			if err != nil {
				continue
			}
			want, err := render(twin)
			if err != nil {
				t.Fatalf("the plain twin is refused: %v", err)
			}
			if g, w := shape(got), shape(want); strings.Join(g, "\n") != strings.Join(w, "\n") {
				t.Fatalf("input changed the configuration's shape:\n%s\n--- plain:\n%s", got, want)
			}
		}
	})
}

// TestInjectionsAreRefused: the two injections found by hand, and the same
// attempt on every other field that reaches a configuration file, are refused.
func TestInjectionsAreRefused(t *testing.T) {
	ok := events.LB{Resource: events.Resource{Name: "ng1"}, Kind: "nginx", Mode: "default", URL: "site.test", Resolvers: []string{"10.77.1.10:8600"},
		Backends: []events.Backend{{Name: "a", Host: "10.77.1.5", Port: 80}}}
	if _, err := RenderNginx(ok); err != nil {
		t.Fatalf("a plain load balancer is refused: %v", err)
	}
	bad := map[string]func(*events.LB){
		"url":          func(l *events.LB) { l.URL = `evil.test; location /pwn { return 200 "owned"; } #` },
		"resolver":     func(l *events.LB) { l.Resolvers = []string{"10.77.1.10:53\n  program x"} },
		"name":         func(l *events.LB) { l.Name = "ng1\nglobal" },
		"backend name": func(l *events.LB) { l.Backends[0].Name = "a backup" },
		"backend host": func(l *events.LB) { l.Backends[0].Host = "10.77.1.5;" },
		"mode":         func(l *events.LB) { l.Mode = "least_conn;\n}" },
		"port":         func(l *events.LB) { l.Backends[0].Port = 70000 },
		"workers":      func(l *events.LB) { l.Workers = 100000 },
	}
	for field, spoil := range bad {
		t.Run(field, func(t *testing.T) {
			for _, kind := range []string{"haproxy", "nginx"} {
				l := ok
				l.Kind = kind
				l.Mode = modes(kind)[0]
				l.Backends = append([]events.Backend(nil), ok.Backends...)
				spoil(&l)
				for _, render := range []func(events.LB) (string, error){RenderHAProxy, RenderNginx, RenderNginxMain} {
					if out, err := render(l); err == nil {
						t.Errorf("%s %s rendered:\n%s", kind, field, out)
					}
				}
			}
		})
	}
}
