package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
)

var now = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func beat(name, addr, subnet string) events.Heartbeat {
	return events.Heartbeat{Name: name, Status: "up", Address: addr, Subnet: subnet, Time: now}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// m1 on the LAN 10.0.0.0/24 with containers on 10.77.1.0/24.
var m1 = Local{Name: "m1", Address: addr("10.0.0.11"), Subnet: pfx("10.77.1.0/24"),
	Connected: []netip.Prefix{pfx("10.0.0.0/24")}, Routes: []netip.Prefix{pfx("10.0.0.0/24"), pfx("10.77.1.0/24"), pfx("0.0.0.0/0"), pfx("192.168.5.0/24")}}

// Each peer gets a route via its address, or is refused with the reason and
// the fix; a down peer keeps its route; nothing else is touched.
func TestPlan(t *testing.T) {
	peers := []events.Heartbeat{
		beat("m1", "10.0.0.11", "10.77.1.0/24"),
		beat("m2", "10.0.0.12", "10.77.2.0/24"),
		beat("m3", "10.0.0.13", "10.77.3.0/24"),
		beat("same", "10.0.0.11", "10.77.9.0/24"),
		beat("waits", "", ""),
		beat("overlapsme", "10.0.0.20", "10.77.1.128/25"),
		beat("overlapsm2", "10.0.0.21", "10.77.2.0/24"),
		beat("lan", "10.0.0.22", "10.0.0.0/24"),
		beat("collides", "10.0.0.23", "192.168.0.0/16"),
		beat("faraway", "172.16.0.5", "10.77.5.0/24"),
		beat("badnet", "10.0.0.24", "10.77.6.1/24"),
		beat("badaddr", "nope", "10.77.7.0/24"),
		wgBeat("wg", "10.0.0.25", "10.77.8.0/24", "", ""),
	}
	down := beat("m3", "10.0.0.13", "10.77.3.0/24")
	down.Time = now.Add(-time.Minute)
	peers[2] = down
	routes, links := Plan(m1, peers, now, 7*time.Second)
	want := []Route{{Dst: pfx("10.77.2.0/24"), Via: addr("10.0.0.12")}, {Dst: pfx("10.77.3.0/24"), Via: addr("10.0.0.13")}}
	if !slices.Equal(routes, want) {
		t.Errorf("routes %v, want %v", routes, want)
	}
	states := map[string]Link{}
	for _, l := range links {
		states[l.Peer] = l
	}
	if _, ok := states["m1"]; ok {
		t.Error("a link to itself")
	}
	for peer, want := range map[string]string{
		"m2": "routed", "m3": "routed", "same": "same host", "waits": "waiting",
		"overlapsme": "refused: its subnet 10.77.1.128/25 overlaps this server's 10.77.1.0/24: give each server a /24 of its own",
		"overlapsm2": "refused: its subnet 10.77.2.0/24 overlaps m2's",
		"lan":        "refused: its subnet 10.0.0.0/24 collides with this server's route to 10.0.0.0/24",
		"collides":   "refused: its subnet 192.168.0.0/16 collides with this server's route to 192.168.5.0/24",
		"faraway":    "refused: its address 172.16.0.5 is on no network of this server (10.0.0.0/24): servers on different networks need the wireguard mode",
		"badnet":     `refused: its subnet "10.77.6.1/24" is not an IPv4 network`,
		"badaddr":    `refused: its address "nope" is not a unicast IPv4 address`,
		"wg":         "refused: it connects by WireGuard (--mesh wireguard): give every server the same --mesh",
	} {
		l := states[peer]
		got := l.State
		if l.Problem != "" {
			got += ": " + l.Problem
		}
		if !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, want %q", peer, got, want)
		}
	}
	if !states["m3"].Down || states["m2"].Down {
		t.Errorf("down: m3 %v m2 %v", states["m3"].Down, states["m2"].Down)
	}
}

// What a heartbeat written past the store's checks says cannot make this
// server's own heartbeat invalid: a peer without a valid name is left out,
// the rest is quoted in ASCII and cut short.
func TestForgedPeersKeepTheHeartbeatValid(t *testing.T) {
	long := strings.Repeat("é\n", 700)
	_, links := Plan(m1, []events.Heartbeat{beat("bad name!", "10.0.0.9", "10.77.9.0/24"), beat("addr", long, "10.77.6.0/24"), beat("subnet", "10.0.0.7", long)}, now, 7*time.Second)
	m := events.Mesh{Mode: ModeRouted}
	for _, l := range links {
		if l.Peer == "bad name!" {
			t.Errorf("a peer without a valid name is listed")
		}
		m.Peers = append(m.Peers, events.MeshPeer{Name: l.Peer, Subnet: l.Subnet, Via: l.Via, State: l.State, Problem: l.Problem})
	}
	if len(m.Peers) != 2 {
		t.Errorf("%d peers: %+v", len(m.Peers), m.Peers)
	}
	b, _ := json.Marshal(events.Heartbeat{Name: "m1", Status: "up", Mesh: &m, Time: now})
	if err := events.ValidateState(events.TypeHeartbeat, b); err != nil {
		t.Errorf("this server's heartbeat is refused: %v", err)
	}
}

// fakeRouter is a route table in memory.
type fakeRouter struct {
	addrs, others []netip.Prefix
	routes        []Route
	forward       bool
	failReplace   error
	failLimit     error
	limited       *ForwardPolicy
	calls         []string
}

func (f *fakeRouter) Routes() ([]Route, error) { return slices.Clone(f.routes), nil }
func (f *fakeRouter) Replace(r Route) error {
	f.calls = append(f.calls, "replace "+r.Dst.String())
	if f.failReplace != nil {
		return f.failReplace
	}
	f.routes = slices.DeleteFunc(f.routes, func(x Route) bool { return x.Dst == r.Dst })
	f.routes = append(f.routes, r)
	return nil
}
func (f *fakeRouter) Delete(r Route) error {
	f.calls = append(f.calls, "delete "+r.Dst.String())
	f.routes = slices.DeleteFunc(f.routes, func(x Route) bool { return x == r })
	return nil
}
func (f *fakeRouter) Local() ([]netip.Prefix, []netip.Prefix, error) { return f.addrs, f.others, nil }
func (f *fakeRouter) Forward() error                                 { f.forward = true; return nil }
func (f *fakeRouter) LimitForwarding(p ForwardPolicy) error {
	if f.failLimit != nil {
		return f.failLimit
	}
	f.limited = &p
	return nil
}

func newWorker(r Router, gw string) *Worker {
	return New(Config{Server: "m1", Router: r, DownAfter: 7 * time.Second, Log: zerolog.Nop(),
		Self: func() (netip.Addr, netip.Prefix, netip.Addr, bool) {
			return addr("10.0.0.11"), pfx("10.77.1.0/24"), addr(gw), true
		}})
}

// Converge makes what is missing, changes what moved, removes what no peer
// needs any more, turns forwarding on, and does nothing the second time.
func TestConverge(t *testing.T) {
	r := &fakeRouter{addrs: []netip.Prefix{pfx("10.0.0.11/24"), pfx("10.77.1.1/24")}, others: []netip.Prefix{pfx("10.0.0.0/24"), pfx("10.77.1.0/24")},
		routes: []Route{{Dst: pfx("10.77.9.0/24"), Via: addr("10.0.0.19")}, {Dst: pfx("10.77.3.0/24"), Via: addr("10.0.0.99")}}}
	w := newWorker(r, "10.77.1.1")
	peers := []events.Heartbeat{beat("m2", "10.0.0.12", "10.77.2.0/24"), beat("m3", "10.0.0.13", "10.77.3.0/24")}
	w.Converge(context.Background(), peers)
	want := []Route{{Dst: pfx("10.77.2.0/24"), Via: addr("10.0.0.12")}, {Dst: pfx("10.77.3.0/24"), Via: addr("10.0.0.13")}}
	got := slices.Clone(r.routes)
	slices.SortFunc(got, func(a, b Route) int { return strings.Compare(a.Dst.String(), b.Dst.String()) })
	if !slices.Equal(got, want) || !r.forward {
		t.Fatalf("routes %v (forwarding %v), want %v", got, r.forward, want)
	}
	r.calls = nil
	w.Converge(context.Background(), peers)
	if len(r.calls) != 0 {
		t.Errorf("a second converge changed %v", r.calls)
	}
	if s := w.Status(); s.Mode != ModeRouted || len(s.Peers) != 2 || s.Peers[0].State != StateRouted {
		t.Errorf("status %+v", s)
	}
	// The route table refuses: the peer is told, with the kernel's words.
	r2 := &fakeRouter{addrs: r.addrs, others: r.others, failReplace: errors.New("network is unreachable")}
	w2 := newWorker(r2, "10.77.1.1")
	w2.Converge(context.Background(), peers[:1])
	if p := w2.Problems(); len(p) != 1 || !strings.Contains(p[0], "peer m2: the route was not made") || !strings.Contains(p[0], "unreachable") {
		t.Errorf("problems %q", p)
	}
}

// An agent whose container bridge is not on its host (a network namespace
// beside it) changes nothing and says why, without counting as a fault.
func TestBridgeElsewhereLeavesRoutesAlone(t *testing.T) {
	r := &fakeRouter{addrs: []netip.Prefix{pfx("10.0.0.11/24")}}
	w := newWorker(r, "10.77.1.1")
	w.Converge(context.Background(), []events.Heartbeat{beat("m2", "10.0.0.12", "10.77.2.0/24")})
	if len(r.calls) != 0 || r.forward {
		t.Errorf("it acted: %v", r.calls)
	}
	if s := w.Status(); s.Mode != ModeOff || !strings.Contains(s.Problem, "not on this host") || len(w.Problems()) != 0 {
		t.Errorf("status %+v, problems %v", s, w.Problems())
	}
}

// What busybox's and iputils' ping print is read into counts and the average.
func TestParsePing(t *testing.T) {
	for _, tc := range []struct {
		out     string
		s, r    int
		rtt     float64
		problem string
	}{
		{"--- 10.77.203.9 ping statistics ---\n3 packets transmitted, 3 packets received, 0% packet loss\nround-trip min/avg/max = 0.142/0.196/0.289 ms\n", 3, 3, 0.196, ""},
		{"3 packets transmitted, 3 received, 0% packet loss, time 2003ms\nrtt min/avg/max/mdev = 0.051/0.070/0.093/0.017 ms\n", 3, 3, 0.070, ""},
		{"3 packets transmitted, 0 packets received, 100% packet loss\n", 3, 0, 0, "no reply"},
		{"ping: sendto: Network is unreachable\n", 0, 0, 0, "ping said: ping: sendto: Network is unreachable"},
	} {
		s, r, rtt, p := parsePing(tc.out)
		if s != tc.s || r != tc.r || rtt != tc.rtt || p != tc.problem {
			t.Errorf("%q: %d %d %v %q", tc.out, s, r, rtt, p)
		}
	}
}

// fakeContainers runs ping in memory: only "app" has it; pings to 10.0.0.9 go unanswered.
type fakeContainers struct{}

func (fakeContainers) List(context.Context) ([]container.Instance, error) {
	return []container.Instance{{Name: "app", Status: "Running", IPv4: "10.77.1.5"}, {Name: "a-svc", Status: "Running", IPv4: "10.77.1.4"}, {Name: "off", Status: "Stopped"}}, nil
}

func (fakeContainers) Exec(_ context.Context, name string, argv ...string) (container.ExecResult, error) {
	if name != "app" || argv[0] != "ping" {
		return container.ExecResult{Code: 127, Stderr: []byte("ping: not found")}, nil
	}
	if argv[len(argv)-1] == "10.0.0.9" {
		return container.ExecResult{Code: 1, Stdout: []byte("3 packets transmitted, 0 packets received, 100% packet loss\n")}, nil
	}
	return container.ExecResult{Stdout: []byte("3 packets transmitted, 3 packets received, 0% packet loss\nround-trip min/avg/max = 0.1/0.25/0.4 ms\n")}, nil
}

// A probe measures from the first running container that has ping, each
// target in the order asked, and says why a target was not measured.
func TestProbe(t *testing.T) {
	run := ProbeWith(fakeContainers{})
	out, err := run(context.Background(), nil, events.MeshProbe{Targets: []events.ProbeTarget{
		{Peer: "m2", Container: "c2", Addr: "10.77.2.5"}, {Peer: "m3", Container: "c3", Addr: "10.0.0.9"}, {Peer: "m4", Container: "c4", Addr: "nope"}}})
	if err != nil {
		t.Fatal(err)
	}
	if out.From != "app" || len(out.Results) != 3 {
		t.Fatalf("%+v", out)
	}
	if r := out.Results[0]; r.Peer != "m2" || r.Received != 3 || r.RTTMillis != 0.25 || r.Error != "" {
		t.Errorf("m2: %+v", r)
	}
	if r := out.Results[1]; r.Received != 0 || r.Error != "no reply" {
		t.Errorf("m3: %+v", r)
	}
	if r := out.Results[2]; r.Error != "not an IPv4 address" {
		t.Errorf("m4: %+v", r)
	}
}
