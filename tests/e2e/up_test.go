//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `skein up` runs a server and one agent in one process: the single-machine default.
func TestUpRunsServerAndAgent(t *testing.T) {
	dumpOnFailure(t)
	port := freePort()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	logf, err := os.Create(filepath.Join(logDir, "up.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// Its own bus; it watches s3's project, whose containers it must leave alone.
	data := t.TempDir()
	up := exec.Command(skeinBin, "up", "--data", data, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--name", "solo", "--network", "skeinbr3", "--incus-project", "skein-s3", "--pool", "skein")
	up.Stdout, up.Stderr = logf, logf
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = up.Process.Signal(syscall.SIGTERM); _ = up.Wait() }()

	run := func(args ...string) (string, error) {
		// The admin's credentials that skein up wrote in its data directory.
		out, err := exec.Command(skeinBin, append([]string{"--nats", url, "--creds", filepath.Join(data, "auth", "admin.creds")}, args...)...).CombinedOutput()
		return string(out), err
	}
	eventually(t, 20*time.Second, func() bool {
		out, err := run("servers", "-o", "json")
		var views []serverView
		return err == nil && json.Unmarshal([]byte(out), &views) == nil && len(views) == 1 && views[0].Name == "solo" && views[0].Status == "up" && views[0].Subnet == "10.77.3.0/24"
	}, "skein up did not register its agent")
	out, err := run("ping", "solo")
	if err != nil || !strings.Contains(out, "pong from solo") {
		t.Fatalf("ping solo: %s %v", out, err)
	}
	// Stopping it stops its bus too: one process, one lifetime.
	_ = up.Process.Signal(syscall.SIGTERM)
	_ = up.Wait()
	if _, err := run("servers"); err == nil {
		t.Fatal("the bus of skein up still answers after it stopped")
	}
}

// upRun is one `skein up` on its own bus, logging to a file of its own.
type upRun struct {
	cmd  *exec.Cmd
	log  string
	url  string
	data string
}

func startUp(t *testing.T, data string, port int, label string, args ...string) *upRun {
	t.Helper()
	u := &upRun{log: filepath.Join(logDir, "up-"+label+".log"), url: fmt.Sprintf("nats://127.0.0.1:%d", port), data: data}
	logf, err := os.Create(u.log)
	if err != nil {
		t.Fatal(err)
	}
	u.cmd = exec.Command(skeinBin, append([]string{"up", "--data", data, "--listen", fmt.Sprintf("127.0.0.1:%d", port)}, args...)...)
	u.cmd.Stdout, u.cmd.Stderr = logf, logf
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	t.Cleanup(u.stop)
	return u
}

func (u *upRun) stop() {
	if u.cmd.ProcessState == nil {
		_ = u.cmd.Process.Signal(syscall.SIGTERM)
		_ = u.cmd.Wait()
	}
}

func (u *upRun) run(args ...string) (string, error) {
	out, err := exec.Command(skeinBin, append([]string{"--nats", u.url, "--creds", filepath.Join(u.data, "auth", "admin.creds"), "--timeout", "60s"}, args...)...).CombinedOutput()
	return string(out), err
}

func (u *upRun) logText() string {
	b, _ := os.ReadFile(u.log)
	return string(b)
}

// server waits for the one server of this bus to report, and returns it.
func (u *upRun) server(t *testing.T, name string, ok func(serverView) bool) serverView {
	t.Helper()
	var last serverView
	eventually(t, 30*time.Second, func() bool {
		out, err := u.run("servers", "-o", "json")
		var views []serverView
		if err != nil || json.Unmarshal([]byte(out), &views) != nil || len(views) != 1 || views[0].Name != name {
			return false
		}
		last = views[0]
		return ok(last)
	}, "server %s never reported as wanted; last: %+v", name, lazyString(func() string { return fmt.Sprintf("%+v", last) }))
	return last
}

// On Incus with a network, pool and project it has never seen, `skein up`
// without --prepare says what lacks and refuses a launch with the same words;
// with --prepare (its default) it makes them and a container launched right
// after answers HTTP; a second `skein up` changes nothing.
func TestUpPreparesItsServer(t *testing.T) {
	dumpOnFailure(t)
	id := fmt.Sprintf("%04x", time.Now().UnixNano()&0xffff)
	netName, pool, project := "skp"+id, "skp-"+id, "skp-"+id
	t.Cleanup(func() {
		_, _ = incusCmd("delete", "--force", "u1", "--project", project)
		_, _ = incusCmd("project", "delete", project)
		_, _ = incusCmd("network", "delete", netName)
		_, _ = incusCmd("storage", "delete", pool)
		_ = os.Remove("/etc/skein/dns/" + netName + ".servers")
	})
	data := t.TempDir()
	port := freePort()
	flags := []string{"--name", "fresh", "--network", netName, "--incus-project", project, "--pool", pool, "--supernet", "10.77.0.0/16"}

	want := "network " + netName + " not found: run skein up --prepare or pass --network"
	t.Run("without --prepare: degraded, and a launch is refused with the fix", func(t *testing.T) {
		u := startUp(t, data, port, "unprepared", append(flags, "--prepare=false")...)
		v := u.server(t, "fresh", func(v serverView) bool { return v.Status == "degraded" })
		if !contains(v.Degraded, want) {
			t.Errorf("degraded %q does not say %q", v.Degraded, want)
		}
		if out, _ := u.run("servers"); !strings.Contains(out, "degraded: ") || !strings.Contains(out, want) {
			t.Errorf("skein servers:\n%s", out)
		}
		out, err := u.run("launch", "skein-busybox", "u1", "-s", "fresh")
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("launch on the unprepared server: %v\n%s", err, out)
		}
		if _, err := incusCmd("network", "show", netName); err == nil {
			t.Error("the network exists without --prepare")
		}
		u.stop()
	})

	var shown string
	t.Run("skein up prepares: pool, NAT-free bridge, project; a container answers HTTP", func(t *testing.T) {
		u := startUp(t, data, port, "prepare", flags...)
		v := u.server(t, "fresh", func(v serverView) bool { return v.Status == "up" && v.Subnet != "" })
		if !strings.HasPrefix(v.Subnet, "10.77.") {
			t.Errorf("subnet %s is not under the supernet", v.Subnet)
		}
		log := u.logText()
		for _, made := range []string{"created=\"storage pool " + pool, "network " + netName, "project " + project} {
			if !strings.Contains(log, made) {
				t.Errorf("the log does not say it created %s", made)
			}
		}
		cfg, err := incusCmd("network", "get", netName, "ipv4.nat")
		if err != nil || strings.TrimSpace(cfg) != "false" {
			t.Errorf("ipv4.nat of %s: %q %v", netName, cfg, err)
		}
		if out, err := u.run("launch", "skein-busybox", "u1", "-s", "fresh"); err != nil {
			t.Fatalf("launch right after: %v\n%s", err, out)
		}
		out, err := u.run("list", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var cs []struct {
			Name string `json:"name"`
			IPv4 string `json:"ipv4"`
		}
		if err := json.Unmarshal([]byte(out), &cs); err != nil || len(cs) != 1 || cs[0].IPv4 == "" {
			t.Fatalf("list: %v %s", err, out)
		}
		eventually(t, 10*time.Second, func() bool { body, err := httpGet(cs[0].IPv4); return err == nil && body != "" }, "u1 at %s does not answer HTTP", cs[0].IPv4)
		shown, _ = incusCmd("network", "show", netName)
		u.stop()
	})

	t.Run("a second skein up changes nothing", func(t *testing.T) {
		u := startUp(t, data, port, "again", flags...)
		u.server(t, "fresh", func(v serverView) bool { return v.Status == "up" && v.Subnet != "" })
		eventually(t, 10*time.Second, func() bool { return strings.Contains(u.logText(), "nothing to create") }, "the second run does not say it had nothing to create:\n%s", lazyString(u.logText))
		if strings.Contains(u.logText(), "created=") {
			t.Errorf("the second run created something:\n%s", u.logText())
		}
		if now, _ := incusCmd("network", "show", netName); now != shown {
			t.Errorf("the network changed:\n%s\n---\n%s", shown, now)
		}
		u.stop()
	})
}
