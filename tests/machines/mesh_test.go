//go:build e2e

package machines

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

type link struct {
	Server    string     `json:"server"`
	Mode      string     `json:"mode"`
	Name      string     `json:"name"`
	Subnet    string     `json:"subnet"`
	Via       string     `json:"via"`
	State     string     `json:"state"`
	Problem   string     `json:"problem"`
	Down      bool       `json:"down"`
	Handshake *time.Time `json:"handshake"`
	RxBytes   int64      `json:"rx_bytes"`
}

func links(t *testing.T) map[string]link {
	t.Helper()
	var ls []link
	if err := json.Unmarshal([]byte(mustSkein(t, "net", "-o", "json")), &ls); err != nil {
		t.Fatal(err)
	}
	out := map[string]link{}
	for _, l := range ls {
		out[l.Server+">"+l.Name] = l
	}
	return out
}

// get fetches http://ip/ from container c on machine m (busybox httpd
// answers with the container's name).
func get(m, c, ip string) string {
	// busybox wget -T crashes (exit 139): timeout bounds it instead.
	out, err := inContainer(m, c, "timeout", "3", "wget", "-q", "-O", "-", "http://"+ip+"/")
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(out)
}

// Containers on three machines, each machine its own Incus and network
// stack, reach each other through the routes skein keeps (routed mode); the
// image comes from the bus to machines that never had it; the host has no way
// to the containers (they are behind their machines); `skein net` shows
// every path.
func TestContainersReachEachOtherAcrossMachines(t *testing.T) {
	ips := map[string]string{}
	for i, mc := range machines {
		c := fmt.Sprintf("c%d", i+1)
		out := mustSkein(t, "launch", "skein-busybox", c, "-s", mc.name)
		t.Logf("%s", strings.TrimSpace(out))
		t.Cleanup(func() { _, _ = skein("delete", c) })
	}
	var cs []events.Container
	if err := json.Unmarshal([]byte(mustSkein(t, "list", "-o", "json")), &cs); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		ips[c.Name] = c.IPv4
	}
	for i, from := range machines {
		for j, to := range machines {
			src, dst := fmt.Sprintf("c%d", i+1), fmt.Sprintf("c%d", j+1)
			eventually(t, 10*time.Second, func() bool { return get(from.name, src, ips[dst]) == dst },
				"%s on %s does not reach %s on %s (%s): %s", src, from.name, dst, to.name, ips[dst], get(from.name, src, ips[dst]))
		}
	}
	if out, err := exec.Command("curl", "-s", "-m", "2", "http://"+ips["c1"]+"/").CombinedOutput(); err == nil {
		t.Errorf("the host reached c1 (%s), which only m1 should: %s", ips["c1"], out)
	}
	// Not even with a route through m1: the host is on m1's LAN but no peer,
	// and m1 forwards from its LAN only its peers' containers and hosts.
	m1 := machines[0]
	if out, err := exec.Command("ip", "route", "replace", m1.subnet, "via", m1.addr).CombinedOutput(); err != nil {
		t.Fatalf("a route to m1's containers: %v %s", err, out)
	}
	out, err := exec.Command("curl", "-s", "-m", "2", "http://"+ips["c1"]+"/").CombinedOutput()
	if dout, derr := exec.Command("ip", "route", "del", m1.subnet, "via", m1.addr).CombinedOutput(); derr != nil {
		t.Errorf("removing the route: %v %s", derr, dout)
	}
	if err == nil {
		t.Errorf("m1 forwarded the host's request to c1 (%s): %s", ips["c1"], out)
	}
	// The LAN's drop rule counted them (in wireguard mode skein-wg0 has one too).
	table, _ := inMachine("m1", "nft", "list", "table", "ip", "skein_mesh")
	if m := regexp.MustCompile(`iifname "eth0" counter packets ([0-9]+) `).FindStringSubmatch(table); m == nil || m[1] == "0" {
		t.Errorf("m1's table does not count the host's dropped packets on eth0:\n%s", table)
	}
	// Routed: via the peer's address; WireGuard: a tunnel to its endpoint, with a handshake.
	wantState, wantVia := "routed", func(addr string) string { return addr }
	if meshMode == "wireguard" {
		wantState, wantVia = "tunnel", func(addr string) string { return addr + ":51820" }
	}
	eventually(t, 10*time.Second, func() bool {
		ls := links(t)
		for _, from := range machines {
			for _, to := range machines {
				l := ls[from.name+">"+to.name]
				if from.name != to.name && (l.State != wantState || l.Subnet != to.subnet || l.Via != wantVia(to.addr) || l.Mode != meshMode ||
					(meshMode == "wireguard" && (l.Handshake == nil || l.RxBytes == 0))) {
					return false
				}
			}
		}
		return true
	}, "skein net does not show every path %s: %v", wantState, func() any { return links(t) }())
	var probes []struct {
		Server    string  `json:"server"`
		From      string  `json:"from"`
		Peer      string  `json:"peer"`
		Sent      int     `json:"sent"`
		Received  int     `json:"received"`
		RTTMillis float64 `json:"rtt_ms"`
		Error     string  `json:"error"`
	}
	if err := json.Unmarshal([]byte(mustSkein(t, "net", "check", "-o", "json")), &probes); err != nil {
		t.Fatal(err)
	}
	if len(probes) != 6 {
		t.Errorf("skein net check measured %d paths, want 6: %+v", len(probes), probes)
	}
	for _, p := range probes {
		if p.Received == 0 || p.RTTMillis <= 0 || p.Error != "" || p.From == "" {
			t.Errorf("skein net check: %+v", p)
		}
	}
	t.Logf("skein net check:\n%s", mustSkein(t, "net", "check"))
	route, _ := inMachine("m1", "ip", "route", "show", "proto", "77")
	for _, to := range machines[1:] {
		want := to.subnet + " via " + to.addr
		if meshMode == "wireguard" {
			want = to.subnet + " dev skein-wg0"
		}
		if !strings.Contains(route, want) {
			t.Errorf("m1's routes lack %s:\n%s", want, route)
		}
	}
	t.Logf("9 paths answered; m1's routes:\n%s", route)
}

// A peer whose subnet collides (with a machine's own, or its LAN) or whose
// address is on no shared network is refused by every machine with the
// reason and the fix; no route is made for it, and its removal leaves no
// trace. The peers are heartbeats written with the admin's credentials.
func TestBadPeersAreRefusedWithTheFix(t *testing.T) {
	nc, err := nats.Connect(strings.Replace(natsURL, "tls://", "tls://", 1), nats.UserCredentials(adminCreds), nats.RootCAs(caFile))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	bad := map[string]events.Heartbeat{
		"x-overlap": {Name: "x-overlap", Status: "up", Address: "10.77.200.31", Subnet: "10.77.201.0/24"},
		"x-lan":     {Name: "x-lan", Status: "up", Address: "10.77.200.32", Subnet: "10.77.200.0/24"},
		"x-far":     {Name: "x-far", Status: "up", Address: "172.31.9.9", Subnet: "10.77.209.0/24"},
	}
	want := map[string]string{
		"x-overlap": "overlaps",
		"x-lan":     "collides with this server's route to 10.77.200.0/24",
		"x-far":     "is on no network of this server",
	}
	// Through the store, which signs them with the admin's credentials: the
	// agents take no heartbeat that its server's agent, the admin or the
	// scheduler did not sign.
	hbs, err := bus.OpenStore[events.Heartbeat](t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	for name, hb := range bad {
		hb.Time = time.Now().UTC()
		if _, err := hbs.Put(t.Context(), name, hb); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = hbs.Delete(t.Context(), name, 0) })
	}
	eventually(t, 5*time.Second, func() bool {
		ls := links(t)
		for _, mc := range machines {
			for name, words := range want {
				if l := ls[mc.name+">"+name]; l.State != "refused" || !strings.Contains(l.Problem, words) {
					return false
				}
			}
		}
		return true
	}, "not every machine refuses every bad peer with the reason: %v", func() any { return links(t) }())
	for _, mc := range machines {
		route, _ := inMachine(mc.name, "ip", "route", "show", "proto", "77")
		for _, s := range []string{"10.77.209.0", "10.77.200.0/24 via", "via 10.77.200.31"} {
			if strings.Contains(route, s) {
				t.Errorf("%s made a route for a refused peer (%s):\n%s", mc.name, s, route)
			}
		}
	}
	vs, _ := servers()
	if v := vs["m2"]; !strings.Contains(strings.Join(v.Degraded, "; "), "peer x-far: its address 172.31.9.9 is on no network of this server") {
		t.Errorf("skein servers does not tell m2's refused peer: %v", v.Degraded)
	}
	for name := range bad {
		_ = hbs.Delete(t.Context(), name, 0)
	}
	eventually(t, 5*time.Second, func() bool {
		for k := range links(t) {
			if strings.Contains(k, ">x-") {
				return false
			}
		}
		return true
	}, "the removed peers are still listed")
}

// A machine powered off and on comes back by itself: its agent (a systemd
// unit) rejoins, its container runs again, and the paths to and from it work
// again; while it is off its peers keep their routes to it.
func TestMachinePowerCycle(t *testing.T) {
	mustSkein(t, "launch", "skein-busybox", "pc1", "-s", "m1")
	t.Cleanup(func() { _, _ = skein("delete", "pc1") })
	mustSkein(t, "launch", "skein-busybox", "pc3", "-s", "m3")
	t.Cleanup(func() { _, _ = skein("delete", "pc3") })
	var cs []events.Container
	if err := json.Unmarshal([]byte(mustSkein(t, "list", "-o", "json")), &cs); err != nil {
		t.Fatal(err)
	}
	ips := map[string]string{}
	for _, c := range cs {
		ips[c.Name] = c.IPv4
	}
	eventually(t, 10*time.Second, func() bool { return get("m1", "pc1", ips["pc3"]) == "pc3" }, "pc1 does not reach pc3")
	if out, err := exec.Command("incus", "stop", "--force", "m3", "--project", project).CombinedOutput(); err != nil {
		t.Fatalf("powering m3 off: %v %s", err, out)
	}
	off := time.Now()
	eventually(t, 20*time.Second, func() bool { vs, _ := servers(); return vs["m3"].Status == "down" }, "skein servers does not show m3 down")
	if l := links(t)["m1>m3"]; (l.State != "routed" && l.State != "tunnel") || !l.Down {
		t.Errorf("m1's path to m3 while m3 is off: %+v, want the route kept and m3 down", l)
	}
	if out, err := exec.Command("incus", "start", "m3", "--project", project).CombinedOutput(); err != nil {
		t.Fatalf("powering m3 on: %v %s", err, out)
	}
	on := time.Now()
	eventually(t, 90*time.Second, func() bool { vs, _ := servers(); return vs["m3"].Status != "down" && vs["m3"].Status != "" }, "m3's agent did not come back")
	back := time.Since(on)
	eventually(t, 60*time.Second, func() bool { return get("m1", "pc1", ips["pc3"]) == "pc3" }, "pc1 does not reach pc3 after m3's power cycle: %s", get("m1", "pc1", ips["pc3"]))
	t.Logf("m3 off %.1fs; its agent up %.1fs after power on, pc3 answering pc1 %.1fs after", on.Sub(off).Seconds(), back.Seconds(), time.Since(on).Seconds())
}
