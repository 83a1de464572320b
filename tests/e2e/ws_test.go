//go:build e2e

package e2e

import (
	"encoding/json"
	"net/http"
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
	cleanup(t, "wa1", "wa2", "wa3", "web1", "consul-61")
	t.Cleanup(func() {
		_, _, _ = skein("delws", "web1")
		_, _, _ = skein("delep", "consul-61")
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
			{[]string{"pubapp", "web1", "app4.test", "wa1:80"}, "neither an IPv4 address nor a Consul name"},
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
		if after := mustSkein(t, "listws", "-o", "json"); after != before {
			t.Errorf("a refused command changed the web server:\n%s\n%s", before, after)
		}
		allServe(t, three)
	})

	t.Run("a Consul-name app follows its instance stopped and started", func(t *testing.T) {
		mustSkein(t, "addep", "s2", "10.77.2.61", "-n", "consul-61")
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
