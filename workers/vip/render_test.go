package vip

import (
	"flag"
	"regexp"
	"strings"
	"testing"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

func sample() []events.VIPAdd {
	return []events.VIPAdd{
		{Name: "web-vip", IP: "10.77.100.50", Prefix: 24, Interface: "eth0", Self: "10.77.100.11", Peer: "10.77.100.12", PeerServer: "v2", RouterID: 7, Preferred: true},
		{Name: "db-vip", IP: "10.77.100.51", Prefix: 24, Interface: "eth0", Self: "10.77.100.11", Peer: "10.77.100.12", PeerServer: "v2", RouterID: 8},
	}
}

func TestRenderGolden(t *testing.T) {
	out, err := Render("v1", sample())
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "two-vips", out, *update)
}

func TestCheckRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		edit func(*events.VIPAdd)
		want string
	}{
		"ip outside":      {func(v *events.VIPAdd) { v.IP = "10.77.101.50" }, "not in"},
		"ip is self":      {func(v *events.VIPAdd) { v.IP = v.Self }, "own address"},
		"network address": {func(v *events.VIPAdd) { v.IP = "10.77.100.0" }, "network's"},
		"broadcast":       {func(v *events.VIPAdd) { v.IP = "10.77.100.255" }, "broadcast"},
		"self is peer":    {func(v *events.VIPAdd) { v.Peer = v.Self }, "both"},
		"router id":       {func(v *events.VIPAdd) { v.RouterID = 0 }, "router id"},
		"injected iface":  {func(v *events.VIPAdd) { v.Interface = "eth0\n}" }, "interface"},
		"empty iface":     {func(v *events.VIPAdd) { v.Interface = "" }, "interface"},
		"empty name":      {func(v *events.VIPAdd) { v.Name = "" }, "name"},
		"injected ip":     {func(v *events.VIPAdd) { v.IP = "10.77.100.50 dev lo" }, "ip"},
		"prefix":          {func(v *events.VIPAdd) { v.Prefix = 31 }, "prefix"},
	} {
		v := sample()[0]
		c.edit(&v)
		if _, err := Render("v1", []events.VIPAdd{v}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	two := sample()
	two[1].RouterID = two[0].RouterID
	if _, err := Render("v1", two); err == nil || !strings.Contains(err.Error(), "share router id") {
		t.Errorf("shared router id: %v", err)
	}
}

// No name, interface or address adds a line or a block to keepalived.conf.
func FuzzRender(f *testing.F) {
	f.Add("web-vip", "eth0", "10.77.100.50")
	f.Add("a\n}\nvrrp_script x {", "eth0 }", "10.77.100.50\n")
	f.Add("A", "", "10.77.100.1")
	f.Fuzz(func(t *testing.T, name, iface, ip string) {
		v := sample()[0]
		v.Name, v.Interface, v.IP = name, iface, ip
		got, err := Render("v1", []events.VIPAdd{v})
		if err != nil {
			return
		}
		want, _ := Render("v1", sample()[:1])
		blank := regexp.MustCompile(`[A-Za-z0-9._-]+`)
		if blank.ReplaceAllString(got, "V") != blank.ReplaceAllString(want, "V") {
			t.Fatalf("input changed the shape:\n%s\n--- plain:\n%s", got, want)
		}
	})
}
