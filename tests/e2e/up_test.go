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
