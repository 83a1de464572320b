//go:build e2e

package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
)

// hits sends n requests through the published port and counts the answering hostnames.
func hits(n int, url string) (map[string]int, error) {
	out := map[string]int{}
	for i := 0; i < n; i++ {
		resp, err := httpClient.Get(url)
		if err != nil {
			return out, err
		}
		var b strings.Builder
		buf := make([]byte, 256)
		k, _ := resp.Body.Read(buf)
		b.Write(buf[:k])
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return out, &statusErr{resp.StatusCode}
		}
		out[strings.TrimSpace(b.String())]++
	}
	return out, nil
}

type statusErr struct{ code int }

func (e *statusErr) Error() string { return "HTTP status " + http.StatusText(e.code) }

// A haproxy load balancer in front of three containers on three servers, reached
// from the host through a published port.
func TestLoadBalancerHAProxy(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "ha1", "w1", "w2", "w3")
	t.Cleanup(func() { _, _, _ = skein("dellb", "ha1") })
	for i, s := range []string{"s1", "s2", "s3"} {
		mustSkein(t, "launch", "skein-busybox", "w"+string(rune('1'+i)), "-s", s)
	}
	cs := list(t)
	out := mustSkein(t, "addlb", "haproxy", "s1", "-n", "ha1")
	if !strings.Contains(out, "added haproxy load balancer ha1 on s1") {
		t.Fatalf("addlb said %q", out)
	}
	mustSkein(t, "addbackends", "ha1", "web1:"+find(cs, "w1").IPv4+":80", "web2:"+find(cs, "w2").IPv4+":80", "web3:"+find(cs, "w3").IPv4+":80")
	mustSkein(t, "pub", "s1:ha1", "80", "--host-port", "18080")
	const url = "http://127.0.0.1:18080/"

	var views []struct {
		Name      string   `json:"name"`
		Mode      string   `json:"mode"`
		Published []string `json:"published"`
		Backends  []struct {
			Name string `json:"name"`
		} `json:"backends"`
	}
	if err := json.Unmarshal([]byte(mustSkein(t, "listlbs", "-o", "json")), &views); err != nil || len(views) != 1 {
		t.Fatalf("listlbs: %v %v", views, err)
	}
	if v := views[0]; v.Name != "ha1" || v.Mode != "roundrobin" || len(v.Backends) != 3 || strings.Join(v.Published, ",") != "18080->80" {
		t.Fatalf("listlbs shows %+v", v)
	}

	t.Run("roundrobin reaches all three in turn", func(t *testing.T) {
		eventually(t, 15*time.Second, func() bool { h, err := hits(3, url); return err == nil && len(h) == 3 }, "not every backend answers")
		h, err := hits(30, url)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"w1", "w2", "w3"} {
			if h[w] != 10 {
				t.Fatalf("30 requests: %v, want 10 each", h)
			}
		}
	})

	t.Run("source sends one client to one backend", func(t *testing.T) {
		mustSkein(t, "setlb", "ha1", "mode", "source")
		// The old haproxy worker drains what it accepted before the reload; then one backend only.
		var h map[string]int
		eventually(t, 10*time.Second, func() bool {
			var err error
			h, err = hits(20, url)
			return err == nil && len(h) == 1
		}, "20 requests from one client went to %v, want one backend", lazyMap{&h})
	})

	t.Run("leastconn sends new requests to the idle backend", func(t *testing.T) {
		mustSkein(t, "setlb", "ha1", "mode", "leastconn")
		// A reload hands the listeners over to a new worker: start once it serves.
		eventually(t, 10*time.Second, func() bool { return backendAlgo(t, "s1", "ha1") == "leastconn" }, "haproxy does not run leastconn: %q", backendAlgo(t, "s1", "ha1"))
		// Two slow requests keep two backends busy for 8 s; under leastconn every
		// quick request meanwhile goes to the third, under roundrobin to all three.
		busy := make(chan string, 2)
		for i := range 2 {
			go func() {
				cl := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
				resp, err := cl.Get(url + "cgi-bin/slow?8")
				if err != nil {
					busy <- "error: " + err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				busy <- strings.TrimSpace(string(b))
			}()
			// haproxy must count the first slow request before the second comes.
			eventually(t, 5*time.Second, func() bool { return activeSessions(t, "s1", "ha1") > i }, "slow request %d not in haproxy", i+1)
		}
		h, err := hits(12, url)
		slow := []string{<-busy, <-busy}
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 1 {
			t.Fatalf("12 quick requests while two backends were busy went to %v, want one idle backend", h)
		}
		for idle := range h {
			if idle == slow[0] || idle == slow[1] || slow[0] == slow[1] {
				t.Fatalf("quick requests went to %s, the slow ones to %v: want three different backends", idle, slow)
			}
		}
	})

	t.Run("bad input is refused and the running load balancer is untouched", func(t *testing.T) {
		cases := []struct {
			args []string
			want string
		}{
			{[]string{"addbackends", "ha1", "web4:10.77.1:80"}, "bad backend"},
			{[]string{"addbackends", "ha1", "web4:10.77.1.5:99999"}, "the port must be 1 to 65535"},
			{[]string{"addbackends", "nolb", "web4:10.77.1.5:80"}, `no load balancer named "nolb"`},
			{[]string{"setlb", "ha1", "mode", "ip_hash"}, `haproxy load balancers have no mode "ip_hash": use roundrobin, leastconn, source`},
			{[]string{"addlb", "haproxy", "s1", "-n", "ha1"}, "already exists"},
			{[]string{"setlb", "ha1", "resolvers", "10.77.1.10:53\n  program x"}, "is not IP:PORT"},
			{[]string{"addbackends", "ha1", "web4:10.77.1.5\n  program x:80"}, "bad backend"},
			{[]string{"addlb", "haproxy", "s1", "-n", "ha9\nglobal"}, "bad container name"},
			{[]string{"pub", "w2", "80", "--host-port", "18080"}, "host port 18080"},
		}
		for _, tc := range cases {
			errOut := skeinFails(t, tc.args...)
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("skein %v: %q does not say %q", tc.args, strings.TrimSpace(errOut), tc.want)
			}
		}
		// The same, past the CLI: the agent refuses them too.
		refusedRaw(t, "s1", events.TypeLBSet, events.LBSet{LB: "ha1", Key: "resolvers", Value: "10.77.1.10:53\n  program x"}, "is not printable characters on one line")
		refusedRaw(t, "s1", events.TypeLBBackendsAdd, events.LBBackends{LB: "ha1", Backends: []events.Backend{{Name: "web4", Host: "10.77.1.5\n  program x", Port: 80}}}, "is not")
		refusedRaw(t, "s1", events.TypeLBSet, events.LBSet{LB: "ha1", Key: "mode", Value: "roundrobin\n  program x"}, "is not printable characters on one line")
		if out, err := incusCmd("exec", "ha1", "--project", "skein-s1", "--", "grep", "-c", "program", "/etc/haproxy/haproxy.cfg"); err == nil {
			t.Fatalf("haproxy.cfg holds a program section: %s", out)
		}
		if err := json.Unmarshal([]byte(mustSkein(t, "listlbs", "-o", "json")), &views); err != nil || views[0].Mode != "leastconn" || len(views[0].Backends) != 3 {
			t.Fatalf("the load balancer changed: %+v %v", views, err)
		}
		if h, err := hits(6, url); err != nil || len(h) < 2 {
			t.Fatalf("the load balancer stopped serving: %v %v", h, err)
		}
	})

	t.Run("a removed backend gets no more requests", func(t *testing.T) {
		mustSkein(t, "setlb", "ha1", "mode", "roundrobin")
		mustSkein(t, "delbackends", "ha1", "web3")
		var h map[string]int
		eventually(t, 10*time.Second, func() bool {
			var err error
			h, err = hits(20, url)
			return err == nil && h["w3"] == 0 && h["w1"] == 10 && h["w2"] == 10
		}, "after delbackends web3: %v", lazyMap{&h})
	})

	t.Run("50 backend changes under load drop no request", func(t *testing.T) {
		ip3 := find(list(t), "w3").IPv4
		res := loadDuring(t, url, 4, 3000, 90*time.Second, func() {
			for i := 0; i < 25; i++ {
				mustSkein(t, "addbackends", "ha1", "web3:"+ip3+":80")
				mustSkein(t, "delbackends", "ha1", "web3")
			}
		})
		t.Logf("%d requests (keep-alive, 4 clients) during 50 changes: %d failed, %d answered by web3", res.total, res.failed, res.hosts["w3"])
		if res.failed != 0 {
			t.Fatalf("%d of %d requests failed: %v", res.failed, res.total, res.firstErr)
		}
		if res.hosts["w3"] == 0 {
			t.Fatal("web3 never answered: the changes did not take effect")
		}
	})

	t.Run("ssl, workers; url is for nginx", func(t *testing.T) {
		pool, cert, key := testCA(t, t.TempDir(), "lb.test")
		mustSkein(t, "pub", "ha1", "443", "--host-port", "18443")
		mustSkein(t, "setlb", "ha1", "ssl", cert, key)
		tlsClient := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "lb.test"}}}
		eventually(t, 10*time.Second, func() bool {
			code, _, err := getHost(tlsClient, "https://127.0.0.1:18443/", "lb.test")
			return err == nil && code == 200
		}, "haproxy HTTPS does not verify against the CA")
		mustSkein(t, "setlb", "ha1", "workers", "2")
		if h, err := hits(4, url); err != nil || len(h) == 0 {
			t.Fatalf("not serving after workers 2: %v %v", h, err)
		}
		if errOut := skeinFails(t, "setlb", "ha1", "url", "x.test"); !strings.Contains(errOut, "url is for nginx") {
			t.Errorf("url on haproxy: %q", errOut)
		}
		mustSkein(t, "unpub", "ha1", "18443")
	})

	t.Run("unpub closes the port", func(t *testing.T) {
		mustSkein(t, "unpub", "ha1", "18080")
		eventually(t, 5*time.Second, func() bool { _, err := hits(1, url); return err != nil }, "port 18080 still answers")
	})
}

type lazyMap struct{ m *map[string]int }

func (l lazyMap) String() string { return fmt.Sprint(*l.m) }

type loadResult struct {
	total, failed int
	hosts         map[string]int
	firstErr      error
}

// loadDuring sends requests from clients keep-alive clients until total requests
// were sent and change has returned, or limit passed: bounded in count and time.
func loadDuring(t *testing.T, url string, clients, total int, limit time.Duration, change func()) loadResult {
	return loadDuringHost(t, url, "", clients, total, limit, change)
}

// loadDuringHost is loadDuring with a Host header.
func loadDuringHost(t *testing.T, url, host string, clients, total int, limit time.Duration, change func()) loadResult {
	t.Helper()
	var mu sync.Mutex
	res := loadResult{hosts: map[string]int{}}
	sent := 0
	changing := true
	deadline := time.Now().Add(limit)
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}
			defer cl.CloseIdleConnections()
			for {
				mu.Lock()
				if (sent >= total && !changing) || time.Now().After(deadline) {
					mu.Unlock()
					return
				}
				sent++
				mu.Unlock()
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				if host != "" {
					req.Host = host
				}
				resp, err := cl.Do(req)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				mu.Lock()
				res.total++
				if err != nil {
					res.failed++
					if res.firstErr == nil {
						res.firstErr = err
					}
				} else {
					res.hosts[strings.TrimSpace(string(body))]++
				}
				mu.Unlock()
			}
		}()
	}
	change()
	mu.Lock()
	changing = false
	mu.Unlock()
	wg.Wait()
	return res
}

// A backend given as a Consul service name follows the instances of the
// service as containers start and stop.
func TestLoadBalancerConsulBackend(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "hac", "cb1", "cb2", "consul-41")
	t.Cleanup(func() {
		_, _, _ = skein("dellb", "hac")
		_, _, _ = skein("delep", "consul-41")
	})
	mustSkein(t, "addep", "s3", "10.77.3.41")
	mustSkein(t, "launch", "skein-busybox", "cb1", "-s", "s1")
	mustSkein(t, "launch", "skein-busybox", "cb2", "-s", "s2")
	mustSkein(t, "addservice", "cb1", "blog", "80")
	mustSkein(t, "addservice", "cb2", "blog", "80")
	mustSkein(t, "addlb", "haproxy", "s3", "-n", "hac")
	mustSkein(t, "addbackends", "hac", "blog:blog.service.consul:80")
	mustSkein(t, "pub", "hac", "80", "--host-port", "18082")
	const url = "http://127.0.0.1:18082/"
	// The same service behind nginx, which resolves the name per request.
	cleanup(t, "ngc")
	t.Cleanup(func() { _, _, _ = skein("dellb", "ngc") })
	mustSkein(t, "addlb", "nginx", "s3", "-n", "ngc", "-u", "blog.test", "-b", "blog.service.consul:80")
	mustSkein(t, "pub", "ngc", "80", "--host-port", "18083")
	const ngURL = "http://127.0.0.1:18083/"
	ngHits := func(n int) map[string]int {
		out := map[string]int{}
		for i := 0; i < n; i++ {
			code, body, err := getHost(httpClient, ngURL, "blog.test")
			if err != nil || code != 200 {
				return nil
			}
			out[body]++
		}
		return out
	}
	both := func() bool {
		h, err := hits(10, url)
		n := ngHits(10)
		return err == nil && h["cb1"] > 0 && h["cb2"] > 0 && n["cb1"] > 0 && n["cb2"] > 0
	}
	eventually(t, 20*time.Second, both, "the Consul-name backend does not reach both instances (haproxy and nginx)")

	if out, err := incusCmd("stop", "cb2", "--project", "skein-s2"); err != nil {
		t.Fatalf("incus stop: %v %s", err, out)
	}
	stopped := time.Now()
	eventually(t, 15*time.Second, func() bool {
		h, err := hits(10, url)
		n := ngHits(10)
		return err == nil && h["cb1"] == 10 && n["cb1"] == 10
	}, "requests still go to the stopped instance")
	t.Logf("all requests on cb1 %s after cb2 stopped", time.Since(stopped).Round(time.Millisecond))
	if out, err := incusCmd("start", "cb2", "--project", "skein-s2"); err != nil {
		t.Fatalf("incus start: %v %s", err, out)
	}
	started := time.Now()
	eventually(t, 15*time.Second, both, "the restarted instance gets no requests")
	t.Logf("cb2 back in rotation %s after it started", time.Since(started).Round(time.Millisecond))
	// Without -n, names are generated.
	t.Cleanup(func() { _, _, _ = skein("dellb", "haproxy-1") })
	if out := mustSkein(t, "addlb", "haproxy", "s1"); !strings.Contains(out, "added haproxy load balancer haproxy-1 on s1") {
		t.Errorf("addlb without -n said %q", out)
	}
	mustSkein(t, "dellb", "haproxy-1")
	if errOut := skeinFails(t, "addbackends", "ngc", find(list(t), "cb1").IPv4+":80"); !strings.Contains(errOut, "has no other backend") {
		t.Errorf("a second backend beside a Consul name on nginx: %q", errOut)
	}

	errOut := skeinFails(t, "addbackends", "hac", "x:blog.example.org:80")
	if !strings.Contains(errOut, "bad backend") {
		t.Errorf("a non-Consul name: %q", errOut)
	}
}
