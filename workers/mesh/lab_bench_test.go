package mesh

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// BenchmarkWireGuard compares, in one run, two servers' namespaces talking
// directly over their veth with the same through the userspace WireGuard
// tunnel, host to host and container to container (a namespace behind each
// server, MTU 1500, forwarded into the 1420 of the tunnel): round trips of
// 64 bytes on one TCP connection, and TCP throughput in 1 MiB writes. Both
// devices, the sender and the receiver run in this one process:
//
//	go test -run '^$' -bench BenchmarkWireGuard -benchtime 5s ./workers/mesh/
func BenchmarkWireGuard(b *testing.B) {
	l := newLab(b)
	conn, _ := testutil.Bus(b)
	hbs, err := bus.OpenStore[events.Heartbeat](b.Context(), conn.JS)
	if err != nil {
		b.Fatal(err)
	}
	h1, h2 := l.host(1), l.host(2)
	c1, c2 := l.containerOn(h1), l.containerOn(h2)
	n1, n2 := start(b, h1, newKey(b), hbs, time.Second), start(b, h2, newKey(b), hbs, time.Second)
	testutil.Eventually(b, 15*time.Second, func() bool {
		for _, n := range []*node{n1, n2} {
			ps := n.peerKeys()
			if len(ps) != 1 {
				return false
			}
			for _, p := range ps {
				if p.LastHandshakeTime.IsZero() {
					return false
				}
			}
		}
		return true
	}, "s1 and s2 shook hands")
	paths := []struct {
		name     string
		ns, dst  string
		from, to netip.Addr
	}{
		{"veth", h1.ns, h2.ns, h1.addr, h2.addr},
		{"wireguard", h1.ns, h2.ns, h1.gw, h2.gw},
		{"wireguard-container", h1.container, h2.container, c1, c2},
	}
	for _, p := range paths {
		echo(b, p.dst, p.to, 7000)
		sink(b, p.dst, p.to, 7100)
	}
	for _, p := range paths {
		b.Run("rtt/"+p.name, func(b *testing.B) {
			c, err := dial(b, p.ns, p.from, netip.AddrPortFrom(p.to, 7000), 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.(*net.TCPConn).SetNoDelay(true)
			msg, back := make([]byte, 64), make([]byte, 64)
			rtts := make([]time.Duration, 0, b.N)
			c.SetDeadline(time.Now().Add(time.Minute))
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, back); err != nil {
					b.Fatal(err)
				}
				rtts = append(rtts, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(rtts)
			b.ReportMetric(float64(rtts[len(rtts)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(rtts[len(rtts)*99/100].Microseconds()), "p99-µs")
		})
	}
	for _, p := range paths {
		b.Run("throughput/"+p.name, func(b *testing.B) {
			c, err := dial(b, p.ns, p.from, netip.AddrPortFrom(p.to, 7100), 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			c.SetDeadline(time.Now().Add(time.Minute))
			b.ResetTimer()
			t0 := time.Now()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			// Timed until the receiver has it all, not until it is buffered here.
			c.(*net.TCPConn).CloseWrite()
			var got uint64
			if err := binary.Read(c, binary.BigEndian, &got); err != nil || got != uint64(b.N*len(buf)) {
				b.Fatalf("the receiver got %d bytes of %d: %v", got, b.N*len(buf), err)
			}
			d := time.Since(t0)
			b.StopTimer()
			b.ReportMetric(float64(got)*8/d.Seconds()/1e6, "Mbit/s")
		})
	}
	// The container's MTU is 1500 and nothing clamps its MSS: its host's
	// "fragmentation needed" teaches it the tunnel's 1420 (path MTU discovery).
	route, _ := exec.Command("ip", "-n", h1.container, "route", "get", c2.String()).CombinedOutput()
	snmp, _ := exec.Command("ip", "netns", "exec", h1.container, "cat", "/proc/net/snmp").CombinedOutput()
	b.Logf("the container's path to the other after its transfers: %s; its TCP segments out/retransmitted: %s",
		strings.Join(strings.Fields(string(route)), " "), tcpCounters(string(snmp), "OutSegs", "RetransSegs"))
}

// tcpCounters picks counters of the Tcp lines of /proc/net/snmp.
func tcpCounters(snmp string, names ...string) string {
	var head, vals []string
	for _, line := range strings.Split(snmp, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "Tcp:" {
			if head == nil {
				head = f
			} else {
				vals = f
			}
		}
	}
	var out []string
	for _, n := range names {
		if i := slices.Index(head, n); i >= 0 && i < len(vals) {
			out = append(out, vals[i])
		}
	}
	return strings.Join(out, "/")
}

// sink takes TCP connections on addr:port inside ns, reads each to its end
// and answers how many bytes it read.
func sink(t testing.TB, ns string, addr netip.Addr, port int) {
	t.Helper()
	var ln net.Listener
	var err error
	inNS(t, ns, func() { ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", addr, port)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				binary.Write(c, binary.BigEndian, uint64(n))
			}()
		}
	}()
}
