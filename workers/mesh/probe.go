package mesh

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/workers"
)

// Containers is what a probe needs of this server's containers.
type Containers interface {
	List(ctx context.Context) ([]container.Instance, error)
	Exec(ctx context.Context, name string, argv ...string) (container.ExecResult, error)
}

// ProbeWith answers mesh probes: it pings each target from one of this
// server's running containers (the first by name that has ping), so that the
// path measured is the one containers use: through both servers' forwarding
// and routes.
func ProbeWith(cs Containers) func(ctx context.Context, req *workers.Request, p events.MeshProbe) (events.MeshProbed, error) {
	return func(ctx context.Context, req *workers.Request, p events.MeshProbe) (events.MeshProbed, error) {
		out := events.MeshProbed{Results: []events.ProbeResult{}}
		list, err := cs.List(ctx)
		if err != nil {
			return out, workers.Transient("listing containers: %v", err)
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
		tried := 0
		for _, c := range list {
			if c.Status != "Running" || c.IPv4 == "" || tried == 5 {
				continue
			}
			// Not every image has ping (skein's service image has not).
			tried++
			if res, err := cs.Exec(ctx, c.Name, "ping", "-c", "1", "-W", "1", "127.0.0.1"); err == nil && res.Code == 0 {
				out.From = c.Name
				break
			}
		}
		out.Results = make([]events.ProbeResult, len(p.Targets))
		var wg sync.WaitGroup
		slots := make(chan struct{}, 8) // a few pings at once: each waits up to 3 s
		for i, t := range p.Targets {
			r := &out.Results[i]
			r.ProbeTarget = t
			addr, err := netip.ParseAddr(t.Addr)
			switch {
			case err != nil || !addr.Is4():
				r.Error = "not an IPv4 address"
			case out.From == "":
				r.Error = "this server has no running container with ping to measure from: launch one (skein-busybox has ping)"
			default:
				wg.Add(1)
				go func() {
					defer wg.Done()
					slots <- struct{}{}
					defer func() { <-slots }()
					r.Sent, r.Received, r.RTTMillis, r.Error = ping(ctx, cs, out.From, addr)
				}()
			}
		}
		wg.Wait()
		return out, nil
	}
}

// pingSummary reads ping's "3 packets transmitted, 3 packets received" and
// "round-trip min/avg/max = 0.1/0.2/0.3 ms" (busybox) or "rtt min/avg/max/mdev =" (iputils).
var (
	pingCounts = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)
	pingRTT    = regexp.MustCompile(`min/avg/max(?:/mdev)? = [0-9.]+/([0-9.]+)/`)
)

// ping sends three echo requests from container from to addr, a second
// apart at the most, and reads what ping says.
func ping(ctx context.Context, cs Containers, from string, addr netip.Addr) (sent, received int, rtt float64, problem string) {
	res, err := cs.Exec(ctx, from, "ping", "-c", "3", "-W", "1", "-q", addr.String())
	if err != nil {
		return 0, 0, 0, fmt.Sprintf("running ping in %s: %v", from, err)
	}
	return parsePing(string(res.Stdout) + string(res.Stderr))
}

func parsePing(out string) (sent, received int, rtt float64, problem string) {
	m := pingCounts.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, 0, "ping said: " + firstLine(out)
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	if r := pingRTT.FindStringSubmatch(out); r != nil {
		rtt, _ = strconv.ParseFloat(r[1], 64)
	}
	if received == 0 {
		problem = "no reply"
	}
	return sent, received, rtt, problem
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
