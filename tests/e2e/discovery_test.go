//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/skeinhq/skein/events"
)

// dig asks an endpoint's Consul DNS directly, as any DNS client would.
func dig(server, name string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dig", "+short", "+time=1", "+tries=1", "@"+server, "-p", "8600", name).Output()
	if err != nil {
		return nil
	}
	var ips []string
	for _, l := range strings.Fields(string(out)) {
		if strings.Count(l, ".") == 3 && !strings.HasPrefix(l, ";") {
			ips = append(ips, l)
		}
	}
	sort.Strings(ips)
	return ips
}

// nslookupIn resolves a name from inside a container, through its server's DNS.
func nslookupIn(project, container, name string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "incus", "exec", container, "--project", project, "--", "timeout", "5", "nslookup", name).CombinedOutput()
	var ips []string
	seenName := false
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Name:") {
			seenName = true
		}
		if seenName && strings.HasPrefix(l, "Address") {
			f := strings.Fields(l)
			ips = append(ips, f[len(f)-1])
		}
	}
	sort.Strings(ips)
	return ips
}

// voters counts the raft voters with the consul CLI against one endpoint.
func voters(endpoint string) int {
	out, err := consulCLI(endpoint, "operator", "raft", "list-peers")
	if err != nil {
		return -1
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 5 && f[4] == "true" {
			n++
		}
	}
	return n
}

func same(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func endpointsList(t *testing.T) []events.Endpoint {
	t.Helper()
	var eps []events.Endpoint
	if err := json.Unmarshal([]byte(mustSkein(t, "listep", "-o", "json")), &eps); err != nil {
		t.Fatal(err)
	}
	return eps
}

// Service discovery end to end, against real Consul endpoints in containers; the
// clients are the consul CLI, dig and nslookup inside a container.
func TestDiscovery(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "d1", "d2", "d3", "consul-10", "consul-20", "consul-30")
	t.Cleanup(func() {
		for _, ep := range []string{"consul-30", "consul-20", "consul-10"} {
			_, _, _ = skein("delep", ep)
		}
	})
	mustSkein(t, "launch", "skein-busybox", "d1", "-s", "s1")
	mustSkein(t, "launch", "skein-busybox", "d2", "-s", "s2")
	mustSkein(t, "launch", "skein-busybox", "d3", "-s", "s3")
	cs := list(t)
	ip1, ip2 := find(cs, "d1").IPv4, find(cs, "d2").IPv4
	both := []string{ip1, ip2}
	sort.Strings(both)

	// Services defined before any endpoint exists are published once one is added.
	mustSkein(t, "addservice", "d1", "wordpress", "80")
	mustSkein(t, "addservice", "d2", "wordpress", "80", "--tag", "blue")
	out := mustSkein(t, "addep", "s1", "10.77.1.10")
	if !strings.Contains(out, "added endpoint consul-10 on s1") {
		t.Fatalf("addep said %q", out)
	}
	const ep1 = "10.77.1.10"

	t.Run("both instances resolve, from the endpoint and inside a container", func(t *testing.T) {
		eventually(t, 10*time.Second, func() bool { return same(dig(ep1, "wordpress.service.consul"), both) }, "dig: %v, want %v", lazyDig(ep1, "wordpress.service.consul"), both)
		eventually(t, 10*time.Second, func() bool {
			return same(nslookupIn("skein-s3", "d3", "wordpress.service.consul"), both)
		}, "nslookup in d3 on s3 does not return both instances")
		out, err := exec.Command("consul", "catalog", "services", "-http-addr="+ep1+":8500").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "wordpress") {
			t.Fatalf("consul catalog services: %s %v", out, err)
		}
		resp, err := httpClient.Get("http://" + ep1 + ":8500/ui/")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("the Consul web UI does not answer: %v %v", resp, err)
		}
		resp.Body.Close()
		list := mustSkein(t, "listservice", "d2")
		if !strings.Contains(list, "wordpress") || !strings.Contains(list, "blue") {
			t.Fatalf("listservice d2: %s", list)
		}
	})

	t.Run("a container stopped with incus leaves DNS within 2s and returns within 2s", func(t *testing.T) {
		start := time.Now()
		if out, err := incusCmd("stop", "d1", "--project", "skein-s1"); err != nil {
			t.Fatalf("incus stop: %v %s", err, out)
		}
		eventually(t, 2*time.Second, func() bool { return same(dig(ep1, "wordpress.service.consul"), []string{ip2}) }, "d1 still in DNS")
		t.Logf("left DNS %s after incus stop returned (%s after it was called)", time.Since(start), time.Since(start))
		start = time.Now()
		if out, err := incusCmd("start", "d1", "--project", "skein-s1"); err != nil {
			t.Fatalf("incus start: %v %s", err, out)
		}
		eventually(t, 2*time.Second, func() bool { return same(dig(ep1, "wordpress.service.consul"), both) }, "d1 not back in DNS")
		t.Logf("back in DNS %s after incus start was called", time.Since(start))
	})

	t.Run("a container stopped while its agent was down is removed when the agent returns", func(t *testing.T) {
		agents["s2"].kill9()
		if out, err := incusCmd("stop", "d2", "--project", "skein-s2"); err != nil {
			t.Fatalf("incus stop: %v %s", err, out)
		}
		agents["s2"].start()
		back := time.Now()
		eventually(t, 10*time.Second, func() bool { return same(dig(ep1, "wordpress.service.consul"), []string{ip1}) }, "d2 still in Consul after its agent returned")
		t.Logf("d2 gone from Consul %s after the agent restarted", time.Since(back))
		if out, err := incusCmd("start", "d2", "--project", "skein-s2"); err != nil {
			t.Fatalf("incus start: %v %s", err, out)
		}
		eventually(t, 10*time.Second, func() bool { return same(dig(ep1, "wordpress.service.consul"), both) }, "d2 not back")
	})

	t.Run("a failing tcp check hides the instance from DNS", func(t *testing.T) {
		mustSkein(t, "addcheck", "d2", "dead", "tcp", "81", "--interval", "1s", "--timeout", "500ms")
		eventually(t, 10*time.Second, func() bool { return same(dig(ep1, "wordpress.service.consul"), []string{ip1}) }, "d2 still in DNS with a failing check")
		var entries []struct {
			Node   string `json:"node"`
			Health string `json:"health"`
		}
		if err := json.Unmarshal([]byte(mustSkein(t, "services", "-o", "json")), &entries); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range entries {
			if e.Node == "d2" {
				found = true
				if e.Health != "critical" {
					t.Errorf("skein services: d2 health %s, want critical", e.Health)
				}
			}
		}
		if !found {
			t.Error("skein services does not show d2")
		}
		mustSkein(t, "addcheck", "d2", "alive", "tcp", "80", "--interval", "1s", "--timeout", "500ms")
		mustSkein(t, "delcheck", "d2", "dead")
		eventually(t, 10*time.Second, func() bool { return same(dig(ep1, "wordpress.service.consul"), both) }, "d2 not back with a passing check")
	})

	t.Run("ad-hoc services and checks belong to no container and can be removed", func(t *testing.T) {
		ip3 := find(list(t), "d3").IPv4
		mustSkein(t, "pubservice", "minio", ip3, "80")
		eventually(t, 10*time.Second, func() bool { return same(dig(ep1, "minio.service.consul"), []string{ip3}) }, "minio not published")
		mustSkein(t, "pubcheck", "minio", "tcp", ip3+":81", "--interval", "1s", "--timeout", "500ms")
		eventually(t, 10*time.Second, func() bool { return len(dig(ep1, "minio.service.consul")) == 0 }, "minio still in DNS with a failing ad-hoc check")
		mustSkein(t, "unpubcheck", "minio")
		eventually(t, 10*time.Second, func() bool { return same(dig(ep1, "minio.service.consul"), []string{ip3}) }, "minio not back after unpubcheck")
		mustSkein(t, "unpubservice", "minio")
		eventually(t, 10*time.Second, func() bool {
			out, _ := exec.Command("consul", "catalog", "services", "-http-addr="+ep1+":8500").CombinedOutput()
			return !strings.Contains(string(out), "minio")
		}, "minio still in the catalog after unpubservice")
		if errOut := skeinFails(t, "unpubservice", "minio"); !strings.Contains(errOut, "no ad-hoc entry minio") {
			t.Errorf("unpubservice of a removed entry: %q", errOut)
		}
	})

	t.Run("bad input is refused and changes nothing", func(t *testing.T) {
		before := mustSkein(t, "listep", "-o", "json")
		cases := []struct {
			args []string
			want string
		}{
			{[]string{"addep", "s1", "10.77.2.50"}, "not usable on server s1: pick one inside its container subnet 10.77.1.0/24"},
			{[]string{"addep", "s2", "10.77.2.11", "-n", "consul-10"}, "an endpoint named consul-10 already exists"},
			{[]string{"addservice", "nope", "wordpress", "80"}, `no container named "nope"`},
			{[]string{"addservice", "d1", "wordpress", "0"}, "bad port"},
			{[]string{"addcheck", "d1", "x", "udp", "80"}, `bad check type "udp": use tcp PORT or http URL`},
			{[]string{"addcheck", "d1", "x", "tcp", "80", "--interval", "1s", "--timeout", "5s"}, "0 < timeout <= interval"},
			{[]string{"delcheck", "d1", "nosuch"}, "container d1 has no check nosuch"},
			{[]string{"pubservice", "x", "10.77.1"}, "is not an IPv4 address"},
			{[]string{"pubcheck", "x", "tcp", "10.77.1.5"}, "want IP:PORT"},
		}
		for _, tc := range cases {
			errOut := skeinFails(t, tc.args...)
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("skein %v: %q does not say %q", tc.args, strings.TrimSpace(errOut), tc.want)
			}
		}
		if after := mustSkein(t, "listep", "-o", "json"); after != before {
			t.Errorf("endpoints changed:\n%s\n%s", before, after)
		}
		if out, _ := incusCmd("list", "--project", "skein-s2", "-f", "csv", "-c", "n"); strings.Contains(out, "consul-11") {
			t.Error("a refused endpoint left a container")
		}
	})

	t.Run("three endpoints: losing one keeps every service resolvable", func(t *testing.T) {
		mustSkein(t, "addep", "s2", "10.77.2.20")
		mustSkein(t, "addep", "s3", "10.77.3.30")
		// addep returns once the endpoint votes: the quorum is three now.
		if n := voters("10.77.2.20"); n != 3 {
			t.Fatalf("%d raft voters, want 3", n)
		}
		for _, ep := range []string{"10.77.1.10", "10.77.2.20", "10.77.3.30"} {
			if got := dig(ep, "wordpress.service.consul"); !same(got, both) {
				t.Fatalf("endpoint %s answers %v, want %v: registrations did not replicate", ep, got, both)
			}
		}
		// Stop the first endpoint's container behind skein's back.
		if out, err := incusCmd("stop", "consul-10", "--project", "skein-s1", "--force"); err != nil {
			t.Fatalf("incus stop: %v %s", err, out)
		}
		for _, ep := range []string{"10.77.2.20", "10.77.3.30"} {
			eventually(t, 10*time.Second, func() bool { return same(dig(ep, "wordpress.service.consul"), both) }, "endpoint %s lost the services", ep)
		}
		eventually(t, 15*time.Second, func() bool { return same(nslookupIn("skein-s3", "d3", "wordpress.service.consul"), both) }, "containers cannot resolve with one endpoint down")
		// And a change still publishes: writes need the raft leader, elected among the two left.
		mustSkein(t, "addservice", "d3", "blog", "80")
		eventually(t, 15*time.Second, func() bool { return len(dig("10.77.2.20", "blog.service.consul")) == 1 }, "no publication with one endpoint down")
		// Bring it back: it rejoins with its data; then delete another through skein.
		if out, err := incusCmd("start", "consul-10", "--project", "skein-s1"); err != nil {
			t.Fatalf("incus start: %v %s", err, out)
		}
		eventually(t, 60*time.Second, func() bool { return voters("10.77.2.20") == 3 }, "consul-10 did not rejoin as a voter")
		mustSkein(t, "delep", "consul-30")
		eventually(t, 30*time.Second, func() bool { return voters("10.77.2.20") == 2 }, "consul-30 did not leave the raft peers")
		for _, ep := range []string{"10.77.1.10", "10.77.2.20"} {
			eventually(t, 10*time.Second, func() bool { return same(dig(ep, "wordpress.service.consul"), both) }, "endpoint %s lost the services after delep", ep)
		}
		eventually(t, 15*time.Second, func() bool { return same(nslookupIn("skein-s2", "d2", "wordpress.service.consul"), both) }, "containers cannot resolve after delep")
		if strings.Contains(mustSkein(t, "listep"), "consul-30") {
			t.Error("listep still shows consul-30")
		}
	})
}

// An agent restart, clean or a crash, keeps a passing check passing: its
// container never leaves Consul DNS and its check never turns critical, while
// the agent is down and after it returns (the new agent used to write every
// check critical until its first run).
func TestCheckSurvivesAgentRestart(t *testing.T) {
	dumpOnFailure(t)
	const ep, name = "10.77.2.42", "restartsvc.service.consul"
	cleanup(t, "rs1", "consul-42")
	t.Cleanup(func() { _, _, _ = skein("delep", "consul-42") })
	mustSkein(t, "addep", "s2", ep, "-n", "consul-42")
	mustSkein(t, "launch", "skein-busybox", "rs1", "-s", "s1")
	ip := find(list(t), "rs1").IPv4
	mustSkein(t, "addservice", "rs1", "restartsvc", "80")
	mustSkein(t, "addcheck", "rs1", "up", "tcp", "80", "--interval", "1s", "--timeout", "500ms")
	cl, err := api.NewClient(&api.Config{Address: ep + ":8500", HttpClient: &http.Client{Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	upStatus := func(checks api.HealthChecks) string {
		for _, c := range checks {
			if c.CheckID == "skein:up" {
				return c.Status
			}
		}
		return "missing"
	}
	eventually(t, 20*time.Second, func() bool {
		checks, _, err := cl.Health().Node("s1.rs1", nil)
		return err == nil && upStatus(checks) == "passing" && same(dig(ep, name), []string{ip})
	}, "rs1's check never passed with rs1 in DNS")

	var mu sync.Mutex
	var bad []string
	seen := map[string]int{}
	note := func(what string, ok bool, format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		seen[what]++
		if !ok {
			bad = append(bad, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() }) // the watchers end with the test, even a failed one
	wg.Add(3)
	// Consul blocking queries return on every change of the node's checks: a
	// critical status is seen however briefly it lasts.
	go func() {
		defer wg.Done()
		var index uint64
		for ctx.Err() == nil {
			checks, meta, err := cl.Health().Node("s1.rs1", (&api.QueryOptions{WaitIndex: index, WaitTime: 2 * time.Second}).WithContext(ctx))
			if err != nil {
				time.Sleep(100 * time.Millisecond) // the endpoint is not what restarts: retry soon
				continue
			}
			if meta.LastIndex < index {
				index = 0
			} else {
				index = meta.LastIndex
			}
			st := upStatus(checks)
			note("consul", st == "passing", "the catalog has rs1's check %s", st)
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond) // a DNS client asking 20 times a second
		defer tick.Stop()
		for ctx.Err() == nil {
			if ips, ok := digAnswer(ep, name); ok {
				note("dns", same(ips, []string{ip}), "DNS answers %v for %s, want %s", ips, name, ip)
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond) // a user asking 10 times a second
		defer tick.Stop()
		for ; ctx.Err() == nil; <-tick.C {
			out, _, err := skein("services", "-o", "json")
			var entries []struct{ Service, Node, Health string }
			if err != nil || json.Unmarshal([]byte(out), &entries) != nil {
				continue
			}
			health := "missing"
			for _, e := range entries {
				if e.Service == "restartsvc" && e.Node == "rs1" {
					health = e.Health
				}
			}
			note("services", health == "passing", "skein services: restartsvc on rs1 %s", health)
		}
	}()

	for _, restart := range []struct {
		how  string
		down func()
	}{{"stopped", agents["s1"].stop}, {"killed", agents["s1"].kill9}} {
		restart.down()
		agents["s1"].start()
		back := time.Now()
		if !allUp(30 * time.Second) {
			t.Fatalf("agent s1 not up again after it was %s", restart.how)
		}
		// The watchers above observe for 10 s: the new agent's first syncs and several runs of the check.
		time.Sleep(time.Until(back.Add(10 * time.Second)))
		t.Logf("agent s1 %s and started again; watched for %s", restart.how, time.Since(back).Round(time.Millisecond))
	}
	stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("observations: %v", seen)
	if len(bad) > 0 {
		t.Errorf("rs1 left DNS or its check was not passing across the restarts (%d times):\n%s", len(bad), strings.Join(bad, "\n"))
	}
	if seen["consul"] < 3 || seen["dns"] < 20 || seen["services"] < 3 {
		t.Errorf("too few observations to tell: %v", seen)
	}
}

// digAnswer asks an endpoint's DNS for name; ok is false when dig got no
// answer at all (a timeout), which says nothing about the name.
func digAnswer(server, name string) (ips []string, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dig", "+short", "+time=1", "+tries=1", "@"+server, "-p", "8600", name).Output()
	if err != nil || strings.Contains(string(out), ";;") {
		return nil, false
	}
	for _, l := range strings.Fields(string(out)) {
		if strings.Count(l, ".") == 3 {
			ips = append(ips, l)
		}
	}
	sort.Strings(ips)
	return ips, true
}

type lazyDigT struct{ server, name string }

func (l lazyDigT) String() string { return strings.Join(dig(l.server, l.name), ",") }

func lazyDig(server, name string) lazyDigT { return lazyDigT{server, name} }
