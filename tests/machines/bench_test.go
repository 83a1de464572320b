//go:build e2e

package machines

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkPaths measures, side by side in one run, what crossing machines
// costs containers in routed mode: round trips and TCP throughput from a
// container on m1 to one on m2 against from m1 itself to m2 on their LAN,
// with the same program (nettool) at both ends. Each of b.N rounds measures
// both paths one after the other (200 round trips, 3 s of bulk data each);
// it reports medians: rtt-lan-us, rtt-containers-us, the added round trip
// (added-rtt-us), Mbit/s of each and their ratio (tput-ratio).
// Run: go tool task bench:machines.
func BenchmarkPaths(b *testing.B) {
	tool := filepath.Join(b.TempDir(), "nettool")
	build := exec.Command("go", "build", "-o", tool, "./nettool")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building nettool: %v %s", err, out)
	}
	ips := launchAll(b, "bp1@m1", "bp2@m2")
	for _, s := range []string{"bp1@m1", "bp2@m2"} {
		name, m, _ := strings.Cut(s, "@")
		// Pushed beside and renamed: a server of an earlier round may still run the old one.
		if out, err := exec.Command("incus", "file", "push", tool, m+"/usr/local/bin/nettool.new", "--project", project, "--mode", "0755").CombinedOutput(); err != nil {
			b.Fatalf("pushing nettool to %s: %v %s", m, err, out)
		}
		if _, err := inMachine(m, "sh", "-c", "mv -f /usr/local/bin/nettool.new /usr/local/bin/nettool && incus file push /usr/local/bin/nettool "+name+"/bin/nettool --mode 0755"); err != nil {
			b.Fatal(err)
		}
	}
	defer func() { _, _ = inMachine("m2", "pkill", "-f", "nettool serve") }()
	if _, err := inMachine("m2", "sh", "-c", "nettool serve 10.77.200.12:5201 </dev/null >/dev/null 2>&1 &"); err != nil {
		b.Fatal(err)
	}
	if _, err := inContainer("m2", "bp2", "sh", "-c", "nettool serve 0.0.0.0:5201 </dev/null >/dev/null 2>&1 &"); err != nil {
		b.Fatal(err)
	}
	lan := func(args ...string) float64 {
		out, err := inMachine("m1", append([]string{"nettool"}, args...)...)
		return number(b, out, err)
	}
	ctr := func(args ...string) float64 {
		out, err := inContainer("m1", "bp1", append([]string{"nettool"}, args...)...)
		return number(b, out, err)
	}
	var rttLAN, rttCtr, tputLAN, tputCtr []float64
	b.ResetTimer()
	for range b.N {
		rttLAN = append(rttLAN, lan("rtt", "10.77.200.12:5201", "200"))
		rttCtr = append(rttCtr, ctr("rtt", ips["bp2"]+":5201", "200"))
		tputLAN = append(tputLAN, lan("tput", "10.77.200.12:5201", "3"))
		tputCtr = append(tputCtr, ctr("tput", ips["bp2"]+":5201", "3"))
	}
	b.StopTimer()
	rl, rc, tl, tc := median(rttLAN), median(rttCtr), median(tputLAN), median(tputCtr)
	b.ReportMetric(rl, "rtt-lan-us")
	b.ReportMetric(rc, "rtt-containers-us")
	b.ReportMetric(rc-rl, "added-rtt-us")
	b.ReportMetric(tl, "tput-lan-mbit")
	b.ReportMetric(tc, "tput-containers-mbit")
	b.ReportMetric(tc/tl, "tput-ratio")
}

func number(b *testing.B, out string, err error) float64 {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
	v, perr := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if perr != nil {
		b.Fatalf("nettool said %q", out)
	}
	return v
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkPeerMove measures how soon a server's peers reach its containers
// again once it changes address (routed mode): each round m3 moves between
// 10.77.200.13 and 10.77.200.23 (the new address added, the old one
// removed, its agent restarted, as an operator does after readdressing),
// and the time runs from m3's first heartbeat carrying the new address (the
// heartbeat's own time; the machines share the host's clock) to a container
// on m1 reaching one on m3 through the new route. It reports the median and
// the longest (heartbeat-to-path-ms, max-ms). m3 is left at .13.
func BenchmarkPeerMove(b *testing.B) {
	if meshMode != "routed" {
		b.Skip("routed mode: a WireGuard peer's move is an endpoint change, measured in workers/mesh")
	}
	ips := launchAll(b, "pm1@m1", "pm3@m3")
	reach := func() bool { return get("m1", "pm1", ips["pm3"]) == "pm3" }
	if !poll(20*time.Second, reach) {
		b.Fatal("pm1 does not reach pm3")
	}
	const home, away = "10.77.200.13", "10.77.200.23"
	move := func(to, from string) time.Time {
		began := time.Now()
		if out, err := inMachine("m3", "sh", "-c", fmt.Sprintf("sysctl -qw net.ipv4.conf.eth0.promote_secondaries=1 && ip addr add %s/24 dev eth0 && ip addr del %s/24 dev eth0 && systemctl restart skein-agent", to, from)); err != nil {
			b.Fatalf("moving m3 to %s: %v %s", to, err, out)
		}
		var beat time.Time
		if !poll(30*time.Second, func() bool {
			vs, err := servers()
			// The new agent's beat: one made before the move says nothing of the path.
			if err == nil && vs["m3"].Address == to && vs["m3"].Time.After(began) {
				beat = vs["m3"].Time
			}
			return !beat.IsZero()
		}) {
			b.Fatalf("no heartbeat of m3 at %s", to)
		}
		return beat
	}
	at := home
	// m3 goes home whatever happened, for the tests after this.
	defer func() {
		out, _ := inMachine("m3", "ip", "-4", "-br", "addr", "show", "eth0")
		if strings.Contains(out, home+"/") && !strings.Contains(out, away+"/") {
			return
		}
		if out, err := inMachine("m3", "sh", "-c", fmt.Sprintf("sysctl -qw net.ipv4.conf.eth0.promote_secondaries=1; ip addr add %s/24 dev eth0; ip addr del %s/24 dev eth0; systemctl restart skein-agent", home, away)); err != nil {
			b.Errorf("moving m3 back to %s: %v %s", home, err, out)
		}
		if !poll(60*time.Second, reach) {
			b.Errorf("pm1 does not reach pm3 with m3 back at %s", home)
		}
	}()
	var took []float64
	b.ResetTimer()
	for range b.N {
		to := away
		if at == away {
			to = home
		}
		beat := move(to, at)
		at = to
		// No pause between tries: each is a command in a container of m1 (~0.1 s).
		for deadline := time.Now().Add(30 * time.Second); !reach(); {
			if time.Now().After(deadline) {
				b.Fatalf("pm1 does not reach pm3 at m3's new address %s", to)
			}
		}
		took = append(took, float64(time.Since(beat).Milliseconds()))
		b.Logf("m3 at %s: pm1 reached pm3 %s after the heartbeat", to, time.Since(beat).Round(time.Millisecond))
	}
	b.StopTimer()
	b.ReportMetric(median(took), "heartbeat-to-path-ms")
	b.ReportMetric(slices.Max(took), "max-ms")
}
