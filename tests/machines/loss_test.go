//go:build e2e

package machines

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
)

// load asks url every interval until stopped (limit requests at the most) and
// counts what failed, by the time it failed, and who answered.
type load struct {
	mu       sync.Mutex
	ok       int
	failures []time.Time
	answers  map[string]int
	stop     chan struct{}
	done     chan struct{}
}

func startLoad(url string, every time.Duration, limit int) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{}), answers: map[string]int{}}
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	go func() {
		defer close(l.done)
		for i := 0; i < limit; i++ {
			select {
			case <-l.stop:
				return
			case <-time.After(every):
			}
			resp, err := client.Get(url)
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			l.mu.Lock()
			if err != nil || resp.StatusCode != 200 {
				l.failures = append(l.failures, time.Now())
			} else {
				l.ok++
				l.answers[strings.TrimSpace(string(body))]++
			}
			l.mu.Unlock()
		}
	}()
	return l
}

// since counts the requests that failed after t.
func (l *load) since(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, f := range l.failures {
		if f.After(t) {
			n++
		}
	}
	return n
}

func (l *load) end() (ok, failed int) {
	close(l.stop)
	<-l.done
	return l.ok, len(l.failures)
}

// instances are the containers of job, by server.
func instances(t *testing.T, job string) []events.Container {
	t.Helper()
	var cs []events.Container
	if err := json.Unmarshal([]byte(mustSkein(t, "list", "-o", "json")), &cs); err != nil {
		t.Fatal(err)
	}
	var out []events.Container
	for _, c := range cs {
		if c.Job == job {
			out = append(out, c)
		}
	}
	return out
}

// Losing a whole machine while a load runs: m3, holding a job instance, a
// load balancer backend and a Consul endpoint, is powered off. Its instance
// runs elsewhere within 30 s, the load balancer stops sending to it, Consul
// keeps its quorum, skein servers shows it down; powered on again, it rejoins
// with its routes, and the job has no extra instance.
func TestLosingAMachine(t *testing.T) {
	for i, mc := range machines {
		ep := fmt.Sprintf("ep-m%d", i+1)
		mustSkein(t, "addep", mc.name, fmt.Sprintf("10.77.20%d.10", i+1), "-n", ep)
		t.Cleanup(func() { _, _ = skein("delep", ep) })
	}
	mustSkein(t, "addlb", "haproxy", "m1", "-n", "lossb")
	t.Cleanup(func() { _, _ = skein("dellb", "lossb") })
	mustSkein(t, "pub", "m1:lossb", "80", "--host-port", "18093")
	mustSkein(t, "addjob", "skein-busybox", "3", "-r", "2", "--name", "lossjob", "--service", "lossweb", "--port", "80", "--lb", "lossb", "--timeout", "180s")
	t.Cleanup(func() { _, _ = skein("deljob", "lossjob") })
	on := func(server string) int {
		n := 0
		for _, c := range instances(t, "lossjob") {
			if c.Server == server && c.Status == "Running" {
				n++
			}
		}
		return n
	}
	eventually(t, 60*time.Second, func() bool { return on("m3") == 1 && on("m1")+on("m2") == 2 }, "the job is not spread over the three machines: %+v", func() any { return instances(t, "lossjob") }())
	l := startLoad("http://10.77.200.11:18093/", 50*time.Millisecond, 2000)
	eventually(t, 30*time.Second, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.ok >= 10 }, "the load balancer does not answer")

	off := time.Now()
	if out, err := exec.Command("incus", "stop", "--force", "m3", "--project", project).CombinedOutput(); err != nil {
		t.Fatalf("powering m3 off: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("incus", "start", "m3", "--project", project).Run() })
	eventually(t, 20*time.Second, func() bool { vs, _ := servers(); return vs["m3"].Status == "down" }, "skein servers does not show m3 down")
	eventually(t, 30*time.Second, func() bool { return on("m1")+on("m2") == 3 }, "m3's instance is not running elsewhere 30 s after its power-off")
	placed := time.Since(off)
	// A window of load with m3 out of rotation: the next 60 requests.
	quiet := time.Now()
	l.mu.Lock()
	from := l.ok + len(l.failures)
	l.mu.Unlock()
	eventually(t, 30*time.Second, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.ok+len(l.failures) >= from+60 }, "the load stopped")
	if n := l.since(quiet); n > 0 {
		t.Errorf("%d requests failed after m3's instance ran elsewhere: its backend is still in rotation", n)
	}
	leader, _ := inMachine("m1", "curl", "-s", "-m", "3", "http://10.77.201.10:8500/v1/status/leader")
	if !strings.Contains(leader, ":8300") {
		t.Errorf("Consul has no leader with m3 off: %q", leader)
	}
	duringFailures := l.since(off)

	if out, err := exec.Command("incus", "start", "m3", "--project", project).CombinedOutput(); err != nil {
		t.Fatalf("powering m3 on: %v %s", err, out)
	}
	back := time.Now()
	eventually(t, 90*time.Second, func() bool { vs, _ := servers(); return vs["m3"].Status == "up" }, "m3 did not come back")
	// Its old instance is retired: three instances in all, none twice.
	eventually(t, 60*time.Second, func() bool { return len(instances(t, "lossjob")) == 3 }, "the job has %d instances after m3's return, want 3: %+v",
		len(instances(t, "lossjob")), func() any { return instances(t, "lossjob") }())
	eventually(t, 30*time.Second, func() bool {
		for _, lk := range links(t) {
			if lk.State != "routed" && lk.State != "tunnel" && lk.Name != "" {
				return false
			}
		}
		return true
	}, "the paths are not all back after m3's return: %v", func() any { return links(t) }())
	ok, failed := l.end()
	t.Logf("m3 powered off: its instance ran elsewhere after %.1fs; %d of %d requests failed, from the power-off to the new placement; m3 up again %.1fs after power on",
		placed.Seconds(), duringFailures, ok+failed, time.Since(back).Seconds())
	if n := l.since(back); n > 0 {
		var at []string
		l.mu.Lock()
		for _, f := range l.failures {
			if f.After(back) {
				at = append(at, fmt.Sprintf("+%.1fs", f.Sub(back).Seconds()))
			}
		}
		l.mu.Unlock()
		t.Errorf("%d requests failed after m3 was powered on again, at %v; instances %+v", n, at, instances(t, "lossjob"))
	}
}

// A load balancer comes back with its machine: m2 powered off and on, its
// haproxy runs again with every backend of its record, as the agent's
// metrics read them through haproxy's runtime socket.
func TestLoadBalancerComesBackAfterAPowerCycle(t *testing.T) {
	mustSkein(t, "addlb", "haproxy", "m2", "-n", "pclb")
	t.Cleanup(func() { _, _ = skein("dellb", "pclb") })
	mustSkein(t, "addbackends", "pclb", "b1:10.77.9.11:80", "b2:10.77.9.12:80")
	runs := func() string { bes, err := lbBackends("m2", "pclb"); return fmt.Sprint(bes, err) }
	eventually(t, 30*time.Second, func() bool { return runs() == "[b1 b2] <nil>" }, "haproxy of pclb runs %s, want [b1 b2]", runs())
	if out, err := exec.Command("incus", "stop", "--force", "m2", "--project", project).CombinedOutput(); err != nil {
		t.Fatalf("powering m2 off: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("incus", "start", "m2", "--project", project).Run() })
	on := time.Now()
	if out, err := exec.Command("incus", "start", "m2", "--project", project).CombinedOutput(); err != nil {
		t.Fatalf("powering m2 on: %v %s", err, out)
	}
	if err := upAgain("m2", on, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if !poll(60*time.Second, func() bool { return runs() == "[b1 b2] <nil>" }) {
		state, _ := inMachine("m2", "sh", "-c", "incus list -c ns -f csv; ls -la /run/skein/lb; journalctl -u skein-agent --no-pager -n 200 | grep -i -e pclb -e haproxy -e error | tail -30")
		t.Fatalf("after m2's power cycle haproxy of pclb runs %s, want [b1 b2]\n%s", runs(), state)
	}
	t.Logf("m2 powered on: pclb runs its backends again %.1fs after", time.Since(on).Seconds())
}
