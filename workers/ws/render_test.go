package ws

import (
	"flag"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

func sample() events.WS {
	return events.WS{Resource: events.Resource{Name: "ws-1", Server: "s1", Status: events.StatusReady},
		Resolvers: []string{"10.77.1.10:8600", "10.77.2.20:8600"},
		Apps: []events.App{
			{URL: "mywordpress.org", Target: events.Target{Kind: events.TargetConsul, Host: "wordpress.service.consul", Port: 80}},
			{URL: "myminio.org", Target: events.Target{Kind: events.TargetAddress, Host: "10.77.2.5", Port: 9000}},
		}}
}

// tlsSample has a container target and every kind of TLS: a redirecting
// self-signed app with HSTS, a given one that keeps port 80, an ACME one still
// waiting for its certificate (port 80 only, the challenge served).
func tlsSample() events.WS {
	fp := strings.Repeat("ab", 32)
	return events.WS{Resource: events.Resource{Name: "ws-2", Server: "s1", Status: events.StatusReady},
		Apps: []events.App{
			{URL: "self.test", Target: events.Target{Kind: events.TargetContainer, Host: "web1", Port: 8080}, Addr: "10.77.1.20",
				TLS: &events.AppTLS{Kind: events.TLSSelf, HSTS: true, Fingerprint: fp}},
			{URL: "given.test", Target: events.Target{Kind: events.TargetAddress, Host: "10.77.2.5", Port: 80},
				TLS: &events.AppTLS{Kind: events.TLSGiven, NoRedirect: true, Fingerprint: fp}},
			{URL: "acme.test", Target: events.Target{Kind: events.TargetAddress, Host: "10.77.2.6", Port: 80},
				TLS: &events.AppTLS{Kind: events.TLSACME, ACMEURL: "https://127.0.0.1:14000/dir"}},
		}}
}

// The rendered files are golden: a default 404 server, then one server per
// app by URL; Consul names through the resolvers, per request.
func TestRenderGolden(t *testing.T) {
	for name, ws := range map[string]events.WS{
		"empty":    {Resource: events.Resource{Name: "ws-1"}, Apps: []events.App{}},
		"two-apps": sample(),
		"tls":      tlsSample(),
	} {
		main, err := RenderMain(ws)
		if err != nil {
			t.Fatal(err)
		}
		site, err := RenderSite(ws)
		if err != nil {
			t.Fatal(err)
		}
		testutil.Golden(t, name, "==> nginx.conf <==\n"+main+"\n==> sites-enabled/default <==\n"+site, *update)
	}
}

// Records that cannot be rendered as they are are refused, with the reason.
func TestCheckRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		edit func(*events.WS)
		want string
	}{
		"url twice":              {func(w *events.WS) { w.Apps[1].URL = w.Apps[0].URL }, "published twice"},
		"injected url":           {func(w *events.WS) { w.Apps[0].URL = "a.com; location / {}" }, "url"},
		"address that is a name": {func(w *events.WS) { w.Apps[1].Target.Host = "minio.local" }, "not an IPv4"},
		"consul that is an IP":   {func(w *events.WS) { w.Apps[0].Target.Host = "10.0.0.1" }, "not a Consul name"},
		"port 0":                 {func(w *events.WS) { w.Apps[1].Target.Port = 0 }, "port"},
		"no resolvers":           {func(w *events.WS) { w.Resolvers = nil }, "resolvers"},
		"bad resolver":           {func(w *events.WS) { w.Resolvers = []string{"10.0.0.1:53;"} }, "resolvers"},
		"unknown kind":           {func(w *events.WS) { w.Apps[1].Target.Kind = "file" }, "kind"},
		"container, no address": {func(w *events.WS) {
			w.Apps[1].Target = events.Target{Kind: events.TargetContainer, Host: "web1", Port: 80}
		}, "no IPv4"},
		"container, bad name": {func(w *events.WS) {
			w.Apps[1].Target = events.Target{Kind: events.TargetContainer, Host: "web1;", Port: 80}
			w.Apps[1].Addr = "10.0.0.1"
		}, "host"},
		"address apart": {func(w *events.WS) { w.Apps[1].Addr = "10.0.0.1" }, "apart"},
		"tls kind": {func(w *events.WS) {
			w.Apps[1].TLS = &events.AppTLS{Kind: "plain", Fingerprint: strings.Repeat("a", 64)}
		}, "TLS kind"},
		"given, no fingerprint": {func(w *events.WS) { w.Apps[1].TLS = &events.AppTLS{Kind: events.TLSGiven} }, "fingerprint"},
		"acme, no directory":    {func(w *events.WS) { w.Apps[1].TLS = &events.AppTLS{Kind: events.TLSACME} }, "directory"},
		"acme, bad directory":   {func(w *events.WS) { w.Apps[1].TLS = &events.AppTLS{Kind: events.TLSACME, ACMEURL: "http://x/dir"} }, "https"},
	} {
		ws := sample()
		c.edit(&ws)
		if _, err := RenderSite(ws); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
}

// FuzzRenderSite: whatever URL, target and resolver reach the renderer, the
// site has the shape of a plain one (same lines once quoted and plain values
// are blanked), or is refused.
func FuzzRenderSite(f *testing.F) {
	f.Add("myminio.org", "10.77.2.5", "wordpress.service.consul", "10.77.1.10:8600", "web1", "self.test")
	f.Add("a.com; location /pwn { return 200 owned; } #", "10.77.2.5", "x.service.consul", "10.77.1.10:8600", "web1; return 200", "a.test;")
	f.Add("a.com", "10.77.2.5\n    location / {", "x.service.consul;\nserver {", "10.77.1.10:8600 valid=0", "web1\n", "x.test/../../etc/passwd")
	f.Fuzz(func(t *testing.T, url, ip, name, resolver, ctr, tlsURL string) {
		tw := tlsSample()
		tw.Apps[0].Target.Host, tw.Apps[0].URL = ctr, tlsURL
		if got, err := RenderSite(tw); err == nil {
			want, _ := RenderSite(tlsSample())
			if blocks(got) != blocks(want) {
				t.Fatalf("input changed the TLS site's shape:\n%s\n--- plain:\n%s", got, want)
			}
		}
		ws := sample()
		ws.Apps[1].URL, ws.Apps[1].Target.Host, ws.Apps[0].Target.Host, ws.Resolvers = url, ip, name, []string{resolver}
		got, err := RenderSite(ws)
		if err != nil {
			return
		}
		plain := sample()
		plain.Resolvers = []string{"10.0.0.1:53"}
		want, _ := RenderSite(plain)
		if blocks(got) != blocks(want) {
			t.Fatalf("input changed the site's shape:\n%s\n--- plain:\n%s", got, want)
		}
	})
}

var values = regexp.MustCompile(`[A-Za-z0-9.:_/-]+\.[A-Za-z0-9.:_/-]+|container [A-Za-z0-9-]+`)

// blocks is the shape of a site's server blocks in sorted order, so that a
// URL that sorts elsewhere compares equal; names in server_name and the
// numbers of the apps' variables (their order) are blanked.
func blocks(site string) string {
	site = appVar.ReplaceAllString(serverName.ReplaceAllString(site, "server_name V;"), "$$skein_app_N")
	parts := strings.Split(shape(site), "\nserver {")
	sort.Strings(parts)
	return strings.Join(parts, "\nserver {")
}

var appVar = regexp.MustCompile(`\$skein_app_[0-9]+`)

var serverName = regexp.MustCompile(`server_name [^;\s]*;`)

// shape is a site with every dotted value (host names, addresses) blanked.
func shape(site string) string { return values.ReplaceAllString(site, "V") }
