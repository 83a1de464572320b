//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"sort"
	"testing"
	"time"
)

// BenchmarkAddBackend measures what the user waits for: from the moment
// `skein addbackends` is started to the first request answered by the new
// backend through a published haproxy port (first-served-ms), and to the
// command's exit (cli-ms). Run with -benchtime 20x (go tool task bench:lb); it
// reports medians and p90s in ms.
func BenchmarkAddBackend(b *testing.B) {
	must := func(args ...string) string {
		out, errOut, err := skein(args...)
		if err != nil {
			b.Fatalf("skein %v: %v\n%s%s", args, err, out, errOut)
		}
		return out
	}
	must("launch", "skein-busybox", "bb1", "-s", "s1")
	defer skein("delete", "bb1")
	must("launch", "skein-busybox", "bb2", "-s", "s2")
	defer skein("delete", "bb2")
	must("addlb", "haproxy", "s1", "-n", "habench")
	defer skein("dellb", "habench")
	var ip1, ip2 string
	for _, c := range listB(b) {
		switch c.Name {
		case "bb1":
			ip1 = c.IPv4
		case "bb2":
			ip2 = c.IPv4
		}
	}
	must("addbackends", "habench", "one:"+ip1+":80")
	must("pub", "habench", "80", "--host-port", "18081")
	const url = "http://127.0.0.1:18081/"
	var served, cli []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, skeinBin, "--nats", natsURL, "addbackends", "habench", "two:"+ip2+":80")
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		deadline := start.Add(10 * time.Second)
		for {
			if h, err := hits(1, url); err == nil && h["bb2"] == 1 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the new backend never answered")
			}
		}
		served = append(served, time.Since(start))
		if err := <-exited; err != nil {
			b.Fatalf("addbackends: %v", err)
		}
		cli = append(cli, time.Since(start))
		cancel()
		b.StopTimer()
		must("delbackends", "habench", "two")
		b.StartTimer()
	}
	b.StopTimer()
	report(b, served, "first-served")
	report(b, cli, "cli")
}

// report adds the median and p90 of lat, in ms, as metrics named NAME-median-ms and NAME-p90-ms.
func report(b *testing.B, lat []time.Duration, name string) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, name+"-median-ms")
	b.ReportMetric(float64(lat[(len(lat)*9)/10].Microseconds())/1000, name+"-p90-ms")
}

func listB(b *testing.B) []struct{ Name, IPv4 string } {
	out, _, err := skein("list", "-o", "json")
	if err != nil {
		b.Fatal(err)
	}
	var cs []struct {
		Name string `json:"name"`
		IPv4 string `json:"ipv4"`
	}
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		b.Fatal(err)
	}
	res := make([]struct{ Name, IPv4 string }, len(cs))
	for i, c := range cs {
		res[i].Name, res[i].IPv4 = c.Name, c.IPv4
	}
	return res
}
