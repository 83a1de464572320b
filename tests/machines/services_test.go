//go:build e2e

package machines

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
)

// launchAll launches busybox containers, one per NAME@MACHINE, deleted when
// the test or benchmark ends, and returns their addresses.
func launchAll(t testing.TB, specs ...string) map[string]string {
	t.Helper()
	for _, s := range specs {
		name, m, _ := strings.Cut(s, "@")
		if out, err := skein("launch", "skein-busybox", name, "-s", m); err != nil {
			t.Fatalf("launch %s: %v %s", name, err, out)
		}
		t.Cleanup(func() { _, _ = skein("delete", name) })
	}
	out, err := skein("list", "-o", "json")
	if err != nil {
		t.Fatalf("skein list: %v %s", err, out)
	}
	var cs []events.Container
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatal(err)
	}
	ips := map[string]string{}
	for _, c := range cs {
		ips[c.Name] = c.IPv4
	}
	return ips
}

// nslookup resolves name in container c on machine m, through its bridge's
// dnsmasq (which forwards the consul domain to the endpoints).
func nslookup(m, c, name string) []string {
	out, _ := inContainer(m, c, "timeout", "5", "nslookup", name)
	var ips []string
	seenName := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Name:") {
			seenName = true
		}
		if seenName && strings.HasPrefix(l, "Address") {
			f := strings.Fields(l)
			ips = append(ips, f[len(f)-1])
		}
	}
	sort.Strings(ips)
	return ips
}

// Service discovery and a load balancer across machines: a Consul endpoint
// on m1 answers the containers of m2 and m3 by name; haproxy on m1 balances
// over backends on m2 and m3, reached from the host through m1's published
// port on the machines' LAN.
func TestServicesAcrossMachines(t *testing.T) {
	ips := launchAll(t, "web2@m2", "web3@m3")
	want := []string{ips["web2"], ips["web3"]}
	sort.Strings(want)
	mustSkein(t, "addep", "m1", "10.77.201.10", "-n", "ep-m1")
	t.Cleanup(func() { _, _ = skein("delep", "ep-m1") })
	mustSkein(t, "addservice", "web2", "web", "80")
	mustSkein(t, "addservice", "web3", "web", "80")
	for _, at := range []struct{ m, c string }{{"m2", "web2"}, {"m3", "web3"}} {
		eventually(t, 60*time.Second, func() bool { return fmt.Sprint(nslookup(at.m, at.c, "web.service.consul")) == fmt.Sprint(want) },
			"web.service.consul from %s on %s: %v, want %v", at.c, at.m, nslookup(at.m, at.c, "web.service.consul"), want)
	}

	mustSkein(t, "addlb", "haproxy", "m1", "-n", "lbm")
	t.Cleanup(func() { _, _ = skein("dellb", "lbm") })
	mustSkein(t, "addbackends", "lbm", "w2:"+ips["web2"]+":80", "w3:"+ips["web3"]+":80")
	mustSkein(t, "pub", "m1:lbm", "80", "--host-port", "18091")
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	seen := map[string]int{}
	eventually(t, 30*time.Second, func() bool {
		resp, err := client.Get("http://10.77.200.11:18091/")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[strings.TrimSpace(string(b))]++
		return seen["web2"] > 0 && seen["web3"] > 0
	}, "haproxy on m1 does not answer from both machines' backends: %v", seen)
	t.Logf("haproxy on m1 answered from web2 (m2) and web3 (m3): %v", seen)
}

// A web server on m2 publishes an app that runs on m3: the host reaches it
// by URL through m2's published port.
func TestWebServerAcrossMachines(t *testing.T) {
	ips := launchAll(t, "app3@m3")
	mustSkein(t, "addws", "m2", "-n", "wsm")
	t.Cleanup(func() { _, _ = skein("delws", "wsm") })
	mustSkein(t, "pubapp", "wsm", "app3.test", ips["app3"]+":80")
	mustSkein(t, "pub", "m2:wsm", "80", "--host-port", "18092")
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	var got string
	eventually(t, 30*time.Second, func() bool {
		req, _ := http.NewRequest("GET", "http://10.77.200.12:18092/", nil)
		req.Host = "app3.test"
		resp, err := client.Do(req)
		if err != nil {
			got = err.Error()
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		return got == "200 app3"
	}, "http://app3.test through m2's web server: %s, want the app on m3", got)
}

// A MariaDB instance on m3, used with its DSN from a container on m1.
func TestDatabaseAcrossMachines(t *testing.T) {
	mustSkein(t, "launch", "skein-service", "dbclient", "-s", "m1")
	t.Cleanup(func() { _, _ = skein("delete", "dbclient") })
	cmd := []string{"--nats", natsURL, "--creds", adminCreds, "--tls-ca", caFile, "adddb", "mysql", "m3", "appuser", "appdb", "-n", "dbm", "-a", "10.77.201.0/24", "-p", "-"}
	if out, err := skeinStdin("Machines-pw-7Kq\n", cmd...); err != nil {
		t.Fatalf("adddb: %v %s", err, out)
	}
	t.Cleanup(func() { _, _ = skein("deldbinstance", "dbm", "--purge") })
	dsn := strings.TrimSpace(mustSkein(t, "dbinfo", "dbm", "appdb", "--dsn"))
	u, err := urlParse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	cnf := fmt.Sprintf("[client]\nhost=%s\nport=%s\nuser=%s\npassword=%s\ndatabase=appdb\n", u.Hostname(), u.Port(), u.User.Username(), pw)
	if _, err := inMachine("m1", "sh", "-c", "incus exec dbclient -- sh -c 'cat > /root/.my.cnf' <<'EOF'\n"+cnf+"EOF"); err != nil {
		t.Fatal(err)
	}
	var out string
	eventually(t, 30*time.Second, func() bool {
		out, _ = inContainer("m1", "dbclient", "mariadb", "--batch", "--skip-column-names", "--connect-timeout=3", "-e", "SELECT DATABASE()")
		return strings.TrimSpace(out) == "appdb"
	}, "the database on m3 from m1 with its DSN: %q", out)
}
