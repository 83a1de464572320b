package ws

import (
	"flag"
	"regexp"
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

// The rendered files are golden: a default 404 server, then one server per
// app by URL; Consul names through the resolvers, per request.
func TestRenderGolden(t *testing.T) {
	for name, ws := range map[string]events.WS{
		"empty":    {Resource: events.Resource{Name: "ws-1"}, Apps: []events.App{}},
		"two-apps": sample(),
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
	f.Add("myminio.org", "10.77.2.5", "wordpress.service.consul", "10.77.1.10:8600")
	f.Add("a.com; location /pwn { return 200 owned; } #", "10.77.2.5", "x.service.consul", "10.77.1.10:8600")
	f.Add("a.com", "10.77.2.5\n    location / {", "x.service.consul;\nserver {", "10.77.1.10:8600 valid=0")
	f.Fuzz(func(t *testing.T, url, ip, name, resolver string) {
		ws := sample()
		ws.Apps[1].URL, ws.Apps[1].Target.Host, ws.Apps[0].Target.Host, ws.Resolvers = url, ip, name, []string{resolver}
		got, err := RenderSite(ws)
		if err != nil {
			return
		}
		plain := sample()
		plain.Resolvers = []string{"10.0.0.1:53"}
		want, _ := RenderSite(plain)
		if shape(got) != shape(want) {
			t.Fatalf("input changed the site's shape:\n%s\n--- plain:\n%s", got, want)
		}
	})
}

var values = regexp.MustCompile(`[A-Za-z0-9.:_-]+\.[A-Za-z0-9.:_-]+`)

// shape is a site with every dotted value (host names, addresses) blanked.
func shape(site string) string { return values.ReplaceAllString(site, "V") }
