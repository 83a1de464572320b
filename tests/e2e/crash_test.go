//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

// kill -9 of an agent in the middle of a launch: after it restarts, the command
// completes once (one container, one success result) with no manual step.
func TestAgentKilledMidLaunch(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "crash1")
	nc, err := natsConnect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	id := "crash-" + events.NewID()
	var results atomic.Int32
	var last atomic.Value
	rsub, _ := nc.Subscribe(bus.ResultSubject("s1", id), func(m *nats.Msg) { results.Add(1); last.Store(m.Data) })
	defer rsub.Unsubscribe()
	creating := make(chan struct{}, 1)
	psub, _ := nc.Subscribe(bus.ProgressSubject("s1", id), func(m *nats.Msg) {
		if strings.Contains(string(m.Data), `"step":"create"`) {
			select {
			case creating <- struct{}{}:
			default:
			}
		}
	})
	defer psub.Unsubscribe()
	_ = nc.Flush()

	out := mustSkein(t, "launch", "skein-busybox", "crash1", "-s", "s1", "--id", id, "--async")
	if strings.TrimSpace(out) != id {
		t.Fatalf("--async printed %q, want the command id %s", out, id)
	}
	select {
	case <-creating:
	case <-time.After(20 * time.Second):
		t.Fatal("the agent never reported creating the container")
	}
	agents["s1"].kill9()
	killed := time.Now()
	if results.Load() != 0 {
		t.Log("the launch finished before the kill landed; the restart must still not redo it")
	}
	agents["s1"].start()

	// The redelivery comes after AckWait (10 s); the launch resumes where it stopped.
	waited := mustSkein(t, "wait", id, "-s", "s1", "-o", "json", "--timeout", "60s")
	var res events.Result
	if err := json.Unmarshal([]byte(waited), &res); err != nil || !res.OK {
		t.Fatalf("skein wait: %s (%v)", waited, err)
	}
	t.Logf("launch completed %.1fs after the agent was killed", time.Since(killed).Seconds())
	eventually(t, 10*time.Second, func() bool { return results.Load() >= 1 }, "the plain subscriber saw no result")
	c := find(list(t), "crash1")
	if c == nil || c.Status != "Running" || c.IPv4 == "" {
		t.Fatalf("crash1 after recovery: %+v", c)
	}
	if body, err := httpGet(c.IPv4); err != nil || body != "crash1" {
		t.Fatalf("crash1 does not serve: %q %v", body, err)
	}
	n := 0
	for _, name := range incusNames(t, "skein-s1") {
		if name == "crash1" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d containers named crash1, want 1", n)
	}
	// A late duplicate could only come from a delivery still in the queue: wait
	// until s1's command queue holds nothing pending or unacknowledged.
	queueIdle(t, "s1")
	if got := results.Load(); got != 1 {
		t.Fatalf("%d results published for one launch, want 1", got)
	}
}

// queueIdle waits until a server's command consumer has nothing pending, nothing
// waiting for an ack and nothing waiting for redelivery.
func queueIdle(t *testing.T, server string) {
	t.Helper()
	js := adminJS(t)
	var last string
	eventually(t, 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := js.Consumer(ctx, bus.StreamCommands, bus.AgentConsumerName(server))
		if err != nil {
			last = err.Error()
			return false
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("pending %d, ack pending %d, waiting %d", ci.NumPending, ci.NumAckPending, ci.NumWaiting)
		return ci.NumPending == 0 && ci.NumAckPending == 0
	}, "the command queue of %s is not idle: %s", server, lazyString(func() string { return last }))
}

// lazyString formats its value when printed, so a failure shows the state at failure.
type lazyString func() string

func (l lazyString) String() string { return l() }

// kill -9 of `skein server` and a restart: no acknowledged command is lost, and
// agents and waiting clients reconnect on their own.
func TestServerKilledAndRestarted(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "queued1")
	// A command acknowledged while its agent is down waits in the stream.
	agents["s2"].kill9()
	eventually(t, 15*time.Second, func() bool { return serverStatus(t)["s2"].Status == "down" }, "s2 not down")
	id := strings.TrimSpace(mustSkein(t, "launch", "skein-busybox", "queued1", "-s", "s2", "--async"))

	// A client waiting for that result across the server's crash.
	waiter := exec.Command(skeinBin, "--nats", natsURL, "--creds", adminCreds, "wait", id, "-s", "s2", "--timeout", "120s", "-o", "json")
	var wout strings.Builder
	waiter.Stdout = &wout
	werr, _ := waiter.StderrPipe()
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	if n, err := werr.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "waiting for the result of "+id) {
		t.Fatalf("skein wait did not start waiting: %q %v", buf[:n], err)
	}
	go func() { _, _ = io.Copy(io.Discard, werr) }()
	waitDone := make(chan error, 1)
	go func() { waitDone <- waiter.Wait() }()
	defer func() { _ = waiter.Process.Kill() }()

	server.kill9()
	server.start()
	if !waitPort(portOf(natsURL), 20*time.Second) {
		t.Fatal("server did not come back")
	}
	agents["s2"].start()

	select {
	case err := <-waitDone:
		var res events.Result
		if err != nil || json.Unmarshal([]byte(wout.String()), &res) != nil || !res.OK {
			t.Fatalf("waiting client: %v: %s", err, wout.String())
		}
	case <-time.After(120 * time.Second):
		t.Fatalf("the waiting client never got its result: %s", wout.String())
	}
	c := find(list(t), "queued1")
	if c == nil || c.Server != "s2" || c.Status != "Running" {
		t.Fatalf("queued1 after the server crash: %+v", c)
	}
	// s1 and s3 were never restarted: they must serve again on their own.
	for _, s := range []string{"s1", "s3"} {
		eventually(t, 20*time.Second, func() bool { _, _, err := skein("ping", s); return err == nil }, "agent %s does not answer after the server restart", s)
	}
	eventually(t, 15*time.Second, func() bool {
		st := serverStatus(t)
		return st["s1"].Status == "up" && st["s2"].Status == "up" && st["s3"].Status == "up"
	}, "not every server is up after the restart")
}

func portOf(url string) int {
	var p int
	i := strings.LastIndexByte(url, ':')
	for _, ch := range url[i+1:] {
		p = p*10 + int(ch-'0')
	}
	return p
}
