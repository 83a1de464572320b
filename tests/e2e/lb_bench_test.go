//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"sort"
	"strings"
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
		s, c := timeToServe(b, []string{"addbackends", "habench", "two:" + ip2 + ":80"}, func() bool {
			h, err := hits(1, url)
			return err == nil && h["bb2"] == 1
		})
		served, cli = append(served, s), append(cli, c)
		b.StopTimer()
		must("delbackends", "habench", "two")
		b.StartTimer()
	}
	b.StopTimer()
	report(b, served, "first-served")
	report(b, cli, "cli")
}

// timeToServe runs the CLI with args as a new process, as a user does, and
// returns how long until served() first holds (polled every 2 ms, at most
// 10 s) and until the command exits.
func timeToServe(b *testing.B, args []string, served func() bool) (time.Duration, time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, skeinBin, append([]string{"--nats", natsURL, "--creds", adminCreds}, args...)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	type exit struct {
		err error
		at  time.Duration
	}
	exited := make(chan exit, 1)
	go func() {
		err := cmd.Wait()
		exited <- exit{err, time.Since(start)}
	}()
	deadline := start.Add(10 * time.Second)
	for !served() {
		if time.Now().After(deadline) {
			b.Fatalf("skein %v: never served (%s)", args, out.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	first := time.Since(start)
	e := <-exited
	if e.err != nil {
		b.Fatalf("skein %v: %v: %s", args, e.err, out.String())
	}
	return first, e.at
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
