package vip

import (
	"context"
	"flag"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

const dir = "/var/lib/skein/keepalived"

func sample() []events.VIPAdd {
	return []events.VIPAdd{
		{Name: "web-vip", IP: "10.77.100.50", Prefix: 24, Interface: "eth0", Self: "10.77.100.11", Peer: "10.77.100.12", PeerServer: "v2", RouterID: 7, Preferred: true},
		{Name: "db-vip", IP: "10.77.100.51", Prefix: 24, Interface: "eth0", Self: "10.77.100.11", Peer: "10.77.100.12", PeerServer: "v2", RouterID: 8, CheckService: "db"},
	}
}

func TestRenderGolden(t *testing.T) {
	out, err := Render("v1", dir, sample())
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
		"ip outside":        {func(v *events.VIPAdd) { v.IP = "10.77.101.50" }, "not in"},
		"ip is self":        {func(v *events.VIPAdd) { v.IP = v.Self }, "is the address of the self server"},
		"network address":   {func(v *events.VIPAdd) { v.IP = "10.77.100.0" }, "network's"},
		"broadcast":         {func(v *events.VIPAdd) { v.IP = "10.77.100.255" }, "broadcast"},
		"self is peer":      {func(v *events.VIPAdd) { v.Peer = v.Self }, "both"},
		"router id":         {func(v *events.VIPAdd) { v.RouterID = 0 }, "router id"},
		"injected iface":    {func(v *events.VIPAdd) { v.Interface = "eth0\n}" }, "interface"},
		"empty iface":       {func(v *events.VIPAdd) { v.Interface = "" }, "interface"},
		"empty name":        {func(v *events.VIPAdd) { v.Name = "" }, "name"},
		"injected ip":       {func(v *events.VIPAdd) { v.IP = "10.77.100.50 dev lo" }, "ip"},
		"prefix":            {func(v *events.VIPAdd) { v.Prefix = 31 }, "prefix"},
		"check and service": {func(v *events.VIPAdd) { v.Check, v.CheckService = []string{"true"}, "web" }, "not both"},
		"empty check word":  {func(v *events.VIPAdd) { v.Check = []string{"curl", ""} }, "an empty value in a list"},
		"shell in check":    {func(v *events.VIPAdd) { v.Check = []string{"curl", "x;reboot"} }, "check"},
		"quote in check":    {func(v *events.VIPAdd) { v.Check = []string{"curl", `"a"`} }, "check"},
		"bad service":       {func(v *events.VIPAdd) { v.CheckService = "web\n}" }, "check_service"},
	} {
		v := sample()[0]
		c.edit(&v)
		if _, err := Render("v1", dir, []events.VIPAdd{v}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	two := sample()
	two[1].RouterID = two[0].RouterID
	if _, err := Render("v1", dir, two); err == nil || !strings.Contains(err.Error(), "share router id") {
		t.Errorf("shared router id: %v", err)
	}
	for _, d := range []string{"relative/dir", "/a b", "/a\"b", "/a\n}"} {
		if _, err := Render("v1", d, sample()); err == nil || !strings.Contains(err.Error(), "state directory") {
			t.Errorf("state directory %q: %v", d, err)
		}
	}
}

// No name, interface, address, state directory or service adds a line or a
// block to keepalived.conf (a check command never reaches it).
func FuzzRender(f *testing.F) {
	f.Add("web-vip", "eth0", "10.77.100.50", dir, "db", "true")
	f.Add("a\n}\nvrrp_script x {", "eth0 }", "10.77.100.50\n", "/x\"\n}", "db\n}", "a b")
	f.Add("A", "", "10.77.100.1", "", "", "")
	f.Fuzz(func(t *testing.T, name, iface, ip, d, service, word string) {
		v := sample()[0]
		v.Name, v.Interface, v.IP, v.CheckService = name, iface, ip, service
		if word != "" {
			v.Check = []string{word}
		}
		got, err := Render("v1", d, []events.VIPAdd{v})
		if err != nil {
			return
		}
		ref := sample()[0]
		if checked(v) {
			ref.CheckService = "db"
		}
		want, _ := Render("v1", dir, []events.VIPAdd{ref})
		blank := regexp.MustCompile(`[A-Za-z0-9._/-]+`)
		if blank.ReplaceAllString(got, "V") != blank.ReplaceAllString(want, "V") {
			t.Fatalf("input changed the shape:\n%s\n--- plain:\n%s", got, want)
		}
	})
}

func TestRunCheck(t *testing.T) {
	ctx := context.Background()
	if ok, out := runCheck(ctx, []string{"true"}); !ok {
		t.Errorf("true failed: %s", out)
	}
	if ok, out := runCheck(ctx, []string{"false"}); ok || !strings.Contains(out, "exit status 1") {
		t.Errorf("false: %v %s", ok, out)
	}
	// No shell: a word with shell syntax is one argument, not a second command.
	if ok, out := runCheck(ctx, []string{"echo", "x;false"}); !ok || !strings.Contains(out, "x;false") {
		t.Errorf("echo x;false: %v %s", ok, out)
	}
	start := time.Now()
	if ok, out := runCheck(ctx, []string{"sleep", "10"}); ok || !strings.Contains(out, "no answer within") {
		t.Errorf("sleep 10: %v %s", ok, out)
	}
	if d := time.Since(start); d > checkTimeout+2*time.Second {
		t.Errorf("a hung check held the checker %s", d)
	}
}

func TestSameSide(t *testing.T) {
	a, b := sample()[0], sample()[0]
	if !sameSide(a, b) {
		t.Error("equal sides differ")
	}
	b.Check = []string{"true"}
	if sameSide(a, b) {
		t.Error("a check added is the same side")
	}
}
