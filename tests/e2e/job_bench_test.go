//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	"sort"
	"testing"
	"time"
)

// BenchmarkJob30 times a 30-instance job on the three servers end to end, as
// its user waits for it: from starting `skein addjob skein-busybox 30` to the
// CLI's exit, which comes when all 30 instances run (the scheduler's plan,
// 30 launches through the agents, the records showing them Running). The job
// is deleted between runs. go tool task bench:job; median and max in s.
func BenchmarkJob30(b *testing.B) {
	var took []time.Duration
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		start := time.Now()
		out, err := exec.CommandContext(ctx, skeinBin, "--nats", natsURL, "--creds", adminCreds, "addjob", "skein-busybox", "30", "--name", "bench30", "--timeout", "4m").CombinedOutput()
		d := time.Since(start)
		cancel()
		if err != nil {
			b.Fatalf("addjob: %v\n%s", err, out)
		}
		took = append(took, d)
		b.StopTimer()
		if out, err := exec.Command(skeinBin, "--nats", natsURL, "--creds", adminCreds, "deljob", "bench30", "--timeout", "4m").CombinedOutput(); err != nil {
			b.Fatalf("deljob: %v\n%s", err, out)
		}
		b.StartTimer()
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(took[len(took)/2].Seconds(), "median-s")
	b.ReportMetric(took[len(took)-1].Seconds(), "max-s")
}
