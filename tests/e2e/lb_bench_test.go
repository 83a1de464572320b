//go:build e2e

package e2e

import (
	"encoding/json"
	"sort"
	"testing"
	"time"
)

// BenchmarkAddBackend measures the time from `skein addbackends` returning to the
// first request answered by the new backend, through a published haproxy port.
// Run with -benchtime 20x (go tool task bench:lb); it reports median and p90 in ms.
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
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		must("addbackends", "habench", "two:"+ip2+":80")
		start := time.Now()
		deadline := start.Add(10 * time.Second)
		for {
			if h, err := hits(1, url); err == nil && h["bb2"] == 1 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the new backend never answered")
			}
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		must("delbackends", "habench", "two")
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(lat[(len(lat)*9)/10].Microseconds())/1000, "p90-ms")
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
