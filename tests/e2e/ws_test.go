//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

// A web server publishes three apps on three servers by URL through one
// published port, answers 404 for any other, follows a Consul-name app as
// its instance stops and starts, refuses bad input without touching what it
// serves, and removes one app and nothing else.
func TestWebServer(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "wa1", "wa2", "wa3", "web1", "consul-31")
	t.Cleanup(func() {
		_, _, _ = skein("delws", "web1")
		_, _, _ = skein("delep", "consul-31")
	})
	mustSkein(t, "launch", "skein-busybox", "wa1", "-s", "s1")
	mustSkein(t, "launch", "skein-busybox", "wa2", "-s", "s2")
	mustSkein(t, "launch", "skein-busybox", "wa3", "-s", "s3")
	cs := list(t)
	ips := map[string]string{"wa1": find(cs, "wa1").IPv4, "wa2": find(cs, "wa2").IPv4, "wa3": find(cs, "wa3").IPv4}

	out := mustSkein(t, "addws", "s1", "-n", "web1")
	if !strings.Contains(out, "added web server web1 on s1") {
		t.Fatalf("addws said %q", out)
	}
	nc, err := natsConnect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	published, err := nc.SubscribeSync(bus.EventSubject("s1", events.TypeAppPublished))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []string{"wa1", "wa2", "wa3"} {
		mustSkein(t, "pubapp", "web1", "app"+string(rune('1'+i))+".test", ips[c]+":80")
	}
	// Every change is an event.
	for i := 0; i < 3; i++ {
		m, err := published.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("app.published event %d: %v", i+1, err)
		}
		env, err := events.Decode(m.Data)
		var ev events.AppEvent
		if err != nil || env.Payload(&ev) != nil || ev.WS != "web1" || ev.Target == nil || !strings.HasPrefix(ev.URL, "app") {
			t.Errorf("app.published event: %v %+v", err, ev)
		}
	}
	mustSkein(t, "pub", "s1:web1", "80", "--host-port", "18190")
	const url = "http://127.0.0.1:18190/"
	plain := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	serves := func(host, want string) bool {
		code, body, err := getHost(plain, url, host)
		return err == nil && code == 200 && body == want
	}
	allServe := func(t *testing.T, apps map[string]string) {
		t.Helper()
		for host, want := range apps {
			if code, body, err := getHost(plain, url, host); err != nil || code != 200 || body != want {
				t.Errorf("%s answered %d %q %v, want 200 %q", host, code, body, err, want)
			}
		}
	}
	three := map[string]string{"app1.test": "wa1", "app2.test": "wa2", "app3.test": "wa3"}
	certA, keyA := writePair(t, "given.test")
	_, keyB := writePair(t, "given.test")

	t.Run("three apps on three servers answer on their own URLs, any other gets 404", func(t *testing.T) {
		eventually(t, 10*time.Second, func() bool { return serves("app1.test", "wa1") }, "app1.test does not answer")
		allServe(t, three)
		if code, _, err := getHost(plain, url, "unknown.test"); err != nil || code != 404 {
			t.Errorf("unknown.test answered %d %v, want 404", code, err)
		}
		var views []struct {
			Name      string       `json:"name"`
			IP        string       `json:"ip"`
			Apps      []events.App `json:"apps"`
			Published []string     `json:"published"`
		}
		if err := json.Unmarshal([]byte(mustSkein(t, "listws", "-o", "json")), &views); err != nil || len(views) != 1 {
			t.Fatalf("listws -o json: %v %+v", err, views)
		}
		if v := views[0]; v.Name != "web1" || len(v.Apps) != 3 || v.IP == "" || !contains(v.Published, "18190->80") {
			t.Errorf("listws: %+v", v)
		}
	})

	t.Run("bad input is refused with the fix and the apps keep answering", func(t *testing.T) {
		before := mustSkein(t, "listws", "-o", "json")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"pubapp", "web1", "a.com; location / {}", ips["wa1"] + ":80"}, "is not a host name"},
			{[]string{"pubapp", "web1", "app4.test", "nope"}, "bad target"},
			{[]string{"pubapp", "web1", "app4.test", "wa_1:80"}, "neither an IPv4 address"},
			{[]string{"pubapp", "web1", "app4.test", "nosuch:80"}, "nosuch"},
			{[]string{"pubapp", "web1", "app4.test", ips["wa1"] + ":80", "-c", certA, "-k", keyB}, "do not make a pair"},
			{[]string{"pubapp", "web1", "app4.test", ips["wa1"] + ":80", "-s", "--acme"}, "exclusive"},
			{[]string{"pubapp", "web1", "app4.test", ips["wa1"] + ":80", "--acme", "--acme-url", "http://127.0.0.1:14000/dir"}, "not an https URL"},
			{[]string{"pubapp", "web1", "app4.test", ips["wa1"] + ":70000"}, "bad target"},
			{[]string{"pubapp", "nows", "app4.test", ips["wa1"] + ":80"}, "no web server named"},
			{[]string{"pubapp", "web1", "app1.test", ips["wa2"] + ":80"}, "already publishes app1.test"},
			{[]string{"delapp", "web1", "never.test"}, "does not publish never.test"},
			{[]string{"addws", "s1", "-n", "web1"}, "already exists"},
		} {
			if errOut := skeinFails(t, tc.args...); !strings.Contains(errOut, tc.want) {
				t.Errorf("skein %q: %q does not say %q", tc.args, strings.TrimSpace(errOut), tc.want)
			}
		}
		// Past the CLI, the agent refuses the same.
		refusedRaw(t, "s1", events.TypeAppPublish, events.AppPublish{WS: "web1", URL: "evil.test; location /pwn { return 200 owned; }", Target: events.Target{Kind: events.TargetAddress, Host: ips["wa1"], Port: 80}}, "is not")
		refusedRaw(t, "s1", events.TypeAppPublish, events.AppPublish{WS: "web1", URL: "app5.test", Target: events.Target{Kind: events.TargetAddress, Host: "10.77.1.5;\n", Port: 80}}, "is not")
		refusedRaw(t, "s1", events.TypeAppPublish, events.AppPublish{WS: "web1", URL: "app5.test", Target: events.Target{Kind: events.TargetContainer, Host: "wa1;", Port: 80}}, "is not")
		refusedRaw(t, "s1", events.TypeAppPublish, events.AppPublish{WS: "web1", URL: "app5.test", Target: events.Target{Kind: events.TargetAddress, Host: ips["wa1"], Port: 80}, TLS: &events.AppTLSRequest{Kind: events.TLSSelf, ACMEURL: "https://x/dir"}}, "ACME")
		if after := mustSkein(t, "listws", "-o", "json"); after != before {
			t.Errorf("a refused command changed the web server:\n%s\n%s", before, after)
		}
		allServe(t, three)
	})

	t.Run("a Consul-name app follows its instance stopped and started", func(t *testing.T) {
		mustSkein(t, "addep", "s2", "10.77.2.31", "-n", "consul-31")
		mustSkein(t, "addservice", "wa3", "wsapp", "80")
		mustSkein(t, "pubapp", "web1", "consul.test", "wsapp.service.consul:80")
		eventually(t, 15*time.Second, func() bool { return serves("consul.test", "wa3") }, "consul.test does not reach wa3")
		mustSkein(t, "stop", "wa3")
		eventually(t, 15*time.Second, func() bool { code, _, _ := getHost(plain, url, "consul.test"); return code >= 500 }, "consul.test still answers with wa3 stopped")
		mustSkein(t, "start", "wa3")
		eventually(t, 15*time.Second, func() bool { return serves("consul.test", "wa3") }, "consul.test does not reach wa3 once it is back")
		mustSkein(t, "delapp", "web1", "consul.test")
	})

	t.Run("delapp removes one app and nothing else", func(t *testing.T) {
		out := mustSkein(t, "delapp", "web1", "app2.test")
		if !strings.Contains(out, "removed from web server web1") {
			t.Errorf("delapp said %q", out)
		}
		eventually(t, 10*time.Second, func() bool { code, _, _ := getHost(plain, url, "app2.test"); return code == 404 }, "app2.test still answers")
		allServe(t, map[string]string{"app1.test": "wa1", "app3.test": "wa3"})
		// Published again, the same app changes nothing the second time.
		mustSkein(t, "pubapp", "web1", "app2.test", ips["wa2"]+":80")
		again := mustSkein(t, "pubapp", "web1", "app2.test", ips["wa2"]+":80")
		if !strings.Contains(again, "3 apps") {
			t.Errorf("publishing the same app twice: %q", again)
		}
		eventually(t, 10*time.Second, func() bool { return serves("app2.test", "wa2") }, "app2.test does not answer again")
	})

	t.Run("a CONTAINER:PORT app keeps answering after its container restarts with a new address", func(t *testing.T) {
		cleanup(t, "wc1")
		mustSkein(t, "launch", "skein-busybox", "wc1", "-s", "s2")
		mustSkein(t, "pubapp", "web1", "ctr.test", "wc1:80")
		eventually(t, 10*time.Second, func() bool { return serves("ctr.test", "wc1") }, "ctr.test does not reach wc1")
		old := find(list(t), "wc1").IPv4
		next := old[:strings.LastIndex(old, ".")+1] + "213"
		if next == old {
			next = old[:strings.LastIndex(old, ".")+1] + "214"
		}
		for _, args := range [][]string{{"stop", "wc1"}, {"config", "device", "set", "wc1", "eth0", "ipv4.address=" + next}, {"start", "wc1"}} {
			if out, err := incusCmd(append(args, "--project", "skein-s2")...); err != nil {
				t.Fatalf("incus %v: %v %s", args, err, out)
			}
		}
		eventually(t, 30*time.Second, func() bool { return find(list(t), "wc1").IPv4 == next && serves("ctr.test", "wc1") }, "ctr.test does not follow wc1 to %s (its record says %s; web1's apps: %s)", next,
			lazyString(func() string { return find(list(t), "wc1").IPv4 }), lazyString(func() string { out, _, _ := skein("listws", "-o", "json"); return out }))
		var views []struct {
			Apps []events.App `json:"apps"`
		}
		_ = json.Unmarshal([]byte(mustSkein(t, "listws", "-o", "json")), &views)
		for _, a := range views[0].Apps {
			if a.URL == "ctr.test" && (a.Addr != next || a.Target.Host != "wc1") {
				t.Errorf("listws shows ctr.test as %+v, want wc1 at %s", a, next)
			}
		}
		allServe(t, three)
		mustSkein(t, "delapp", "web1", "ctr.test")
	})

	t.Run("a WebSocket upgrade passes through to the app", func(t *testing.T) {
		// wa2 answers the upgrade on 9001 and then echoes what it gets: busybox nc runs a script per connection.
		script := `printf '%s\n' '#!/bin/sh' 'while read -r l; do [ "${#l}" -le 1 ] && break; done' 'printf "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"' 'exec cat' > /ws-echo && chmod +x /ws-echo && (setsid nc -ll -p 9001 -e /ws-echo </dev/null >/dev/null 2>&1 &)`
		if out, err := incusCmd("exec", "wa2", "--project", "skein-s2", "--", "sh", "-c", script); err != nil {
			t.Fatalf("starting the echo: %v %s", err, out)
		}
		mustSkein(t, "pubapp", "web1", "ws.test", "wa2:9001")
		var got string
		eventually(t, 10*time.Second, func() bool { got = upgradeEcho("127.0.0.1:18190", "ws.test", "hello-ws"); return got == "hello-ws" }, "no echo through the upgraded connection")
		mustSkein(t, "delapp", "web1", "ws.test")
	})

	mustSkein(t, "pub", "s1:web1", "443", "--host-port", "18191")
	noFollow := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	t.Run("-s serves a certificate for the URL that verifies with wsca's CA, port 80 redirects", func(t *testing.T) {
		mustSkein(t, "pubapp", "web1", "self.test", ips["wa1"]+":80", "-s", "--hsts")
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(mustSkein(t, "wsca", "web1"))) {
			t.Fatal("wsca printed no PEM certificate")
		}
		var resp *tlsAnswer
		eventually(t, 10*time.Second, func() bool {
			resp = httpsGet("127.0.0.1:18191", "self.test", pool)
			return resp.err == nil && resp.code == 200
		}, "https://self.test does not verify with wsca's CA")
		if resp.body != "wa1" || !strings.HasPrefix(resp.header.Get("Strict-Transport-Security"), "max-age=") {
			t.Errorf("https://self.test answered %q, HSTS %q", resp.body, resp.header.Get("Strict-Transport-Security"))
		}
		// As a user checks it: curl with the CA that wsca printed, the name resolved to the published port.
		caFile := filepath.Join(t.TempDir(), "ca.pem")
		_ = os.WriteFile(caFile, []byte(mustSkein(t, "wsca", "web1")), 0o644)
		if out, err := exec.Command("curl", "-sS", "--max-time", "5", "--cacert", caFile, "--resolve", "self.test:18191:127.0.0.1", "https://self.test:18191/").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "wa1" {
			t.Errorf("curl --cacert (wsca) https://self.test:18191/: %v %s", err, out)
		}
		if r := httpsGet("127.0.0.1:18191", "app1.test", pool); r.err == nil {
			t.Error("a name with no TLS app got a TLS handshake")
		}
		// nginx takes a reload asynchronously: an old worker may answer a moment longer.
		var code int
		var loc string
		eventually(t, 5*time.Second, func() bool {
			code, loc = redirect(t, noFollow, "http://127.0.0.1:18190/x?y=1", "self.test")
			return code == 301
		}, "port 80 of self.test does not redirect")
		if code != 301 || loc != "https://self.test/x?y=1" {
			site, err := incusCmd("exec", "web1", "--project", "skein-s1", "--", "cat", "/etc/nginx/sites-enabled/default")
			c2, b2, e2 := getHost(plain, "http://127.0.0.1:18190/x?y=1", "self.test")
			t.Errorf("port 80 of a TLS app answered %d %q, want 301 https://self.test/x?y=1 (plain: %d %q %v); site (%v):\n%s", code, loc, c2, b2, e2, err, site)
		}
		if out := mustSkein(t, "listws"); !strings.Contains(out, "self.test->"+ips["wa1"]+":80(self)") {
			t.Errorf("listws does not show the TLS kind:\n%s", out)
		}
	})

	t.Run("-c/-k serves exactly the given certificate, its key nowhere in skein's records", func(t *testing.T) {
		mustSkein(t, "pubapp", "web1", "given.test", ips["wa2"]+":80", "-c", certA, "-k", keyA, "--no-redirect")
		want, _ := os.ReadFile(certA)
		var resp *tlsAnswer
		eventually(t, 10*time.Second, func() bool {
			resp = httpsGet("127.0.0.1:18191", "given.test", nil)
			return resp.err == nil && resp.code == 200
		}, "https://given.test does not answer")
		if len(resp.peers) == 0 || !bytes.Equal(pemOf(resp.peers[0].Raw), want) || resp.body != "wa2" {
			t.Errorf("https://given.test served another certificate or answer (%q)", resp.body)
		}
		if !serves("given.test", "wa2") {
			t.Error("--no-redirect: port 80 of given.test does not serve the app")
		}
		key, _ := os.ReadFile(keyA)
		for _, args := range [][]string{{"listws", "-o", "json"}, {"events", "--type", "app.*"}} {
			out, _, _ := skein(args...)
			if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, string(key[40:80])) {
				t.Errorf("skein %v shows the key", args)
			}
		}
		// The same pair again changes nothing; a bad pair leaves the served one.
		mustSkein(t, "pubapp", "web1", "given.test", ips["wa2"]+":80", "-c", certA, "-k", keyA, "--no-redirect")
		skeinFails(t, "pubapp", "web1", "given.test", ips["wa2"]+":80", "-c", certA, "-k", keyB)
		if r := httpsGet("127.0.0.1:18191", "given.test", nil); r.err != nil || len(r.peers) == 0 || !bytes.Equal(pemOf(r.peers[0].Raw), want) {
			t.Errorf("after a refused pair https://given.test serves another certificate: %v", r.err)
		}
	})

	t.Run("--acme gets a certificate from Pebble that verifies with its root; a forced renewal drops no request", func(t *testing.T) {
		wsIP := find(list(t), "web1").IPv4
		pb := startPebble(t, wsIP)
		out := mustSkein(t, "pubapp", "web1", "acme.test", ips["wa3"]+":80", "--acme", "--acme-url", pb.Dir, "--acme-roots", pb.Roots)
		if !strings.Contains(out, "published on web server web1") {
			t.Errorf("pubapp --acme said %q", out)
		}
		roots := pb.IssuingRoots(t)
		var first *tlsAnswer
		eventually(t, 10*time.Second, func() bool {
			first = httpsGet("127.0.0.1:18191", "acme.test", roots)
			return first.err == nil && first.code == 200
		}, "https://acme.test does not verify with pebble's root: %v", func() error {
			if first != nil {
				return first.err
			}
			return nil
		}())
		if first.body != "wa3" {
			t.Errorf("https://acme.test answered %q", first.body)
		}
		// Four keep-alive clients on https://acme.test while it is renewed.
		stop := make(chan struct{})
		type tally struct {
			ok, failed int
			last       error
			fps        map[string]bool
		}
		results := make(chan tally, 4)
		for c := 0; c < 4; c++ {
			go func() {
				tr := &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "acme.test"}, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "tcp", "127.0.0.1:18191")
				}}
				cl := &http.Client{Timeout: 5 * time.Second, Transport: tr}
				var r tally
				r.fps = map[string]bool{}
				for {
					select {
					case <-stop:
						results <- r
						return
					default:
					}
					resp, err := cl.Get("https://acme.test/")
					if err != nil {
						r.failed++
						r.last = err
						continue
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "wa3" {
						r.failed++
						r.last = fmt.Errorf("%d %q", resp.StatusCode, body)
						continue
					}
					r.ok++
					r.fps[fmt.Sprintf("%x", sha256.Sum256(resp.TLS.PeerCertificates[0].Raw))] = true
					// A new connection now and then sees the certificate served now.
					if r.ok%25 == 0 {
						tr.CloseIdleConnections()
					}
				}
			}()
		}
		time.Sleep(300 * time.Millisecond) // let the clients get going before the renewal starts
		mustSkein(t, "renewapp", "web1", "acme.test")
		var renewed *tlsAnswer
		eventually(t, 10*time.Second, func() bool {
			renewed = httpsGet("127.0.0.1:18191", "acme.test", roots)
			return renewed.err == nil && len(renewed.peers) > 0 && !bytes.Equal(renewed.peers[0].Raw, first.peers[0].Raw)
		}, "the renewed certificate is not served")
		time.Sleep(300 * time.Millisecond) // requests on the renewed certificate too
		close(stop)
		total, failed := 0, 0
		for c := 0; c < 4; c++ {
			r := <-results
			total += r.ok
			failed += r.failed
			if r.failed > 0 {
				t.Errorf("a client failed %d requests during the renewal, last: %v", r.failed, r.last)
			}
		}
		if total < 40 {
			t.Errorf("only %d requests were served during the renewal", total)
		}
		t.Logf("renewal: %d requests served, %d failed", total, failed)
		if _, err := renewed.peers[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: "acme.test", Intermediates: pool(renewed.peers[1:])}); err != nil {
			t.Errorf("the renewed certificate does not verify: %v", err)
		}
		mustSkein(t, "delapp", "web1", "acme.test")
	})

	t.Run("addhosts makes the URL resolve on this machine; delhosts removes only its line", func(t *testing.T) {
		saved, err := os.ReadFile("/etc/hosts")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.WriteFile("/etc/hosts", saved, 0o644) })
		wsIP := find(list(t), "web1").IPv4
		mustSkein(t, "addhosts", "app1.test")
		mustSkein(t, "addhosts", "other.test", "10.77.1.250")
		if out, err := exec.Command("getent", "hosts", "app1.test").Output(); err != nil || !strings.HasPrefix(string(out), wsIP+" ") {
			t.Errorf("getent hosts app1.test = %q %v, want %s", out, err, wsIP)
		}
		if out, err := exec.Command("getent", "hosts", "other.test").Output(); err != nil || !strings.HasPrefix(string(out), "10.77.1.250 ") {
			t.Errorf("getent hosts other.test = %q %v", out, err)
		}
		now, _ := os.ReadFile("/etc/hosts")
		if !bytes.HasPrefix(now, saved) {
			t.Errorf("addhosts changed lines that are not its own:\n%s", now)
		}
		mustSkein(t, "delhosts", "app1.test")
		if out, err := exec.Command("getent", "hosts", "app1.test").Output(); err == nil {
			t.Errorf("app1.test still resolves after delhosts: %q", out)
		}
		if out, err := exec.Command("getent", "hosts", "other.test").Output(); err != nil || len(out) == 0 {
			t.Errorf("delhosts app1.test removed other.test too: %v", err)
		}
		mustSkein(t, "delhosts", "other.test")
		if now, _ := os.ReadFile("/etc/hosts"); !bytes.Equal(now, saved) {
			t.Errorf("/etc/hosts is not byte for byte what it was:\n%q\nwas\n%q", now, saved)
		}
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"addhosts", "a.com; location / {}"}, "not a host name"},
			{[]string{"addhosts", "a.com", "10.0.0.1 evil.com"}, "not an IPv4 address"},
			{[]string{"addhosts", "nopub.test"}, "no web server publishes nopub.test"},
		} {
			if errOut := skeinFails(t, tc.args...); !strings.Contains(errOut, tc.want) {
				t.Errorf("skein %q: %q does not say %q", tc.args, strings.TrimSpace(errOut), tc.want)
			}
		}
		if now, _ := os.ReadFile("/etc/hosts"); !bytes.Equal(now, saved) {
			t.Error("a refused addhosts changed /etc/hosts")
		}
	})

	t.Run("four keep-alive clients see no failure on three apps during 30 changes of a fourth", func(t *testing.T) {
		stop := make(chan struct{})
		type tally struct {
			ok, failed int
			last       error
		}
		results := make(chan tally, 4)
		for c := 0; c < 4; c++ {
			go func(c int) {
				cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}
				hosts := []string{"app1.test", "app2.test", "app3.test"}
				var r tally
				for i := c; ; i++ {
					select {
					case <-stop:
						results <- r
						return
					default:
					}
					host := hosts[i%3]
					code, body, err := getHost(cl, url, host)
					if err != nil || code != 200 || body != three[host] {
						r.failed++
						r.last = fmt.Errorf("%s: %d %q %v", host, code, body, err)
						continue
					}
					r.ok++
				}
			}(c)
		}
		for i := 0; i < 15; i++ {
			mustSkein(t, "pubapp", "web1", "app4.test", ips["wa1"]+":80")
			mustSkein(t, "delapp", "web1", "app4.test")
		}
		close(stop)
		total := 0
		for c := 0; c < 4; c++ {
			r := <-results
			total += r.ok
			if r.failed > 0 {
				t.Errorf("a client failed %d requests, last: %v", r.failed, r.last)
			}
		}
		t.Logf("30 changes: %d requests served", total)
		if total < 100 {
			t.Errorf("only %d requests were served", total)
		}
	})

	t.Run("delws removes it", func(t *testing.T) {
		mustSkein(t, "delws", "web1")
		if strings.Contains(mustSkein(t, "listws"), "web1") {
			t.Error("listws still shows web1")
		}
		if _, err := plain.Get(url); err == nil {
			t.Error("the published port still answers")
		}
	})
}

// writePair writes a self-signed certificate for name and its key into the
// test's temp dir and returns their paths.
func writePair(t *testing.T, name string) (string, string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: sn, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(cert, pemOf(der), 0o644)
	_ = os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return cert, key
}

func pemOf(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// tlsAnswer is what an HTTPS request got: the answer and the certificates
// the server presented.
type tlsAnswer struct {
	code   int
	body   string
	header http.Header
	peers  []*x509.Certificate
	err    error
}

// httpsGet asks https://name/ at addr (a published port), verifying the
// server's certificate for name with roots, or taking any certificate when
// roots is nil.
func httpsGet(addr, name string, roots *x509.CertPool) *tlsAnswer {
	cfg := &tls.Config{ServerName: name, RootCAs: roots, InsecureSkipVerify: roots == nil}
	cl := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: cfg,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}}}
	resp, err := cl.Get("https://" + name + "/")
	if err != nil {
		return &tlsAnswer{err: err}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return &tlsAnswer{code: resp.StatusCode, body: strings.TrimSpace(string(body)), header: resp.Header, peers: resp.TLS.PeerCertificates}
}

// redirect asks url with the Host host and returns the status and Location.
func redirect(t *testing.T, cl *http.Client, url, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = host
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", url, host, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// upgradeEcho asks addr for a WebSocket upgrade of host, sends msg on the
// upgraded connection and returns the first line that comes back with it
// ("" on any failure).
func upgradeEcho(addr, host, msg string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET /chat HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", host)
	r := bufio.NewReader(c)
	status, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101") {
		return ""
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return ""
		}
		if l == "\r\n" {
			break
		}
	}
	fmt.Fprintf(c, "%s\n", msg)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return ""
		}
		if strings.TrimSpace(l) == msg {
			return msg
		}
	}
}
