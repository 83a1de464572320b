//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

// denials collects the permission errors a client is told of.
type denials struct {
	mu   sync.Mutex
	errs []string
}

func (d *denials) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	d.mu.Lock()
	d.errs = append(d.errs, err.Error())
	d.mu.Unlock()
}

// saw reports whether a permission violation for subject was told.
func (d *denials) saw(subject string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.errs {
		if strings.Contains(e, "Permissions Violation") && strings.Contains(e, `"`+subject+`"`) {
			return true
		}
	}
	return false
}

// TestBusIsAuthenticated: anonymous clients are refused; agent s2's
// credentials cannot act for s1; observer credentials read events and publish
// nothing.
func TestBusIsAuthenticated(t *testing.T) {
	dumpOnFailure(t)
	if _, err := nats.Connect(natsURL); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("an anonymous client connected: %v", err)
	}

	d := &denials{}
	s2, err := nats.Connect(natsURL, nats.UserCredentials(filepath.Join(credsDir, "agent-s2.creds")), nats.CustomInboxPrefix("_INBOX.agent-s2"), nats.ErrorHandler(d.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	js, err := jetstream.New(s2)
	if err != nil {
		t.Fatal(err)
	}
	before := mustSkein(t, "servers", "-o", "json")
	attempts := []struct{ what, subject string }{
		{"a command for s1", bus.CommandSubject("s1", events.TypeDelete)},
		{"a result for s1", bus.ResultSubject("s1", "forged")},
		{"an event about s1", bus.EventSubject("s1", events.TypeContainerDeleted)},
		{"s1's heartbeat", "$KV.skein_servers.s1"},
		{"a container record of s1", "$KV.skein_containers.s1.forged"},
		{"a load balancer record of s1", "$KV.skein_lbs.s1.forged"},
	}
	for _, a := range attempts {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.Publish(ctx, a.subject, []byte(`{"name":"forged"}`))
		cancel()
		if err == nil {
			t.Errorf("agent s2 published %s", a.what)
		}
	}
	_ = s2.Flush()
	eventually(t, 5*time.Second, func() bool {
		for _, a := range attempts {
			if !d.saw(a.subject) {
				return false
			}
		}
		return true
	}, "not every attempt was refused as a permissions violation: %v", lazyString(func() string { d.mu.Lock(); defer d.mu.Unlock(); return strings.Join(d.errs, "; ") }))
	var views []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(mustSkein(t, "servers", "-o", "json")), &views); err != nil || len(views) != 3 {
		t.Fatalf("servers after the attempts: %v %v (before: %s)", views, err, before)
	}
	for _, v := range views {
		if v.Status != "up" {
			t.Errorf("server %s is %s after s2's attempts", v.Name, v.Status)
		}
	}
	if strings.Contains(mustSkein(t, "list", "-o", "json"), "forged") || strings.Contains(mustSkein(t, "listlbs", "-o", "json"), "forged") {
		t.Error("a forged record of s1 is listed")
	}

	// The observer sees a container start and publishes nothing.
	obsDir := t.TempDir()
	if out, err := exec.Command(skeinBin, "creds", "observer", "--data", dataDir, "-o", obsDir).CombinedOutput(); err != nil {
		t.Fatalf("creds observer: %v %s", err, out)
	}
	od := &denials{}
	obs, err := nats.Connect(natsURL, nats.UserCredentials(filepath.Join(obsDir, "observer.creds")), nats.ErrorHandler(od.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	started := make(chan string, 16)
	sub, err := obs.Subscribe("skein.event.>", func(m *nats.Msg) {
		if strings.HasSuffix(m.Subject, "."+events.TypeContainerStarted) {
			started <- string(m.Data)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = obs.Flush()
	cleanup(t, "obs1")
	mustSkein(t, "launch", "skein-busybox", "obs1", "-s", "s3")
	deadline := time.After(20 * time.Second)
	for seen := false; !seen; {
		select {
		case data := <-started:
			seen = strings.Contains(data, `"obs1"`)
		case <-deadline:
			t.Fatal("the observer saw no container.started for obs1")
		}
	}
	for _, subject := range []string{bus.EventSubject("s3", events.TypeContainerStarted), bus.CommandSubject("s3", events.TypeStop), "$KV.skein_containers.s3.obs1"} {
		_ = obs.Publish(subject, []byte("{}"))
	}
	_ = obs.Flush()
	eventually(t, 5*time.Second, func() bool {
		return od.saw(bus.EventSubject("s3", events.TypeContainerStarted)) && od.saw(bus.CommandSubject("s3", events.TypeStop)) && od.saw("$KV.skein_containers.s3.obs1")
	}, "the observer's publishes were not refused")
	if c := find(list(t), "obs1"); c == nil || c.Status != "Running" {
		t.Errorf("obs1 after the observer's attempts: %+v", c)
	}
}

// hostAddress is an address of this machine beyond loopback: the test bed's
// s1 bridge (traffic stays on the machine).
const hostAddress = "10.77.1.1"

// TestBusOverTLS: beyond loopback the server speaks TLS with a CA of its own;
// an agent connects with that CA and its credentials and does real work; the
// same server refuses to start without TLS; a revoked agent is refused on its
// next connect while the others keep working.
func TestBusOverTLS(t *testing.T) {
	dumpOnFailure(t)
	data := t.TempDir()
	listen := fmt.Sprintf("%s:%d", hostAddress, freePort())

	out, err := exec.Command(skeinBin, "server", "--data", data, "--listen", listen, "--no-tls").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "beyond loopback the bus must speak TLS") {
		t.Fatalf("a server on %s without TLS: %v %s", listen, err, out)
	}

	srv := startProc("tls-server", "server", "--data", data, "--listen", listen, "--log-level", "debug")
	defer srv.stop()
	ca := filepath.Join(data, "tls", "ca.pem")
	admin := filepath.Join(data, "auth", "admin.creds")
	eventually(t, 20*time.Second, func() bool {
		_, err1 := os.Stat(ca)
		_, err2 := os.Stat(admin)
		return err1 == nil && err2 == nil
	}, "the server made no CA or admin credentials")
	url := "tls://" + listen
	cli := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 75*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, skeinBin, append([]string{"--nats", url, "--creds", admin, "--tls-ca", ca, "--timeout", "60s"}, args...)...).CombinedOutput()
		return string(out), err
	}
	// Without the CA the server's certificate is not trusted.
	if out, err := exec.Command(skeinBin, "--nats", url, "--creds", admin, "servers").CombinedOutput(); err == nil {
		t.Fatalf("a client without the CA connected: %s", out)
	}
	credsOut := t.TempDir()
	if out, err := exec.Command(skeinBin, "creds", "agent", "tlsagent", "--data", data, "-o", credsOut).CombinedOutput(); err != nil || !strings.Contains(string(out), "ca.pem") {
		t.Fatalf("creds agent: %v %s", err, out)
	}
	// It watches s3's project, whose containers the tests clean up.
	agent := startProc("tls-agent", "agent", "--name", "tlsagent", "--nats", url, "--creds", filepath.Join(credsOut, "agent-tlsagent.creds"),
		"--tls-ca", filepath.Join(credsOut, "ca.pem"), "--network", "skeinbr3", "--incus-project", "skein-s3", "--pool", "skein", "--state", filepath.Join(data, "agent"))
	defer agent.stop()
	eventually(t, 30*time.Second, func() bool { out, err := cli("ping", "tlsagent"); return err == nil && strings.Contains(out, "pong") }, "the agent does not answer over TLS")
	if out, err := cli("launch", "skein-busybox", "tls1", "-s", "tlsagent"); err != nil || !strings.Contains(out, "launched tls1 on tlsagent") {
		t.Fatalf("launch over TLS: %v %s", err, out)
	}
	if out, err := cli("delete", "tls1"); err != nil || !strings.Contains(out, "deleted tls1") {
		t.Fatalf("delete over TLS: %v %s", err, out)
	}

	// Revoked: refused from its next connect; the admin keeps working.
	if out, err := exec.Command(skeinBin, "creds", "revoke", "agent", "tlsagent", "--data", data).CombinedOutput(); err != nil || !strings.Contains(string(out), "revoked 1") {
		t.Fatalf("revoke: %v %s", err, out)
	}
	eventually(t, 20*time.Second, func() bool {
		out, _ := cli("servers", "-o", "json")
		return strings.Contains(out, `"status": "down"`)
	}, "the revoked agent still beats")
	b, _ := os.ReadFile(filepath.Join(logDir, "tls-agent.log"))
	if !strings.Contains(strings.ToLower(string(b)), "authorization") && !strings.Contains(strings.ToLower(string(b)), "revoked") {
		t.Errorf("the revoked agent's log does not say it was refused:\n%s", tail(string(b), 1500))
	}
	if out, err := cli("servers", "-o", "json"); err != nil || !strings.Contains(out, "tlsagent") {
		t.Fatalf("the admin stopped working after the revocation: %v %s", err, out)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
