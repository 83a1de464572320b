//go:build e2e

package machines

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const vipAddr = "10.77.200.50"

// answerer asks the floating IP who holds it: each of m1 and m2 answers
// HTTP on port 8088 with its name, on every address it has.
func answerer() func() string {
	client := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
		DialContext: (&net.Dialer{Timeout: 300 * time.Millisecond}).DialContext}}
	return func() string {
		resp, err := client.Get("http://" + vipAddr + ":8088/")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b))
	}
}

// holders lists the machines that have the floating IP on an interface.
func holders() []string { return vipHolders(vipAddr) }

// timeToAnswer polls who answers every 10 ms until it is want, at most total.
func timeToAnswer(t *testing.T, who func() string, want string, total time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for who() != want {
		if time.Since(start) > total {
			t.Fatalf("%s does not answer on %s after %s (holders %v)", want, vipAddr, total, holders())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// A floating IP shared by m1 and m2 on their LAN, two real network stacks:
// m1 holds it first; kill -9 of the holder's keepalived moves it to the
// other, and so does powering the holder off; never two holders once the
// two see each other again.
func TestFloatingIPAcrossMachines(t *testing.T) {
	tool := filepath.Join(t.TempDir(), "nettool")
	build := exec.Command("go", "build", "-o", tool, "./nettool")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building nettool: %v %s", err, out)
	}
	startAnswer := func(m string) {
		if out, err := exec.Command("incus", "file", "push", tool, m+"/usr/local/bin/nettool.new", "--project", project, "--mode", "0755").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		if _, err := inMachine(m, "sh", "-c", "mv -f /usr/local/bin/nettool.new /usr/local/bin/nettool; pkill -x nettool; nettool http 0.0.0.0:8088 "+m+" </dev/null >/dev/null 2>&1 &"); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []string{"m1", "m2"} {
		startAnswer(m)
		t.Cleanup(func() { _, _ = inMachine(m, "pkill", "-x", "nettool") })
	}
	who := answerer()
	mustSkein(t, "addvip", "m1", "m2", vipAddr, "-n", "vipm")
	t.Cleanup(func() { _, _ = skein("delvip", "vipm") })
	timeToAnswer(t, who, "m1", 10*time.Second)
	if h := holders(); len(h) != 1 || h[0] != "m1" {
		t.Fatalf("holders %v, want m1 alone", h)
	}

	killKeepalived := func(m string) {
		if _, err := inMachine(m, "pkill", "-9", "-x", "keepalived"); err != nil {
			t.Fatal(err)
		}
	}
	killKeepalived("m1")
	moved := timeToAnswer(t, who, "m2", 5*time.Second)
	t.Logf("kill -9 of m1's keepalived: m2 answered on %s after %s", vipAddr, moved)
	// m1's agent starts its keepalived again; without preemption m2 keeps the IP, alone.
	eventually(t, 15*time.Second, func() bool {
		out, _ := inMachine("m1", "pgrep", "-x", "keepalived")
		h := holders()
		return strings.TrimSpace(out) != "" && len(h) == 1 && h[0] == "m2"
	}, "after m1's keepalived is back: holders %v, want m2 alone", holders())
	killKeepalived("m2")
	moved = timeToAnswer(t, who, "m1", 5*time.Second)
	t.Logf("kill -9 of m2's keepalived: m1 answered after %s", moved)
	eventually(t, 15*time.Second, func() bool { h := holders(); return len(h) == 1 && h[0] == "m1" }, "holders %v, want m1 alone", holders())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Timed from the power-off call: m1 is gone before incus stop returns.
	stopped := make(chan error, 1)
	go func() {
		out, err := exec.CommandContext(ctx, "incus", "stop", "--force", "m1", "--project", project).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v %s", err, out)
		}
		stopped <- err
	}()
	moved = timeToAnswer(t, who, "m2", 5*time.Second)
	if err := <-stopped; err != nil {
		t.Fatalf("powering m1 off: %v", err)
	}
	t.Logf("m1 powered off: m2 answered %s after the power-off call", moved)
	// m1's last heartbeat may still read up: wait for one sent after the power-on.
	on := time.Now()
	if out, err := exec.CommandContext(ctx, "incus", "start", "m1", "--project", project).CombinedOutput(); err != nil {
		t.Fatalf("powering m1 on: %v %s", err, out)
	}
	eventually(t, 90*time.Second, func() bool {
		vs, _ := servers()
		return vs["m1"].Status == "up" && vs["m1"].Time.After(on)
	}, "m1's agent did not come back")
	startAnswer("m1")
	var seen string
	if !poll(20*time.Second, func() bool {
		out, _ := inMachine("m1", "pgrep", "-x", "keepalived")
		h := holders()
		seen = fmt.Sprintf("m1's keepalived pids %q, holders %v", strings.TrimSpace(out), h)
		return strings.TrimSpace(out) != "" && len(h) == 1 && h[0] == "m2"
	}) {
		log, _ := inMachine("m1", "sh", "-c", "tail -n 40 /var/lib/skein/agent-m1/keepalived/keepalived.log; journalctl -u skein-agent --no-pager -n 60 | grep -i -e vip -e keepalived")
		t.Fatalf("after m1 is back: %s, want keepalived running and m2 alone\n%s", seen, log)
	}
	if got := who(); got != "m2" {
		t.Errorf("after m1's return %s answers, want m2 still", got)
	}
}
