//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// BenchmarkPubApp measures what the user waits for: from the moment `skein
// pubapp` is started to the first request served on the new URL through the
// web server's published port (first-served-ms), and to the command's exit
// (cli-ms). Run with -benchtime 20x (go tool task bench:ws); it reports
// medians and p90s in ms.
func BenchmarkPubApp(b *testing.B) {
	must := func(args ...string) string {
		out, errOut, err := skein(args...)
		if err != nil {
			b.Fatalf("skein %v: %v\n%s%s", args, err, out, errOut)
		}
		return out
	}
	must("launch", "skein-busybox", "wb1", "-s", "s2")
	defer skein("delete", "wb1")
	must("addws", "s1", "-n", "wsbench")
	defer skein("delws", "wsbench")
	must("pub", "s1:wsbench", "80", "--host-port", "18192")
	ip := ""
	for _, c := range listB(b) {
		if c.Name == "wb1" {
			ip = c.IPv4
		}
	}
	const url = "http://127.0.0.1:18192/"
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	var served, cli []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		host := fmt.Sprintf("b%d.test", i)
		s, c := timeToServe(b, []string{"pubapp", "wsbench", host, ip + ":80"}, func() bool {
			code, body, err := getHost(cl, url, host)
			return err == nil && code == 200 && body == "wb1"
		})
		served, cli = append(served, s), append(cli, c)
		b.StopTimer()
		must("delapp", "wsbench", host)
		b.StartTimer()
	}
	b.StopTimer()
	report(b, served, "first-served")
	report(b, cli, "cli")
}
