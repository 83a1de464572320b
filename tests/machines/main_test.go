//go:build e2e

// Package machines runs skein on the machines bed (tests/testbed/machines.sh):
// three machines m1-m3, each its own Incus daemon and network stack with
// skein installed from its Debian package and run by systemd, on a LAN of
// their own; the bus runs on the host and is reached over TLS, with
// credentials copied as the README's "Adding a server" says.
package machines

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// The bed's machines: name, LAN address, container subnet.
var machines = []struct{ name, addr, subnet string }{
	{"m1", "10.77.200.11", "10.77.201.0/24"},
	{"m2", "10.77.200.12", "10.77.202.0/24"},
	{"m3", "10.77.200.13", "10.77.203.0/24"},
}

const project = "skein-m"

// meshMode is how the machines' agents connect the container subnets:
// SKEIN_MESH=wireguard runs the suite over the WireGuard mesh.
var meshMode = func() string {
	if m := os.Getenv("SKEIN_MESH"); m != "" {
		return m
	}
	return "routed"
}()

var (
	skeinBin, dataDir, natsURL, caFile, adminCreds string
	server                                         *exec.Cmd
	serverLog                                      string
	// nettoolBin is tests/machines/nettool built for the host.
	nettoolBin string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "machines: these tests need root and the machines bed: run `go tool task e2e:machines`")
		return 1
	}
	for _, mc := range machines {
		if out, err := exec.Command("incus", "list", mc.name, "--project", project, "-f", "csv", "-c", "s").Output(); err != nil || strings.TrimSpace(string(out)) != "RUNNING" {
			fmt.Fprintf(os.Stderr, "machines: %s is not running (%v %s): run `go tool task testbed:machines`\n", mc.name, err, out)
			return 1
		}
	}
	tmp, err := os.MkdirTemp("", "skein-machines-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(tmp)
	skeinBin = filepath.Join(tmp, "skein")
	if out, err := exec.Command("go", "build", "-o", skeinBin, "../../cmd/skein").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "machines: build: %v\n%s", err, out)
		return 1
	}
	nettoolBin = filepath.Join(tmp, "nettool")
	if out, err := exec.Command("go", "build", "-o", nettoolBin, "./nettool").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "machines: build: %v\n%s", err, out)
		return 1
	}
	for _, mc := range machines {
		clearMachine(mc.name)
	}
	// The bus on the host's LAN address: beyond loopback it speaks TLS.
	dataDir = filepath.Join(tmp, "data")
	port := freePort()
	natsURL = fmt.Sprintf("tls://10.77.200.1:%d", port)
	serverLog = filepath.Join(tmp, "server.log")
	lf, _ := os.Create(serverLog)
	server = exec.Command(skeinBin, "server", "--data", dataDir, "--listen", fmt.Sprintf("10.77.200.1:%d", port), "--http", fmt.Sprintf("127.0.0.1:%d", freePort()))
	server.Stdout, server.Stderr = lf, lf
	if err := server.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "machines: skein server: %v\n", err)
		return 1
	}
	defer func() { _ = server.Process.Kill(); _, _ = server.Process.Wait() }()
	adminCreds = filepath.Join(dataDir, "auth", "admin.creds")
	caFile = filepath.Join(dataDir, "tls", "ca.pem")
	if !waitFile(adminCreds, 20*time.Second) || !waitFile(caFile, time.Second) {
		fmt.Fprintln(os.Stderr, "machines: skein server did not start")
		dump(serverLog)
		return 1
	}
	// README "Adding a server", for each machine: creds made on the server's
	// machine, copied over, the agent's unit enabled.
	for _, mc := range machines {
		if err := join(tmp, mc.name, mc.subnet); err != nil {
			fmt.Fprintf(os.Stderr, "machines: joining %s: %v\n", mc.name, err)
			return 1
		}
	}
	defer func() {
		for _, mc := range machines {
			_, _ = inMachine(mc.name, "systemctl", "disable", "--now", "skein-agent")
		}
	}()
	if err := waitUp(60 * time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "machines: %v\n", err)
		for _, mc := range machines {
			out, _ := inMachine(mc.name, "journalctl", "-u", "skein-agent", "--no-pager", "-n", "40")
			fmt.Fprintf(os.Stderr, "--- %s\n%s\n", mc.name, out)
		}
		return 1
	}
	// The images are stored on the bus from the host, which built them: the
	// machines never did, and fetch them from there.
	for _, img := range []string{"app", "service"} {
		start := time.Now()
		if out, err := skein("images", "push", img); err != nil {
			fmt.Fprintf(os.Stderr, "machines: skein images push %s: %v\n%s", img, err, out)
			return 1
		}
		fmt.Fprintf(os.Stderr, "machines: image %s stored on the bus in %.1fs\n", img, time.Since(start).Seconds())
	}
	start := time.Now()
	if err := waitReady(5 * time.Minute); err != nil {
		fmt.Fprintf(os.Stderr, "machines: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "machines: every machine has the service image from the bus after %.1fs\n", time.Since(start).Seconds())
	return m.Run()
}

// join gives machine name credentials for the bus and starts its agent, as
// an operator does: `skein creds agent NAME -o DIR` on the server's machine,
// the files copied, /etc/skein/agent.env written, `systemctl enable --now`.
func join(tmp, name, subnet string) error {
	dir := filepath.Join(tmp, "creds-"+name)
	if out, err := exec.Command(skeinBin, "creds", "agent", name, "--data", dataDir, "-o", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("skein creds: %v %s", err, out)
	}
	if _, err := inMachine(name, "install", "-d", "-m", "0700", "/var/lib/skein/creds"); err != nil {
		return err
	}
	for _, f := range []string{"agent-" + name + ".creds", "ca.pem"} {
		if out, err := exec.Command("incus", "file", "push", filepath.Join(dir, f), name+"/var/lib/skein/creds/"+f, "--project", project, "--mode", "0600").CombinedOutput(); err != nil {
			return fmt.Errorf("pushing %s: %v %s", f, err, out)
		}
	}
	env := fmt.Sprintf("SKEIN_AGENT_ARGS=\"--name %s --prepare --subnet %s --mesh %s --nats %s --creds /var/lib/skein/creds/agent-%s.creds --tls-ca /var/lib/skein/creds/ca.pem --metrics 127.0.0.1:%s\"\n", name, subnet, meshMode, natsURL, name, metricsPort)
	envFile := filepath.Join(dir, "agent.env")
	if err := os.WriteFile(envFile, []byte(env), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("incus", "file", "push", envFile, name+"/etc/skein/agent.env", "--project", project).CombinedOutput(); err != nil {
		return fmt.Errorf("pushing agent.env: %v %s", err, out)
	}
	if _, err := inMachine(name, "systemctl", "enable", "skein-agent"); err != nil {
		return err
	}
	_, err := inMachine(name, "systemctl", "restart", "skein-agent")
	return err
}

// clearMachine deletes what an earlier run left in a machine's own Incus.
func clearMachine(name string) {
	_, _ = inMachine(name, "systemctl", "stop", "skein-agent")
	out, _ := inMachine(name, "incus", "list", "-f", "csv", "-c", "n", "--all-projects")
	for _, line := range strings.Fields(out) {
		_, _ = inMachine(name, "incus", "delete", "-f", strings.Split(line, ",")[0])
	}
}

// inMachine runs a command in a machine (its host, not a container of it).
func inMachine(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "incus", append([]string{"exec", name, "--project", project, "--"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %v: %s", name, args, err, out)
	}
	return string(out), nil
}

// inContainer runs a command in container c on machine m.
func inContainer(m, c string, args ...string) (string, error) {
	return inMachine(m, append([]string{"incus", "exec", c, "--"}, args...)...)
}

// skein runs the CLI on the host as the admin.
func skein(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, skeinBin, append([]string{"--nats", natsURL, "--creds", adminCreds, "--tls-ca", caFile, "--timeout", "2m"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustSkein(t *testing.T, args ...string) string {
	t.Helper()
	out, err := skein(args...)
	if err != nil {
		t.Fatalf("skein %v: %v\n%s", args, err, out)
	}
	return out
}

type serverView struct {
	events.Heartbeat
	Status string `json:"status"`
}

func servers() (map[string]serverView, error) {
	out, err := skein("servers", "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("skein servers: %v %s", err, out)
	}
	var vs []serverView
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		return nil, err
	}
	m := map[string]serverView{}
	for _, v := range vs {
		m[v.Name] = v
	}
	return m, nil
}

// waitUp waits until every machine's agent is up, lacking nothing but the
// service image (which no test here uses yet: it is not stored on the bus).
func waitUp(total time.Duration) error {
	deadline := time.Now().Add(total)
	var last string
	for time.Now().Before(deadline) {
		vs, err := servers()
		ok := err == nil
		for _, mc := range machines {
			v := vs[mc.name]
			lacks := v.Status == "degraded"
			for _, d := range v.Degraded {
				lacks = lacks && strings.Contains(d, "image skein-service")
			}
			if v.Status != "up" && !lacks {
				ok, last = false, fmt.Sprintf("%s: %s %v", mc.name, v.Status, v.Degraded)
			}
		}
		if ok {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the machines' agents are not up after %s: %s", total, last)
}

// waitReady waits until every machine's agent is up and lacks nothing.
func waitReady(total time.Duration) error {
	deadline := time.Now().Add(total)
	var last string
	for time.Now().Before(deadline) {
		vs, err := servers()
		ok := err == nil
		for _, mc := range machines {
			if v := vs[mc.name]; v.Status != "up" {
				ok, last = false, fmt.Sprintf("%s: %s %v", mc.name, v.Status, v.Degraded)
			}
		}
		if ok {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("the machines are not ready after %s: %s", total, last)
}

func eventually(t *testing.T, total time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	testutil.Eventually(t, total, cond, msg, args...)
}

func waitFile(path string, total time.Duration) bool {
	deadline := time.Now().Add(total)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func dump(path string) {
	b, _ := os.ReadFile(path)
	fmt.Fprintf(os.Stderr, "--- %s\n%s\n", path, b)
}

// skeinStdin runs the CLI with args as given and stdin.
func skeinStdin(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, skeinBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func urlParse(s string) (*url.URL, error) { return url.Parse(s) }

// poll says whether cond became true within total, looking every 200 ms.
func poll(total time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(total)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}
