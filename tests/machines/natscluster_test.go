//go:build e2e

package machines

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/tests/soak"
)

// machineNATS is a three-node NATS cluster on the machines, as the README's
// recipe makes one: `skein nats` from the package on m1-m3 (a systemd unit
// each, enabled), clients and routes over the LAN with TLS and the host's
// authority. m3's JetStream store is a 2 GiB tmpfs, so that it can be
// filled; each node announces 100 GB (JetStream places a stream only on
// nodes with room for its limit, 1 GiB, the sum of the streams' limits).
type machineNATS struct {
	urls []string
	ca   string
}

const natsStore = "/var/lib/skein/nats"

// natsConf is node i's configuration (i from 0).
func natsConf(i int) string {
	var routes []string
	for j, mc := range machines {
		if j != i {
			routes = append(routes, "tls://"+mc.addr+":6222")
		}
	}
	return fmt.Sprintf(`server_name: n%d
listen: %s:4222
http: 127.0.0.1:8222
tls { cert_file: "/etc/skein/nats/server.pem", key_file: "/etc/skein/nats/server.key" }
jetstream { store_dir: %q, max_file_store: 100G }
cluster {
  name: skein, listen: %s:6222, routes: [%s]
  tls { cert_file: "/etc/skein/nats/server.pem", key_file: "/etc/skein/nats/server.key", ca_file: "/etc/skein/nats/ca.pem" }
}
include auth.conf
`, i+1, machines[i].addr, natsStore, machines[i].addr, strings.Join(routes, ", "))
}

// natsUnit runs the node; m3's store is mounted as a small tmpfs first.
func natsUnit(i int) string {
	pre := ""
	if i == 2 {
		pre = "ExecStartPre=/bin/sh -c 'mkdir -p " + natsStore + "; mountpoint -q " + natsStore + " || mount -t tmpfs -o size=2G tmpfs " + natsStore + "'\n"
	}
	return "[Unit]\nDescription=skein's NATS node (test)\nAfter=network-online.target\n[Service]\n" + pre +
		"ExecStart=/usr/bin/skein nats -c /etc/skein/nats/nats.conf\nRestart=no\n[Install]\nWantedBy=multi-user.target\n"
}

// startMachineNATS makes the cluster, its streams (skein init --replicas 3)
// and the images on it, and moves the machines' agents onto it; cleanup
// moves them back to the host's bus and removes the nodes.
func startMachineNATS(t *testing.T) *machineNATS {
	t.Helper()
	dir := t.TempDir()
	auth, err := exec.Command(skeinBin, "creds", "nats-config", "--data", dataDir).Output()
	if err != nil {
		t.Fatalf("creds nats-config: %v", err)
	}
	tlsDir := filepath.Join(dir, "tls")
	c := &machineNATS{ca: bus.CAFile(tlsDir)}
	files := func(i int) map[string][]byte {
		cert, _ := os.ReadFile(filepath.Join(tlsDir, "server-"+machines[i].addr+".pem"))
		key, _ := os.ReadFile(filepath.Join(tlsDir, "server-"+machines[i].addr+".key"))
		ca, _ := os.ReadFile(c.ca)
		return map[string][]byte{"/etc/skein/nats/nats.conf": []byte(natsConf(i)), "/etc/skein/nats/auth.conf": auth,
			"/etc/skein/nats/server.pem": cert, "/etc/skein/nats/server.key": key, "/etc/skein/nats/ca.pem": ca,
			"/etc/systemd/system/skein-nats.service": []byte(natsUnit(i))}
	}
	t.Cleanup(func() {
		for _, mc := range machines {
			_, _ = inMachine(mc.name, "sh", "-c", "systemctl disable --now skein-nats; umount "+natsStore+" 2>/dev/null; rm -rf /etc/skein/nats "+natsStore+" /etc/systemd/system/skein-nats.service; systemctl daemon-reload")
		}
	})
	for i, mc := range machines {
		if _, _, err := bus.ServerTLS(tlsDir, mc.addr, "", "", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := inMachine(mc.name, "install", "-d", "-m", "0700", "/etc/skein/nats"); err != nil {
			t.Fatal(err)
		}
		for path, data := range files(i) {
			local := filepath.Join(dir, filepath.Base(path)+fmt.Sprint(i))
			if err := os.WriteFile(local, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("incus", "file", "push", local, mc.name+path, "--project", project, "--mode", "0600").CombinedOutput(); err != nil {
				t.Fatalf("pushing %s to %s: %v %s", path, mc.name, err, out)
			}
		}
		if out, err := inMachine(mc.name, "sh", "-c", "chmod 0644 /etc/systemd/system/skein-nats.service; systemctl daemon-reload; systemctl enable --now skein-nats"); err != nil {
			t.Fatalf("starting %s's NATS node: %v %s", mc.name, err, out)
		}
		c.urls = append(c.urls, "tls://"+mc.addr+":4222")
	}
	for _, mc := range machines {
		if !poll(30*time.Second, func() bool {
			conn, err := net.DialTimeout("tcp", mc.addr+":4222", time.Second)
			if err == nil {
				conn.Close()
			}
			return err == nil
		}) {
			out, _ := inMachine(mc.name, "journalctl", "-u", "skein-nats", "--no-pager", "-n", "30")
			t.Fatalf("%s's NATS node does not listen:\n%s", mc.name, out)
		}
	}
	// The agents onto the cluster, and back at the end: registered before the
	// CLI's switch below, so that it runs after the switch back.
	t.Cleanup(func() {
		for _, mc := range machines {
			_, _ = inMachine(mc.name, "sh", "-c", "mv -f /etc/skein/agent.env.host /etc/skein/agent.env && systemctl restart skein-agent")
		}
		if err := waitUp(90 * time.Second); err != nil {
			t.Errorf("the agents are not back on the host's bus: %v", err)
		}
	})
	// From here the tests' CLI (skein, servers, upAgain, the soak's bed) speaks to the cluster.
	hostURL, hostCA := natsURL, caFile
	natsURL, caFile = strings.Join(c.urls, ","), c.ca
	t.Cleanup(func() { natsURL, caFile = hostURL, hostCA })
	eventually(t, 60*time.Second, func() bool {
		out, err := skein("init", "--replicas", "3", "--data", dataDir)
		return err == nil && strings.Contains(out, "replicas 3")
	}, "skein init --replicas 3 on the machines' cluster does not succeed")
	for _, img := range []string{"app", "service"} {
		if out, err := skein("images", "push", img); err != nil {
			t.Fatalf("skein images push %s onto the cluster: %v %s", img, err, out)
		}
	}
	ca, _ := os.ReadFile(c.ca)
	for _, mc := range machines {
		local := filepath.Join(dir, "nats-ca.pem")
		_ = os.WriteFile(local, ca, 0o600)
		if out, err := exec.Command("incus", "file", "push", local, mc.name+"/var/lib/skein/creds/nats-ca.pem", "--project", project, "--mode", "0600").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		script := fmt.Sprintf("cp /etc/skein/agent.env /etc/skein/agent.env.host && sed -i 's|--nats [^ ]*|--nats %s|; s|--tls-ca [^ ]*|--tls-ca /var/lib/skein/creds/nats-ca.pem|' /etc/skein/agent.env && systemctl restart skein-agent", strings.Join(c.urls, ","))
		if out, err := inMachine(mc.name, "sh", "-c", script); err != nil {
			t.Fatalf("moving %s's agent onto the cluster: %v %s", mc.name, err, out)
		}
	}
	sched, err := c.startScheduler(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sched.Process.Kill(); _, _ = sched.Process.Wait() })
	eventually(t, 3*time.Minute, func() bool {
		out, err := skein("servers", "-o", "json")
		return err == nil && strings.Count(out, `"status": "up"`) == len(machines)
	}, "the machines' agents are not up on the cluster: %s", func() string { out, _ := skein("servers"); return out }())
	return c
}

// startScheduler runs a scheduler on the host against the cluster.
func (c *machineNATS) startScheduler(dir string) (*exec.Cmd, error) {
	out, err := exec.Command(skeinBin, "creds", "scheduler", "--data", dataDir, "-o", dir).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("creds scheduler: %v %s", err, out)
	}
	lf, err := os.Create(filepath.Join(dir, "scheduler.log"))
	if err != nil {
		return nil, err
	}
	s := exec.Command(skeinBin, "scheduler", "--nats", strings.Join(c.urls, ","), "--tls-ca", c.ca, "--creds", filepath.Join(dir, "scheduler.creds"), "--id", "machines-sched")
	s.Stdout, s.Stderr = lf, lf
	return s, s.Start()
}

// nodeHealthy says whether machine m's node has JetStream current (/healthz).
func nodeHealthy(m string) bool {
	_, err := inMachine(m, "curl", "-sf", "-m", "2", "http://127.0.0.1:8222/healthz")
	return err == nil
}

// natsFaults are the faults of the machines' NATS nodes: one killed -9,
// one cut from the LAN on its ports only, m3's store filled.
func natsFaults() []soak.Fault {
	back := func(m string) error {
		if poll(90*time.Second, func() bool { return nodeHealthy(m) }) {
			return nil
		}
		return fmt.Errorf("%s's NATS node is not current 90 s after the fault", m)
	}
	return []soak.Fault{
		{Kind: "kill-nats", BusLoss: true, Do: func(r *rand.Rand) (string, error) {
			m := machines[r.IntN(len(machines))].name
			if _, err := inMachine(m, "systemctl", "kill", "-s", "KILL", "skein-nats"); err != nil {
				return "", err
			}
			d := time.Duration(1000+r.IntN(2000)) * time.Millisecond
			time.Sleep(d)
			if _, err := inMachine(m, "systemctl", "start", "skein-nats"); err != nil {
				return "", err
			}
			return fmt.Sprintf("kill -9 of %s's NATS node, started after %s", m, d), back(m)
		}},
		{Kind: "cut-nats", BusLoss: true, Do: func(r *rand.Rand) (string, error) {
			i := r.IntN(len(machines))
			m, addr := machines[i].name, machines[i].addr
			d := time.Duration(10+r.IntN(11)) * time.Second
			rules := fmt.Sprintf("table netdev skein_soak_nats {\n chain in { type filter hook ingress device \"skein%s\" priority 0; ip saddr %s tcp sport { 4222, 6222 } drop; ip saddr %s tcp dport 6222 drop; }\n chain out { type filter hook egress device \"skein%s\" priority 0; ip daddr %s tcp dport { 4222, 6222 } drop; ip daddr %s tcp sport 6222 drop; }\n}\n", m, addr, addr, m, addr, addr)
			if err := nft(rules); err != nil {
				return "", err
			}
			time.Sleep(d)
			if err := nft("delete table netdev skein_soak_nats\n"); err != nil {
				return "", err
			}
			return fmt.Sprintf("%s's NATS node cut from the LAN (its ports only) for %s", m, d), back(m)
		}},
		{Kind: "disk-full", Do: func(r *rand.Rand) (string, error) {
			d := time.Duration(10+r.IntN(11)) * time.Second
			if out, err := inMachine("m3", "sh", "-c", "fallocate -l $(df --output=avail -B1 "+natsStore+" | tail -1) "+natsStore+"/fill || true; df -h "+natsStore+" | tail -1"); err != nil {
				return "", fmt.Errorf("filling m3's store: %v %s", err, out)
			}
			time.Sleep(d)
			if _, err := inMachine("m3", "rm", "-f", natsStore+"/fill"); err != nil {
				return "", err
			}
			what := fmt.Sprintf("m3's NATS store full for %s", d)
			// A node that gave JetStream up on a full disk is restarted, as an operator would.
			if !poll(20*time.Second, func() bool { return nodeHealthy("m3") }) {
				what += "; its node restarted after"
				if _, err := inMachine("m3", "systemctl", "restart", "skein-nats"); err != nil {
					return what, err
				}
			}
			return what, back("m3")
		}},
	}
}

// The soak on the machines with the bus a NATS cluster on them: the
// machines' faults (the bus's server on the host is not in use) and the
// NATS nodes': killed -9, cut, a store full; the floating IP checked as in
// TestSoakOnMachines.
func TestSoakOnMachinesNATSCluster(t *testing.T) {
	n, seed := soak.Size()
	startMachineNATS(t)
	parts := &partitions{}
	bed := machinesBed(parts)
	bed.Name, bed.Tag = "machines bed, NATS on the machines", "machines-nats"
	var faults []soak.Fault
	for _, f := range bed.Faults {
		if f.Kind != "kill-bus" {
			faults = append(faults, f)
		}
	}
	bed.Faults = append(faults, natsFaults()...)
	checkVIP := watchVIP(t, parts)
	v := soak.Run(t, bed, soak.Options{N: n, Seed: seed})
	checkVIP()
	for _, x := range v {
		t.Error(x)
	}
}
