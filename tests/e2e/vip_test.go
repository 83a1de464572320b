//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// The servers' LAN of the test bed: skein-ns1..3 are servers (10.77.100.11-13),
// skein-nsc a client (10.77.100.20), the host 10.77.100.1 (tests/testbed).
const (
	lanHost = "10.77.100.1"
	vipAddr = "10.77.100.50"
)

// vipBed is a bus on the LAN with agents v1, v2 (and v3) each in its
// server's namespace, and an HTTP responder per server answering its name.
type vipBed struct {
	t      testing.TB
	data   string
	url    string
	ca     string
	admin  string
	agents map[string]*proc
	httpd  map[int]*exec.Cmd // the responders by server number
	www    map[int]string    // their document roots
}

func (b *vipBed) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 75*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, skeinBin, append([]string{"--nats", b.url, "--creds", b.admin, "--tls-ca", b.ca, "--timeout", "60s"}, args...)...).CombinedOutput()
	return string(out), err
}

func (b *vipBed) must(args ...string) string {
	b.t.Helper()
	out, err := b.cli(args...)
	if err != nil {
		b.t.Fatalf("skein %v: %v\n%s", args, err, out)
	}
	return out
}

func (b *vipBed) startAgent(n int) {
	name := fmt.Sprintf("v%d", n)
	creds := filepath.Join(b.data, "creds-"+name)
	if out, err := exec.Command(skeinBin, "creds", "agent", name, "--data", b.data, "-o", creds).CombinedOutput(); err != nil {
		b.t.Fatalf("creds agent %s: %v %s", name, err, out)
	}
	b.agents[name] = startProcIn(fmt.Sprintf("skein-ns%d", n), "vip-agent-"+name, "agent", "--name", name, "--nats", b.url,
		"--creds", filepath.Join(creds, "agent-"+name+".creds"), "--tls-ca", filepath.Join(creds, "ca.pem"),
		"--network", fmt.Sprintf("skeinbr%d", 4+(n+1)%2), "--incus-project", fmt.Sprintf("skein-s%d", 4+(n+1)%2), "--pool", "skein",
		"--state", b.state(name))
}

func (b *vipBed) state(name string) string { return filepath.Join(b.data, "agent-"+name) }

// keepalivedPIDs are the processes of an agent's keepalived (main and VRRP).
func (b *vipBed) keepalivedPIDs(name string) []int {
	var out []int
	for _, f := range []string{"keepalived.pid", "vrrp.pid"} {
		raw, err := os.ReadFile(filepath.Join(b.state(name), "keepalived", f))
		if pid, e := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && e == nil && syscall.Kill(pid, 0) == nil {
			out = append(out, pid)
		}
	}
	return out
}

// backupEntries counts the times server n's keepalived entered the BACKUP state.
func (b *vipBed) backupEntries(n int) int {
	raw, _ := os.ReadFile(filepath.Join(b.state(fmt.Sprintf("v%d", n)), "keepalived", "keepalived.log"))
	return strings.Count(string(raw), "Entering BACKUP STATE")
}

// holds says whether server n has the VIP on its interface.
func holds(n int) bool {
	out, _ := exec.Command("ip", "-n", fmt.Sprintf("skein-ns%d", n), "-4", "addr", "show", "dev", "eth0").CombinedOutput()
	return strings.Contains(string(out), " "+vipAddr+"/")
}

// answer is who answers http://VIP/ from the client namespace ("" for none).
func answer() string {
	out, err := exec.Command("ip", "netns", "exec", "skein-nsc", "curl", "-s", "--max-time", "0.2", "http://"+vipAddr+"/").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// waitAnswer polls every 50 ms until want answers; it returns how long that took.
func waitAnswer(t testing.TB, want string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if answer() == want {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s does not answer for %s after %s (holders: v1 %v, v2 %v)", want, vipAddr, limit, holds(1), holds(2))
	return 0
}

// oneHolder samples both namespaces every 50 ms for d: exactly one holds the IP each time.
func oneHolder(t *testing.T, d time.Duration) {
	t.Helper()
	bad := 0
	n := 0
	for start := time.Now(); time.Since(start) < d; n++ {
		if h1, h2 := holds(1), holds(2); h1 == h2 {
			bad++
			t.Errorf("sample %d: v1 holds %v, v2 holds %v", n, h1, h2)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if bad > 0 {
		t.Errorf("%d of %d samples without exactly one holder", bad, n)
	}
}

func (b *vipBed) holder() string {
	var views []struct {
		Name    string `json:"name"`
		Holder  string `json:"holder"`
		Holders int    `json:"holders"`
	}
	out, _ := b.cli("listvips", "-o", "json")
	if json.Unmarshal([]byte(out), &views) != nil || len(views) != 1 || views[0].Holders < 1 {
		return ""
	}
	return views[0].Holder
}

// newVIPBed starts a bus on the LAN (TLS, as beyond loopback it must), agents
// v1..v3 in their namespaces, and a responder per server; all stop with tb.
func newVIPBed(t testing.TB) *vipBed {
	b := &vipBed{t: t, data: t.TempDir(), agents: map[string]*proc{}, httpd: map[int]*exec.Cmd{}, www: map[int]string{}}
	b.url = fmt.Sprintf("tls://%s:%d", lanHost, freePort())
	srv := startProc("vip-server", "server", "--data", b.data, "--listen", strings.TrimPrefix(b.url, "tls://"))
	t.Cleanup(srv.stop)
	// Registered before the agents' stops: cleanups run last first.
	t.Cleanup(func() {
		if t.Failed() {
			srv.dumpLog()
			for _, a := range b.agents {
				a.dumpLog()
			}
		}
	})
	b.ca, b.admin = filepath.Join(b.data, "tls", "ca.pem"), filepath.Join(b.data, "auth", "admin.creds")
	testutil.Eventually(t, 20*time.Second, func() bool {
		_, e1 := os.Stat(b.ca)
		_, e2 := os.Stat(b.admin)
		return e1 == nil && e2 == nil
	}, "the server made no CA or admin credentials")
	for n := 1; n <= 3; n++ {
		lanRoute(n)
		b.startAgent(n)
	}
	t.Cleanup(func() {
		for name, a := range b.agents {
			a.stop()
			for _, pid := range b.keepalivedPIDs(name) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		for n := 1; n <= 2; n++ {
			_ = exec.Command("ip", "-n", fmt.Sprintf("skein-ns%d", n), "addr", "del", vipAddr+"/24", "dev", "eth0").Run()
			_ = exec.Command("ip", "-n", fmt.Sprintf("skein-ns%d", n), "link", "set", "eth0", "up").Run()
			lanRoute(n)
		}
	})
	testutil.Eventually(t, 30*time.Second, func() bool {
		out, err := b.cli("servers", "-o", "json")
		return err == nil && strings.Count(out, `"status": "up"`) == 3
	}, "the agents in the namespaces are not up over the LAN")
	// The HTTP responders: one per server, answering its name on port 80.
	for n := 1; n <= 2; n++ {
		b.www[n] = t.TempDir()
		_ = os.WriteFile(filepath.Join(b.www[n], "index.html"), []byte(fmt.Sprintf("v%d\n", n)), 0o644)
		b.startHTTPD(n)
	}
	t.Cleanup(func() {
		for n := range b.httpd {
			b.stopHTTPD(n)
		}
	})

	return b
}

// lanRoute routes server n's namespace to the containers' networks through
// the host, as the test bed sets it up.
func lanRoute(n int) {
	_ = exec.Command("ip", "-n", fmt.Sprintf("skein-ns%d", n), "route", "replace", "10.77.0.0/16", "via", lanHost, "dev", "eth0").Run()
}

// startHTTPD starts server n's responder (busybox httpd on port 80 in its namespace).
func (b *vipBed) startHTTPD(n int) {
	httpd := exec.Command("ip", "netns", "exec", fmt.Sprintf("skein-ns%d", n), "busybox", "httpd", "-f", "-p", "80", "-h", b.www[n])
	if err := httpd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.httpd[n] = httpd
}

// stopHTTPD stops server n's responder.
func (b *vipBed) stopHTTPD(n int) {
	if h := b.httpd[n]; h != nil {
		_ = h.Process.Kill()
		_ = h.Wait()
		delete(b.httpd, n)
	}
}

// healthy says whether a container passes its checks, as its server's
// health record says.
func (b *vipBed) healthy(container string) bool {
	nc, err := nats.Connect(b.url, nats.UserCredentials(b.admin), nats.RootCAs(b.ca))
	if err != nil {
		return false
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "skein_health")
	if err != nil {
		return false
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return false
	}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var h events.Health
		// Its checks run and pass: a container whose check is not registered yet passes too.
		if json.Unmarshal(e.Value(), &h) == nil && h.Container == container && h.Passing && len(h.Checks) > 0 {
			return true
		}
	}
	return false
}

// checks is listvips' check column of the one floating IP, by server.
func (b *vipBed) checks() map[string]string {
	var views []struct {
		Check map[string]string `json:"check"`
	}
	out, _ := b.cli("listvips", "-o", "json")
	if json.Unmarshal([]byte(out), &views) != nil || len(views) != 1 {
		return nil
	}
	return views[0].Check
}

// A floating IP between v1 and v2, each an agent in its own namespace on the
// servers' LAN: v1 holds it first; each kind of failure of the holder moves it
// to the other within a second, seen from a client on the LAN; coming back
// never makes two holders.
func TestFloatingIP(t *testing.T) {
	dumpOnFailure(t)
	b := newVIPBed(t)
	t.Run("bad input is refused and nothing is configured", func(t *testing.T) {
		b.agents["v3"].stop()
		eventually(t, 20*time.Second, func() bool {
			out, _ := b.cli("servers", "-o", "json")
			return strings.Contains(out, `"status": "down"`)
		}, "v3 not down")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"addvip", "v1", "v2", "10.77.101.50"}, "is in no network of server v1"},
			{[]string{"addvip", "v1", "v1", vipAddr}, "two different servers"},
			{[]string{"addvip", "v1", "nosuch", vipAddr}, "nosuch"},
			{[]string{"addvip", "v1", "v3", vipAddr}, "v3"},
			{[]string{"addvip", "v1", "v2", "10.77.100.11"}, "10.77.100.11 is the address of server v1 (eth0): pick a free address in 10.77.100.0/24"},
			{[]string{"addvip", "v1", "v2", "10.77.100.12"}, "10.77.100.12 is the address of server v2"},
			{[]string{"addvip", "v1", "v2", "10.77.100.300"}, "not an IPv4 address"},
		} {
			if out, err := b.cli(tc.args...); err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("skein %q: %v %q does not say %q", tc.args, err, strings.TrimSpace(out), tc.want)
			}
		}
		if out := b.must("listvips", "-o", "json"); strings.TrimSpace(out) != "[]" {
			t.Errorf("a refused addvip left %s", out)
		}
		if holds(1) || holds(2) || len(b.keepalivedPIDs("v1")) > 0 {
			t.Error("a refused addvip configured something")
		}
	})

	t.Run("v1 holds the IP first; a second floating IP on the same address is refused", func(t *testing.T) {
		out := b.must("addvip", "v1", "v2", vipAddr, "-n", "web-vip")
		if !strings.Contains(out, "added floating IP web-vip "+vipAddr+" on v1 (eth0) and v2 (eth0)") {
			t.Errorf("addvip said %q", out)
		}
		waitAnswer(t, "v1", 10*time.Second)
		eventually(t, 5*time.Second, func() bool { return b.holder() == "v1" }, "listvips does not show v1 holding")
		if out, err := b.cli("addvip", "v1", "v2", vipAddr, "-n", "other"); err == nil || !strings.Contains(out, "already") {
			t.Errorf("the same IP twice: %v %s", err, out)
		}
		oneHolder(t, time.Second)
	})

	// A keepalived started again at once after a kill -9 stood at the same
	// moment as its peer when the peer was slow to take over: both held the
	// IP and the higher address (v2) kept it, so the IP stayed with the
	// server whose keepalived died (CI once, before restartAfter).
	// Four rounds: v1 holds again after, as the failures below expect.
	holder := 1
	t.Run("the holder's keepalived killed while the other's is slow: the other takes over, once", func(t *testing.T) {
		for i := 0; i < 4; i++ {
			other := 3 - holder
			stalled := b.keepalivedPIDs(fmt.Sprintf("v%d", other))
			var pids []int
			eventually(t, 10*time.Second, func() bool { pids = b.keepalivedPIDs(fmt.Sprintf("v%d", holder)); return len(pids) == 2 }, "v%d's keepalived and its VRRP child are not both running", holder)
			for _, pid := range stalled {
				_ = syscall.Kill(pid, syscall.SIGSTOP)
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			// Half a second of a starved CPU, bounded here whatever happens.
			time.Sleep(500 * time.Millisecond)
			for _, pid := range stalled {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
			waitAnswer(t, fmt.Sprintf("v%d", other), 3*time.Second)
			eventually(t, 5*time.Second, func() bool { return b.holder() == fmt.Sprintf("v%d", other) }, "listvips does not show v%d", other)
			// v%d's keepalived, started again, stays the backup.
			eventually(t, 10*time.Second, func() bool { return len(b.keepalivedPIDs(fmt.Sprintf("v%d", holder))) == 2 }, "v%d's keepalived is not started again", holder)
			oneHolder(t, 1500*time.Millisecond)
			if got := answer(); got != fmt.Sprintf("v%d", other) {
				t.Fatalf("round %d: v%d's keepalived was killed while v%d's was stalled; %q answers after, want v%d", i, holder, other, got, other)
			}
			holder = other
		}
	})

	type failure struct {
		name  string
		fail  func(t *testing.T, holder int)
		heal  func(holder int)
		times []time.Duration
	}
	kinds := []*failure{
		{name: "kill -9 of its keepalived", fail: func(t *testing.T, h int) {
			// Both of its keepalived's processes (the parent and its VRRP child,
			// which writes vrrp.pid once started) must be known to be killed: CI
			// once saw the holder keep the IP, as a VRRP child left alive would.
			var pids []int
			eventually(t, 10*time.Second, func() bool { pids = b.keepalivedPIDs(fmt.Sprintf("v%d", h)); return len(pids) == 2 }, "v%d's keepalived and its VRRP child are not both running", h)
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}, heal: func(int) {}},
		{name: "its link down", fail: func(_ *testing.T, h int) {
			_ = exec.Command("ip", "-n", fmt.Sprintf("skein-ns%d", h), "link", "set", "eth0", "down").Run()
		}, heal: func(h int) {
			_ = exec.Command("ip", "-n", fmt.Sprintf("skein-ns%d", h), "link", "set", "eth0", "up").Run()
			lanRoute(h) // a link going down takes its routes with it
		}},
		{name: "its agent and keepalived stopped", fail: func(_ *testing.T, h int) {
			name := fmt.Sprintf("v%d", h)
			pids := b.keepalivedPIDs(name)
			b.agents[name].stop()
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
		}, heal: func(h int) { b.startAgent(h) }},
	}
	rounds := 10
	holder = 1
	for _, k := range kinds {
		t.Run("the holder's "+k.name+": the other answers within 1 s, one holder after", func(t *testing.T) {
			for i := 0; i < rounds; i++ {
				other := 3 - holder
				start := time.Now()
				k.fail(t, holder)
				took := waitAnswer(t, fmt.Sprintf("v%d", other), 3*time.Second)
				_ = start
				k.times = append(k.times, took)
				eventually(t, 5*time.Second, func() bool { return b.holder() == fmt.Sprintf("v%d", other) }, "listvips does not show v%d", other)
				k.heal(holder)
				// The healed server comes back as the backup: one holder all along, no flapping.
				oneHolder(t, 1500*time.Millisecond)
				if got := answer(); got != fmt.Sprintf("v%d", other) {
					t.Fatalf("after v%d came back, %q answers (flapped)", holder, got)
				}
				holder = other
			}
			sorted := append([]time.Duration(nil), k.times...)
			sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
			med, max := sorted[len(sorted)/2], sorted[len(sorted)-1]
			t.Logf("%s, %d times: the other answered after median %s, max %s", k.name, len(sorted), med.Round(time.Millisecond), max.Round(time.Millisecond))
			if max > time.Second {
				t.Errorf("a failover took %s: more than 1 s", max)
			}
		})
	}

	t.Run("holder changes are events", func(t *testing.T) {
		out := b.must("events", "--type", "vip.holder")
		if strings.Count(out, "vip.holder") < 2*rounds {
			t.Errorf("only %d vip.holder events:\n%s", strings.Count(out, "vip.holder"), tail(out, 1500))
		}
	})

	t.Run("delvip: the IP is gone from both", func(t *testing.T) {
		b.must("delvip", "web-vip")
		if holds(1) || holds(2) {
			t.Error("the IP is still on a server after delvip")
		}
		if answer() != "" {
			t.Error("the IP still answers")
		}
		if out := b.must("listvips", "-o", "json"); strings.TrimSpace(out) != "[]" {
			t.Errorf("listvips after delvip: %s", out)
		}
	})

	// checkFailover makes server from's check fail with fail and waits for
	// server to to answer for the IP, then heals from: to keeps the IP.
	checkFailover := func(t *testing.T, from, to int, fail, heal func()) time.Duration {
		t.Helper()
		fail()
		took := waitAnswer(t, fmt.Sprintf("v%d", to), 15*time.Second)
		if holds(from) {
			t.Errorf("v%d still has the IP with its check failing", from)
		}
		eventually(t, 10*time.Second, func() bool {
			return b.checks()[fmt.Sprintf("v%d", from)] == "failing" && b.holder() == fmt.Sprintf("v%d", to)
		}, "listvips does not show v%d failing and v%d holding: %v", from, to, b.checks())
		heal()
		eventually(t, 15*time.Second, func() bool { return b.checks()[fmt.Sprintf("v%d", from)] == "passing" }, "v%d's check does not pass again", from)
		oneHolder(t, time.Second)
		if got := answer(); got != fmt.Sprintf("v%d", to) {
			t.Errorf("after v%d's check passed again %q answers (no preemption expected)", from, got)
		}
		return took
	}

	t.Run("--check: a server whose check command fails gives the IP up", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--check", "curl -sf http://127.0.0.1/;reboot"}, "shell syntax"},
			{[]string{"--check", "sh -c 'true'"}, "shell syntax"},
			{[]string{"--check", "true", "--check-service", "web"}, "not both"},
			{[]string{"--check", "/nonexistent/probe"}, "/nonexistent/probe is not on server v1"},
			{[]string{"--check-service", "web.x"}, "--check-service"},
		} {
			args := append([]string{"addvip", "v1", "v2", vipAddr, "-n", "chk-vip"}, tc.args...)
			if out, err := b.cli(args...); err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("skein %q: %v %q does not say %q", args, err, strings.TrimSpace(out), tc.want)
			}
		}
		if out := b.must("listvips", "-o", "json"); strings.TrimSpace(out) != "[]" {
			t.Fatalf("a refused addvip left %s", out)
		}
		out := b.must("addvip", "v1", "v2", vipAddr, "-n", "chk-vip", "--check", "curl -sf --max-time 1 -o /dev/null http://127.0.0.1/")
		t.Cleanup(func() { _, _ = b.cli("delvip", "chk-vip") })
		if !strings.Contains(out, "check on v1: passing") || !strings.Contains(out, "check on v2: passing") {
			t.Errorf("addvip said %q", out)
		}
		waitAnswer(t, "v1", 10*time.Second)
		// v1's responder stops: its check fails, v2 takes the IP (without
		// the check v1 would keep it and nobody would answer).
		took := checkFailover(t, 1, 2, func() { b.stopHTTPD(1) }, func() { b.startHTTPD(1) })
		t.Logf("v1's check failing -> v2 answers: %s", took.Round(time.Millisecond))
		took = checkFailover(t, 2, 1, func() { b.stopHTTPD(2) }, func() { b.startHTTPD(2) })
		t.Logf("v2's check failing -> v1 answers: %s", took.Round(time.Millisecond))
		if out := b.must("events", "--type", "vip.check"); strings.Count(out, `"failing"`) < 2 || strings.Count(out, `"passing"`) < 2 {
			t.Errorf("vip.check events:\n%s", tail(out, 1500))
		}
		b.must("delvip", "chk-vip")
	})

	t.Run("--check-service: a server gives the IP up while its instance of the service fails", func(t *testing.T) {
		for n, ct := range map[int]string{1: "vweb1", 2: "vweb2"} {
			b.must("launch", "skein-busybox", ct, "-s", fmt.Sprintf("v%d", n))
			b.must("addservice", ct, "vweb", "80")
			b.must("addcheck", ct, "http", "tcp", "80", "--interval", "1s", "--timeout", "500ms")
			t.Cleanup(func() { _, _ = b.cli("delete", ct) })
		}
		// Both instances pass before the IP is added: one failing at first would
		// (rightly) leave the IP to the other server, which keeps it.
		eventually(t, 20*time.Second, func() bool { return b.healthy("vweb1") && b.healthy("vweb2") }, "vweb1 and vweb2 do not pass their checks")
		b.must("addvip", "v1", "v2", vipAddr, "-n", "svc-vip", "--check-service", "vweb")
		t.Cleanup(func() { _, _ = b.cli("delvip", "svc-vip") })
		eventually(t, 15*time.Second, func() bool {
			c := b.checks()
			return c["v1"] == "passing" && c["v2"] == "passing"
		}, "the service's checks do not pass on both servers: %v", b.checks())
		waitAnswer(t, "v1", 10*time.Second)
		took := checkFailover(t, 1, 2, func() { b.must("stop", "vweb1", "--force") }, func() { b.must("start", "vweb1") })
		t.Logf("v1's instance stopped -> v2 answers: %s", took.Round(time.Millisecond))
		took = checkFailover(t, 2, 1, func() { b.must("stop", "vweb2", "--force") }, func() { b.must("start", "vweb2") })
		t.Logf("v2's instance stopped -> v1 answers: %s", took.Round(time.Millisecond))
		b.must("delvip", "svc-vip")
		if holds(1) || holds(2) {
			t.Error("the IP is still on a server after delvip")
		}
	})
}

// BenchmarkFailover measures a failover as a client on the LAN sees it: from
// the kill -9 of the holder's keepalived to the first answer of the other
// server through the floating IP (polled every 50 ms with curl from the client
// namespace, so figures are in steps of about 50-60 ms). The holder alternates;
// the killed keepalived is restarted by its agent as the backup. Run with
// -benchtime 20x (go tool task bench:vip); median and p90 in ms.
func BenchmarkFailover(b *testing.B) {
	bed := newVIPBed(b)
	bed.must("addvip", "v1", "v2", vipAddr, "-n", "bench-vip")
	defer bed.cli("delvip", "bench-vip")
	waitAnswer(b, "v1", 10*time.Second)
	holder := 1
	var took []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		other := 3 - holder
		backups := bed.backupEntries(holder)
		for _, pid := range bed.keepalivedPIDs(fmt.Sprintf("v%d", holder)) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		took = append(took, waitAnswer(b, fmt.Sprintf("v%d", other), 5*time.Second))
		b.StopTimer()
		// The killed side is back as the backup before the next round.
		testutil.Eventually(b, 10*time.Second, func() bool { return bed.backupEntries(holder) > backups }, "v%d's keepalived not back as the backup", holder)
		b.StartTimer()
		holder = other
	}
	b.StopTimer()
	report(b, took, "failover")
}
