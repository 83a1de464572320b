//go:build e2e

// Package e2e runs skein end to end: a real `skein server`, three real agents
// (s1, s2, s3) on the test bed's Incus projects and bridges, real containers,
// and the skein CLI, the incus CLI and plain NATS clients as the users.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

// servers are the test bed's servers: name → Incus bridge and project.
var servers = []struct{ name, network, project, subnet string }{
	{"s1", "skeinbr1", "skein-s1", "10.77.1."},
	{"s2", "skeinbr2", "skein-s2", "10.77.2."},
	{"s3", "skeinbr3", "skein-s3", "10.77.3."},
}

var (
	// adminCreds are the CLI's credentials; credsDir holds each agent's.
	adminCreds, credsDir string
	skeinBin             string
	natsURL              string
	dataDir              string
	logDir               string
	server               *proc
	agents               = map[string]*proc{}
	// schedulers are two job schedulers (the server runs none): one leads, one stands by.
	schedulers = map[string]*proc{}
	// schedulerCreds are theirs (skein creds scheduler).
	schedulerCreds string
	// metricsAddr is where the server and each agent serve /metrics.
	metricsAddr = map[string]string{}
	// dashboardAddr is where the server serves the dashboard.
	dashboardAddr string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: these tests need root and the test bed: run `go tool task e2e`")
		return 1
	}
	if _, err := os.Stat("/var/lib/incus/unix.socket"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: Incus is not running: run `go tool task testbed` first")
		return 1
	}
	tmp, err := os.MkdirTemp("", "skein-e2e-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(tmp)
	logDir = os.Getenv("SKEIN_E2E_LOGS")
	if logDir == "" {
		logDir = filepath.Join(tmp, "logs")
	}
	_ = os.MkdirAll(logDir, 0o755)
	skeinBin = filepath.Join(tmp, "skein")
	if out, err := exec.Command("go", "build", "-o", skeinBin, "../../cmd/skein").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build: %v\n%s", err, out)
		return 1
	}
	resetTestbed()
	defer resetTestbed()

	dataDir = filepath.Join(tmp, "data")
	port := freePort()
	natsURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	metricsAddr["server"] = fmt.Sprintf("127.0.0.1:%d", freePort())
	dashboardAddr = fmt.Sprintf("127.0.0.1:%d", freePort())
	server = startProc("server", "server", "--data", dataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--no-scheduler", "--metrics", metricsAddr["server"], "--http", dashboardAddr)
	defer server.stop()
	if !waitPort(port, 20*time.Second) {
		fmt.Fprintln(os.Stderr, "e2e: skein server did not listen")
		server.dumpLog()
		return 1
	}
	// The CLI is the admin; each agent gets its own credentials, held to its server.
	adminCreds = filepath.Join(dataDir, "auth", "admin.creds")
	credsDir = filepath.Join(tmp, "creds")
	for _, s := range servers {
		if out, err := exec.Command(skeinBin, "creds", "agent", s.name, "--data", dataDir, "-o", credsDir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: creds for %s: %v\n%s", s.name, err, out)
			return 1
		}
	}
	for _, s := range servers {
		agents[s.name] = startAgent(s.name)
	}
	if out, err := exec.Command(skeinBin, "creds", "scheduler", "--data", dataDir, "-o", credsDir).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: creds for the schedulers: %v\n%s", err, out)
		return 1
	}
	schedulerCreds = filepath.Join(credsDir, "scheduler.creds")
	for _, id := range []string{"sched-a", "sched-b"} {
		schedulers[id] = startProc(id, "scheduler", "--nats", natsURL, "--creds", schedulerCreds, "--id", id, "--log-level", "debug")
	}
	defer func() {
		for _, a := range agents {
			a.stop()
		}
		for _, s := range schedulers {
			s.stop()
		}
	}()
	if !allUp(30 * time.Second) {
		fmt.Fprintln(os.Stderr, "e2e: agents did not come up")
		for _, a := range agents {
			a.dumpLog()
		}
		return 1
	}
	return m.Run()
}

func startAgent(name string) *proc {
	for _, s := range servers {
		if s.name == name {
			if metricsAddr[name] == "" {
				metricsAddr[name] = fmt.Sprintf("127.0.0.1:%d", freePort())
			}
			return startProc("agent-"+name, "agent", "--name", name, "--nats", natsURL, "--network", s.network, "--incus-project", s.project, "--pool", "skein", "--log-level", "debug", "--state", filepath.Join(dataDir, "agent-"+name),
				"--creds", filepath.Join(credsDir, "agent-"+name+".creds"), "--metrics", metricsAddr[name])
		}
	}
	panic("unknown server " + name)
}

// natsConnect connects a plain NATS client as the admin.
func natsConnect() (*nats.Conn, error) {
	return nats.Connect(natsURL, nats.UserCredentials(adminCreds))
}

// withMAC sets the MAC of m, a command for server, as the admin's CLI does
// (agents drop a command without it).
func withMAC(t *testing.T, m *nats.Msg, server string) *nats.Msg {
	t.Helper()
	creds, err := os.ReadFile(adminCreds)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := bus.ParseKeys(creds)
	if err != nil || !keys.Signs() {
		t.Fatalf("the admin's credentials hold no key: %v", err)
	}
	mac, err := keys.CommandMAC(server, m.Subject, m.Header.Get(bus.HeaderFreshID) == "1", m.Data)
	if err != nil {
		t.Fatal(err)
	}
	m.Header.Set(bus.HeaderMAC, mac)
	return m
}

// adminJS is JetStream as the admin, closed when the test ends.
func adminJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := natsConnect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// resetTestbed deletes every container of the test projects.
func resetTestbed() {
	if out, err := exec.Command("bash", "../testbed/reset.sh").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: reset: %v\n%s", err, out)
	}
}

func allUp(total time.Duration) bool {
	deadline := time.Now().Add(total)
	for time.Now().Before(deadline) {
		var views []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		}
		out, _, err := skein("servers", "-o", "json")
		if err == nil && json.Unmarshal([]byte(out), &views) == nil {
			up := 0
			for _, v := range views {
				if v.Status == "up" {
					up++
				}
			}
			if up == len(servers) {
				return true
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// proc is a skein process the tests start, kill and restart.
type proc struct {
	name string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
	// netns, when set, is the network namespace it runs in.
	netns string
	// bin is the program (default skein).
	bin string
	// env is added to the test's environment.
	env []string
}

func startProc(name string, args ...string) *proc {
	p := &proc{name: name, args: args}
	p.start()
	return p
}

// startProcIn starts skein with args inside the network namespace ns.
func startProcIn(ns, name string, args ...string) *proc {
	p := &proc{name: name, args: args, netns: ns}
	p.start()
	return p
}

func (p *proc) start() {
	f, err := os.OpenFile(filepath.Join(logDir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(f, "=== start %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.args, " "))
	bin := skeinBin
	if p.bin != "" {
		bin = p.bin
	}
	p.cmd = exec.Command(bin, p.args...)
	if p.netns != "" {
		// ip netns exec execs skein in the namespace: signals reach skein itself.
		p.cmd = exec.Command("ip", append([]string{"netns", "exec", p.netns, skeinBin}, p.args...)...)
	}
	if len(p.env) > 0 {
		p.cmd.Env = append(os.Environ(), p.env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		panic(err)
	}
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
}

// kill9 kills the process with SIGKILL, as a crash would.
func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop ends the process cleanly.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill9()
	}
}

func (p *proc) dumpLog() {
	b, _ := os.ReadFile(filepath.Join(logDir, p.name+".log"))
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	fmt.Fprintf(os.Stderr, "--- %s log (tail)\n%s\n", p.name, b)
}

// dumpOnFailure prints the processes' logs when t fails.
func dumpOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() {
			server.dumpLog()
			for _, a := range agents {
				a.dumpLog()
			}
		}
	})
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPort(port int, total time.Duration) bool {
	deadline := time.Now().Add(total)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// skein runs the CLI against the test cluster.
func skein(args ...string) (stdout, stderr string, err error) {
	// A command waits at most 60 s for its result (the ~90 s Incus stalls are gone:
	// see the notes on internal/incus.New); the process gets a little more to print it.
	ctx, cancel := context.WithTimeout(context.Background(), 75*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, skeinBin, append([]string{"--nats", natsURL, "--creds", adminCreds, "--timeout", "60s"}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// mustSkein runs the CLI and fails the test if it fails.
func mustSkein(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := skein(args...)
	if err != nil {
		t.Fatalf("skein %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// skeinFails runs the CLI, expects it to fail and returns its error output.
func skeinFails(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := skein(args...)
	if err == nil {
		t.Fatalf("skein %s succeeded, want an error\nstdout: %s", strings.Join(args, " "), out)
	}
	return errOut
}

func list(t *testing.T) []events.Container {
	t.Helper()
	var out []events.Container
	if err := json.Unmarshal([]byte(mustSkein(t, "list", "-o", "json")), &out); err != nil {
		t.Fatalf("list -o json: %v", err)
	}
	return out
}

func find(cs []events.Container, name string) *events.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func incusCmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "incus", args...).CombinedOutput()
	return string(out), err
}

// incusNames lists the containers Incus has in a project.
func incusNames(t *testing.T, project string) []string {
	t.Helper()
	out, err := incusCmd("list", "--project", project, "-f", "csv", "-c", "n")
	if err != nil {
		t.Fatalf("incus list: %v: %s", err, out)
	}
	return strings.Fields(out)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// eventually polls cond until it holds or total passes.
func eventually(t testing.TB, total time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(total)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{total}, args...)...)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var httpClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// httpGet fetches http://ip/ from a test container.
func httpGet(ip string) (string, error) {
	resp, err := httpClient.Get("http://" + ip + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return strings.TrimSpace(b.String()), err
}

// cleanup deletes containers through skein at the end of a test, whatever happened.
func cleanup(t *testing.T, names ...string) {
	t.Cleanup(func() {
		for _, n := range names {
			_, _, _ = skein("delete", n)
		}
	})
}
