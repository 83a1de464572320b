//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/workers/containers"
)

type serverView struct {
	Name     string   `json:"name"`
	Status   string   `json:"status"`
	Subnet   string   `json:"subnet"`
	Degraded []string `json:"degraded"`
}

func serverStatus(t *testing.T) map[string]serverView {
	t.Helper()
	var views []serverView
	if err := json.Unmarshal([]byte(mustSkein(t, "servers", "-o", "json")), &views); err != nil {
		t.Fatal(err)
	}
	out := map[string]serverView{}
	for _, v := range views {
		out[v.Name] = v
	}
	return out
}

// Three agents register; one killed shows as down within 15 s and up again after a restart.
func TestServersRegisterAndGoDown(t *testing.T) {
	dumpOnFailure(t)
	st := serverStatus(t)
	for _, s := range servers {
		v, ok := st[s.name]
		if !ok || v.Status != "up" {
			t.Fatalf("server %s: %+v, want up", s.name, v)
		}
		if v.Subnet != s.subnet+"0/24" {
			t.Errorf("server %s subnet %q, want %s0/24", s.name, v.Subnet, s.subnet)
		}
	}
	agents["s3"].kill9()
	killed := time.Now()
	eventually(t, 15*time.Second, func() bool { return serverStatus(t)["s3"].Status == "down" }, "s3 still up after its agent was killed")
	t.Logf("s3 shown down %.1fs after kill -9", time.Since(killed).Seconds())
	if serverStatus(t)["s1"].Status != "up" {
		t.Fatal("s1 went down with s3")
	}
	agents["s3"].start()
	eventually(t, 15*time.Second, func() bool { return serverStatus(t)["s3"].Status == "up" }, "s3 not up after restart")
}

// c1..c5 across s1..s3: launched, listed with addresses, serving HTTP, stopped, started, deleted.
func TestContainersAcrossServers(t *testing.T) {
	dumpOnFailure(t)
	placement := map[string]string{"c1": "s1", "c2": "s1", "c3": "s2", "c4": "s2", "c5": "s3"}
	names := []string{"c1", "c2", "c3", "c4", "c5"}
	cleanup(t, names...)
	for _, n := range names {
		out := mustSkein(t, "launch", "skein-busybox", n, "-s", placement[n])
		if !strings.Contains(out, "launched "+n+" on "+placement[n]) {
			t.Errorf("launch %s said %q", n, out)
		}
	}
	cs := list(t)
	for _, n := range names {
		c := find(cs, n)
		if c == nil {
			t.Fatalf("%s missing from skein list", n)
		}
		prefix := map[string]string{"s1": "10.77.1.", "s2": "10.77.2.", "s3": "10.77.3."}[placement[n]]
		if c.Server != placement[n] || c.Status != "Running" || !strings.HasPrefix(c.IPv4, prefix) {
			t.Fatalf("%s listed as %+v, want Running on %s with an address in %s0/24", n, c, placement[n], prefix)
		}
		body, err := httpGet(c.IPv4)
		if err != nil || body != n {
			t.Fatalf("GET http://%s/ = %q, %v; want the hostname %s", c.IPv4, body, err, n)
		}
		if !contains(incusNames(t, "skein-"+placement[n]), n) {
			t.Fatalf("incus does not have %s in project skein-%s", n, placement[n])
		}
	}
	ip := find(cs, "c3").IPv4
	mustSkein(t, "stop", "c3")
	if c := find(list(t), "c3"); c == nil || c.Status != "Stopped" {
		t.Fatalf("c3 after stop: %+v", c)
	}
	if _, err := httpGet(ip); err == nil {
		t.Fatal("c3 still answers HTTP after stop")
	}
	out := mustSkein(t, "start", "c3")
	if !strings.Contains(out, "started c3 on s2") {
		t.Errorf("start said %q", out)
	}
	c3 := find(list(t), "c3")
	if c3 == nil || c3.Status != "Running" {
		t.Fatalf("c3 after start: %+v", c3)
	}
	if body, err := httpGet(c3.IPv4); err != nil || body != "c3" {
		t.Fatalf("c3 after start: GET = %q, %v", body, err)
	}
	// Its address is its own: reserved in Incus, kept across a stop and start.
	if c3.IPv4 != ip {
		t.Errorf("c3 had %s, after stop and start %s", ip, c3.IPv4)
	}
	if got, _ := incusCmd("config", "device", "get", "c3", "eth0", "ipv4.address", "--project", "skein-s2"); strings.TrimSpace(got) != ip {
		t.Errorf("c3's address %s is not reserved in Incus (eth0 ipv4.address %q)", ip, strings.TrimSpace(got))
	}
	mustSkein(t, "restart", "c5")
	if c := find(list(t), "c5"); c == nil || c.Status != "Running" {
		t.Fatalf("c5 after restart: %+v", c)
	}
	for _, n := range names {
		mustSkein(t, "delete", n)
	}
	cs = list(t)
	for _, n := range names {
		if find(cs, n) != nil {
			t.Errorf("%s still listed after delete", n)
		}
		if contains(incusNames(t, "skein-"+placement[n]), n) {
			t.Errorf("%s still in incus after delete", n)
		}
	}
}

// An address skein's list lacks but the server's network has (a container
// of another project on the bridge) is refused by Incus, naming it; the
// launch takes another address instead of failing.
func TestLaunchAvoidsAnAddressTakenOutside(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "taken1")
	t.Cleanup(func() { _, _ = incusCmd("delete", "-f", "outsider", "--project", "default") })
	netAddr, _ := incusCmd("network", "get", "skeinbr1", "ipv4.address")
	ranges, _ := incusCmd("network", "get", "skeinbr1", "ipv4.dhcp.ranges")
	gw, err := netip.ParsePrefix(strings.TrimSpace(netAddr))
	if err != nil {
		t.Fatalf("skeinbr1's address %q: %v", netAddr, err)
	}
	sn := container.Subnet{Prefix: gw.Masked(), Gateway: gw.Addr()}
	if a, b, ok := strings.Cut(strings.TrimSpace(ranges), "-"); ok {
		sn.First, sn.Last = netip.MustParseAddr(a), netip.MustParseAddr(b)
	}
	// What s1's agent would pick for taken1, given what its project holds.
	var insts []struct {
		Devices map[string]map[string]string `json:"expanded_devices"`
		State   *struct {
			Network map[string]struct {
				Addresses []struct{ Address string } `json:"addresses"`
			} `json:"network"`
		} `json:"state"`
	}
	raw, err := incusCmd("list", "--project", "skein-s1", "-f", "json")
	if err != nil || json.Unmarshal([]byte(raw), &insts) != nil {
		t.Fatalf("incus list: %v %s", err, raw)
	}
	used := map[netip.Addr]bool{}
	for _, i := range insts {
		if a, err := netip.ParseAddr(i.Devices["eth0"]["ipv4.address"]); err == nil {
			used[a] = true
		}
		if i.State != nil {
			for _, a := range i.State.Network["eth0"].Addresses {
				if a, err := netip.ParseAddr(a.Address); err == nil {
					used[a] = true
				}
			}
		}
	}
	want, ok := containers.PickAddress(sn, "taken1", used)
	if !ok {
		t.Fatal("no free address on skeinbr1")
	}
	if out, err := incusCmd("init", "skein-busybox", "outsider", "--project", "default", "--no-profiles", "-s", "skein", "-n", "skeinbr1", "-d", "eth0,ipv4.address="+want.String()); err != nil {
		t.Fatalf("incus init outsider: %v %s", err, out)
	}
	mustSkein(t, "launch", "skein-busybox", "taken1", "-s", "s1")
	c := find(list(t), "taken1")
	if c == nil || c.IPv4 == "" || c.IPv4 == want.String() {
		t.Fatalf("taken1 listed as %+v; want an address other than %s, which outsider holds", c, want)
	}
	if a := netip.MustParseAddr(c.IPv4); a.Less(sn.First) || sn.Last.Less(a) {
		t.Errorf("taken1 got %s, outside the DHCP range %s-%s skein picks from", a, sn.First, sn.Last)
	}
	if got, _ := incusCmd("config", "device", "get", "taken1", "eth0", "ipv4.address", "--project", "skein-s1"); strings.TrimSpace(got) != c.IPv4 {
		t.Errorf("taken1's address %s is not reserved in Incus (eth0 ipv4.address %q)", c.IPv4, strings.TrimSpace(got))
	}
	if body, err := httpGet(c.IPv4); err != nil || body != "taken1" {
		t.Errorf("GET http://%s/ = %q, %v", c.IPv4, body, err)
	}
}

// Bad input gives a clear error and creates nothing.
func TestBadInputCreatesNothing(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "bad1")
	mustSkein(t, "launch", "skein-busybox", "bad1", "-s", "s1")
	before := list(t)
	incusBefore := map[string][]string{}
	for _, s := range servers {
		incusBefore[s.project] = incusNames(t, s.project)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown server", []string{"launch", "skein-busybox", "bad2", "-s", "s9"}, `unknown server "s9": known servers are s1, s2, s3`},
		{"unknown image", []string{"launch", "no-such-image", "bad2", "-s", "s1"}, `image "no-such-image" is neither on server s1 nor on the bus`},
		{"duplicate name", []string{"launch", "skein-busybox", "bad1", "-s", "s2"}, "a container named bad1 already exists on server s1"},
		{"duplicate name, forced past the CLI check", []string{"launch", "skein-busybox", "bad1", "-s", "s2", "--id", "dupname-" + events.NewID()}, "a container named bad1 already exists on server s1"},
		{"address outside the subnet", []string{"launch", "skein-busybox", "bad2", "-s", "s1", "--ip", "10.77.2.20"}, "--ip 10.77.2.20 is not usable on server s1: pick one inside its container subnet 10.77.1.0/24"},
		{"gateway address", []string{"launch", "skein-busybox", "bad2", "-s", "s1", "--ip", "10.77.1.1"}, "not usable on server s1"},
		{"not an address", []string{"launch", "skein-busybox", "bad2", "-s", "s1", "--ip", "10.77.1"}, "is not an IPv4 address"},
		{"bad name", []string{"launch", "skein-busybox", "2bad", "-s", "s1"}, "bad container name"},
		{"unknown container", []string{"stop", "nope"}, `no container named "nope"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errOut := skeinFails(t, tc.args...)
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("error %q does not say %q", strings.TrimSpace(errOut), tc.want)
			}
		})
	}
	after := list(t)
	if len(after) != len(before) {
		t.Errorf("skein list changed: before %v, after %v", before, after)
	}
	for _, s := range servers {
		if got := incusNames(t, s.project); strings.Join(got, ",") != strings.Join(incusBefore[s.project], ",") {
			t.Errorf("incus %s changed: %v -> %v", s.project, incusBefore[s.project], got)
		}
	}
}

// Changes made with the incus CLI behind skein's back become skein events within 2 s,
// seen by `skein events --follow` and by a plain NATS subscriber.
func TestIncusCLIChangesBecomeEvents(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "ev1")
	mustSkein(t, "launch", "skein-busybox", "ev1", "-s", "s2")

	nc, err := natsConnect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	plain := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe("skein.event.s2.container.*", plain)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	follow := exec.Command(skeinBin, "--nats", natsURL, "--creds", adminCreds, "events", "--follow", "--type", "container.*", "-o", "json")
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, _ := follow.StderrPipe()
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = follow.Process.Kill(); _ = follow.Wait() }()
	ready := make([]byte, 64)
	if _, err := stderr.Read(ready); err != nil || !strings.Contains(string(ready), "following") {
		t.Fatalf("skein events --follow did not start: %q %v", ready, err)
	}
	cliLines := make(chan string, 64)
	go func() {
		buf := make([]byte, 0, 4096)
		tmp := make([]byte, 4096)
		for {
			n, err := stdout.Read(tmp)
			buf = append(buf, tmp[:n]...)
			for {
				i := strings.IndexByte(string(buf), '\n')
				if i < 0 {
					break
				}
				cliLines <- string(buf[:i])
				buf = buf[i+1:]
			}
			if err != nil {
				close(cliLines)
				return
			}
		}
	}()

	waitBoth := func(typ string, since time.Time) {
		t.Helper()
		deadline := time.After(2 * time.Second)
		var sawPlain, sawCLI bool
		for !sawPlain || !sawCLI {
			select {
			case m := <-plain:
				env, err := events.Decode(m.Data)
				if err != nil {
					t.Fatalf("plain subscriber got an invalid event: %v", err)
				}
				var ce events.ContainerEvent
				_ = env.Payload(&ce)
				if env.Type == typ && ce.Name == "ev1" && m.Subject == bus.EventSubject("s2", typ) {
					sawPlain = true
					t.Logf("plain NATS: %s after %s", typ, time.Since(since).Round(time.Millisecond))
				}
			case line, ok := <-cliLines:
				if !ok {
					t.Fatal("skein events --follow ended")
				}
				env, err := events.Decode([]byte(line))
				if err != nil {
					t.Fatalf("skein events printed an invalid event %q: %v", line, err)
				}
				var ce events.ContainerEvent
				_ = env.Payload(&ce)
				if env.Type == typ && ce.Name == "ev1" {
					sawCLI = true
					t.Logf("skein events: %s after %s", typ, time.Since(since).Round(time.Millisecond))
				}
			case <-deadline:
				t.Fatalf("%s not seen within 2s (plain NATS: %v, skein events: %v)", typ, sawPlain, sawCLI)
			}
		}
	}
	start := time.Now()
	if out, err := incusCmd("stop", "ev1", "--project", "skein-s2"); err != nil {
		t.Fatalf("incus stop: %v %s", err, out)
	}
	waitBoth(events.TypeContainerStopped, start)
	eventually(t, 5*time.Second, func() bool { c := find(list(t), "ev1"); return c != nil && c.Status == "Stopped" }, "skein list does not show ev1 stopped")

	start = time.Now()
	if out, err := incusCmd("start", "ev1", "--project", "skein-s2"); err != nil {
		t.Fatalf("incus start: %v %s", err, out)
	}
	waitBoth(events.TypeContainerStarted, start)
	eventually(t, 20*time.Second, func() bool { c := find(list(t), "ev1"); return c != nil && c.Status == "Running" && c.IPv4 != "" }, "skein list does not show ev1 running with an address")
}

// The same command published twice with the same id creates one container.
func TestSameCommandIDTwiceCreatesOne(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "dup1")
	id := "dup-" + events.NewID()
	out1 := mustSkein(t, "launch", "skein-busybox", "dup1", "-s", "s1", "--id", id)
	out2 := mustSkein(t, "launch", "skein-busybox", "dup1", "-s", "s1", "--id", id)
	if out1 != out2 {
		t.Errorf("second delivery answered differently: %q vs %q", out1, out2)
	}
	// And straight onto the subject, twice, with the NATS dedup header.
	nc, err := natsConnect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	env, err := events.New(events.TypeLaunch, "test", "s1", events.Launch{Name: "dup2", Image: "skein-busybox"})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, "dup2")
	raw, _ := env.Marshal()
	var results atomic.Int32
	sub, _ := nc.Subscribe(bus.ResultSubject("s1", env.ID), func(*nats.Msg) { results.Add(1) })
	defer sub.Unsubscribe()
	for i := 0; i < 2; i++ {
		m := nats.NewMsg(bus.CommandSubject("s1", events.TypeLaunch))
		m.Data = raw
		m.Header.Set(nats.MsgIdHdr, env.ID)
		reply, err := nc.RequestMsg(withMAC(t, m, "s1"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var ack struct {
			Duplicate bool `json:"duplicate"`
		}
		_ = json.Unmarshal(reply.Data, &ack)
		if ack.Duplicate != (i == 1) {
			t.Fatalf("publish %d: JetStream ack %s", i+1, reply.Data)
		}
	}
	eventually(t, 30*time.Second, func() bool { return results.Load() >= 1 }, "no result for dup2")
	eventually(t, 30*time.Second, func() bool { c := find(list(t), "dup2"); return c != nil && c.Status == "Running" }, "dup2 not running")
	n := 0
	for _, name := range incusNames(t, "skein-s1") {
		if name == "dup1" || name == "dup2" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("incus has %d of dup1/dup2, want exactly one each", n)
	}
	if got := results.Load(); got != 1 {
		t.Fatalf("%d results for one command, want 1", got)
	}
}

// A schema-invalid message published straight onto the command subject gets an
// error result and is not redelivered.
func TestInvalidMessageIsTerminated(t *testing.T) {
	dumpOnFailure(t)
	nc, err := natsConnect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	id := "bad-" + events.NewID()
	raw := fmt.Sprintf(`{"id":%q,"type":"container.launch","v":1,"time":%q,"source":"test","server":"s1","data":{"name":"9 bad!","image":""}}`, id, time.Now().UTC().Format(time.RFC3339Nano))
	var results atomic.Int32
	got := make(chan *nats.Msg, 4)
	sub, _ := nc.Subscribe(bus.ResultSubject("s1", id), func(m *nats.Msg) { results.Add(1); got <- m })
	defer sub.Unsubscribe()
	_ = nc.Flush()
	m := nats.NewMsg(bus.CommandSubject("s1", events.TypeLaunch))
	m.Data = []byte(raw)
	if _, err := nc.RequestMsg(withMAC(t, m, "s1"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		env, err := events.Decode(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		var res events.Result
		_ = env.Payload(&res)
		if res.OK || res.Error == nil || res.Error.Code != "invalid" || !strings.Contains(res.Error.Message, "/name") {
			t.Fatalf("result %+v, want an invalid error naming /name", res)
		}
		t.Logf("error result: %s", res.Error.Message)
	case <-time.After(10 * time.Second):
		t.Fatal("no error result for an invalid command")
	}
	// Terminated means: nothing pending, nothing redelivered, and gone from the work queue.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, bus.StreamCommands, bus.AgentConsumerName("s1"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool {
		info, err := cons.Info(ctx)
		if err != nil {
			return false
		}
		st, err := js.Stream(ctx, bus.StreamCommands)
		if err != nil {
			return false
		}
		sinfo, err := st.Info(ctx, jetstream.WithSubjectFilter(bus.CommandSubject("s1", events.TypeLaunch)))
		return err == nil && info.NumAckPending == 0 && info.NumRedelivered == 0 && len(sinfo.State.Subjects) == 0
	}, "the invalid command is still pending or was redelivered")
	if n := results.Load(); n != 1 {
		t.Fatalf("%d results, want 1", n)
	}
	out, err := exec.Command("incus", "list", "--project", "skein-s1", "-f", "csv", "-c", "n").CombinedOutput()
	if err != nil || strings.Contains(string(out), "9 bad") {
		t.Fatalf("incus list: %s %v", out, err)
	}
}
