//go:build e2e

package e2e

import (
	"sort"
	"testing"
	"time"
)

// BenchmarkPublication measures service publication latency: from `incus start`
// of a container with a service until an endpoint's DNS answers with its
// address. Run with -benchtime 20x (go tool task bench:discovery); it reports the
// median and p90 in milliseconds.
func BenchmarkPublication(b *testing.B) {
	const ep = "10.77.1.11"
	must := func(args ...string) {
		if out, errOut, err := skein(args...); err != nil {
			b.Fatalf("skein %v: %v\n%s%s", args, err, out, errOut)
		}
	}
	must("addep", "s1", ep, "-n", "consul-bench")
	defer skein("delep", "consul-bench")
	must("launch", "skein-busybox", "pub1", "-s", "s2")
	defer skein("delete", "pub1")
	must("addservice", "pub1", "pubbench", "80")
	var ip string
	waitFor := func(total time.Duration, cond func() bool) bool {
		deadline := time.Now().Add(total)
		for time.Now().Before(deadline) {
			if cond() {
				return true
			}
			time.Sleep(10 * time.Millisecond)
		}
		return false
	}
	if !waitFor(20*time.Second, func() bool { r := dig(ep, "pubbench.service.consul"); ip = first(r); return ip != "" }) {
		b.Fatal("pub1 never published")
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if out, err := incusCmd("stop", "pub1", "--project", "skein-s2"); err != nil {
			b.Fatalf("incus stop: %v %s", err, out)
		}
		if !waitFor(10*time.Second, func() bool { return len(dig(ep, "pubbench.service.consul")) == 0 }) {
			b.Fatal("pub1 never left DNS")
		}
		b.StartTimer()
		start := time.Now()
		if out, err := incusCmd("start", "pub1", "--project", "skein-s2"); err != nil {
			b.Fatalf("incus start: %v %s", err, out)
		}
		if !waitFor(10*time.Second, func() bool { return first(dig(ep, "pubbench.service.consul")) == ip }) {
			b.Fatal("pub1 never came back to DNS")
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(lat[(len(lat)*9)/10].Microseconds())/1000, "p90-ms")
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
