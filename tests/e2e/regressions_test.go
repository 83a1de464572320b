//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/haproxy"
	"github.com/skeinhq/skein/internal/testutil"
)

// runtimeAPI is the haproxy runtime API of a load balancer, as its agent reaches it.
func runtimeAPI(server, lb string) haproxy.Client {
	return haproxy.Client{Socket: fmt.Sprintf("/run/skein/lb/%s-%s.sock", server, lb)}
}

// activeSessions is how many connections the backends of a load balancer hold now.
func activeSessions(t *testing.T, server, lb string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	n, err := runtimeAPI(server, lb).Sessions(ctx, "be")
	if err != nil {
		t.Logf("haproxy sessions: %v", err)
	}
	return n
}

// backendAlgo is the balancing algorithm of a load balancer's backend as the
// haproxy answering its runtime API runs it ("algo" of show stat): once it is
// the new one after a reload, new connections go to the new worker.
func backendAlgo(t *testing.T, server, lb string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out, err := runtimeAPI(server, lb).Command(ctx, "show stat")
	if err != nil {
		return ""
	}
	lines := strings.Split(out, "\n")
	header := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	col := -1
	for i, h := range header {
		if h == "algo" {
			col = i
		}
	}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if col >= 0 && len(f) > col && f[0] == "be" && f[1] == "BACKEND" {
			return f[col]
		}
	}
	return ""
}

// rawCommand publishes a command as a client that skips every check would,
// and returns the agent's answer.
func rawCommand(t *testing.T, server, typ string, payload any) *events.Result {
	t.Helper()
	creds, err := os.ReadFile(adminCreds)
	if err != nil {
		t.Fatal(err)
	}
	// As the admin's CLI, its commands signed, but with payloads it would refuse.
	conn, err := bus.Connect(bus.ConnOptions{URL: natsURL, Name: "raw", Log: zerolog.Nop(), Creds: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	env := testutil.UncheckedCommand(server, typ, payload)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := bus.NewClient(conn, "raw").Do(ctx, bus.Call{Envelope: env})
	var ce *bus.CommandError
	if err != nil && !errors.As(err, &ce) {
		t.Fatalf("%s: %v", typ, err)
	}
	return res
}

// refusedRaw sends a raw command and wants the agent to refuse it saying says.
func refusedRaw(t *testing.T, server, typ string, payload any, says string) {
	t.Helper()
	res := rawCommand(t, server, typ, payload)
	if res.OK || res.Error == nil || !strings.Contains(res.Error.Message, says) {
		msg := ""
		if res.Error != nil {
			msg = res.Error.Message
		}
		t.Errorf("raw %s %+v: answered ok=%v %q, want a refusal saying %q", typ, payload, res.OK, msg, says)
	}
}

type lbJSON struct {
	Name     string `json:"name"`
	Backends []struct {
		Name string `json:"name"`
	} `json:"backends"`
}

func listLBs(t *testing.T) []lbJSON {
	t.Helper()
	var out []lbJSON
	if err := json.Unmarshal([]byte(mustSkein(t, "listlbs", "-o", "json")), &out); err != nil {
		t.Fatalf("listlbs -o json: %v", err)
	}
	return out
}

// TestConcurrentAddBackendsAllLand: 20 `skein addbackends` run at once with
// distinct names on one haproxy all land, in the record and in haproxy's
// running state (show servers state), which agree.
func TestConcurrentAddBackendsAllLand(t *testing.T) {
	dumpOnFailure(t)
	t.Cleanup(func() { _, _, _ = skein("dellb", "haconc") })
	mustSkein(t, "addlb", "haproxy", "s1", "-n", "haconc")
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, errOut, err := skein("addbackends", "haconc", fmt.Sprintf("x%d:10.77.1.%d:80", i, 100+i)); err != nil {
				errs <- fmt.Sprintf("x%d: %v %s %s", i, err, out, errOut)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("addbackends: %s", e)
	}
	var recorded []string
	for _, l := range listLBs(t) {
		if l.Name == "haconc" {
			for _, b := range l.Backends {
				recorded = append(recorded, b.Name)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	state, err := runtimeAPI("s1", "haconc").Servers(ctx, "be")
	if err != nil {
		t.Fatal(err)
	}
	var running []string
	for _, s := range state {
		running = append(running, s.Name)
	}
	sort.Strings(recorded)
	sort.Strings(running)
	if len(recorded) != 20 || fmt.Sprint(recorded) != fmt.Sprint(running) {
		t.Fatalf("listlbs records %d backends %v, haproxy runs %d %v: want the same 20", len(recorded), recorded, len(running), running)
	}
}

// TestGhostLoadBalancerIsRemoved: a load balancer whose container is deleted
// with the incus CLI leaves `skein listlbs`, and an lb.changed event says so.
func TestGhostLoadBalancerIsRemoved(t *testing.T) {
	dumpOnFailure(t)
	t.Cleanup(func() { _, _, _ = skein("dellb", "ghost1") })
	mustSkein(t, "addlb", "haproxy", "s2", "-n", "ghost1")
	nc, err := natsConnect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	changes := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(bus.EventSubject("s2", events.TypeLBChanged), changes)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if out, err := incusCmd("delete", "-f", "ghost1", "--project", "skein-s2"); err != nil {
		t.Fatalf("incus delete: %v %s", err, out)
	}
	eventually(t, 30*time.Second, func() bool {
		for _, l := range listLBs(t) {
			if l.Name == "ghost1" {
				return false
			}
		}
		return true
	}, "ghost1 still in listlbs after its container was deleted")
	t.Logf("gone from listlbs %s after incus delete", time.Since(start).Round(time.Millisecond))
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-changes:
			env, err := events.Decode(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			var ch events.LBChange
			if env.Payload(&ch) == nil && ch.Name == "ghost1" && ch.Change == "deleted" && ch.Cause == "reconcile" {
				return
			}
		case <-deadline:
			t.Fatal("no lb.changed event (deleted, cause reconcile) for ghost1")
		}
	}
}

// wiretap records every message that crosses the bus from now on.
type wiretap struct {
	mu   sync.Mutex
	msgs []*nats.Msg
	sub  *nats.Subscription
	nc   *nats.Conn
}

func tap(t *testing.T) *wiretap {
	t.Helper()
	nc, err := natsConnect()
	if err != nil {
		t.Fatal(err)
	}
	w := &wiretap{nc: nc}
	if w.sub, err = nc.Subscribe(">", func(m *nats.Msg) {
		w.mu.Lock()
		w.msgs = append(w.msgs, m)
		w.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return w
}

// secretNowhere fails the test if secret is in clear in what crossed the bus
// since w began, in any stream (commands, results, events, every KV bucket), in
// the server's and agents' logs, or in any process's arguments.
func secretNowhere(t *testing.T, w *wiretap, secret string) {
	t.Helper()
	_ = w.nc.Flush()
	w.mu.Lock()
	seen := len(w.msgs)
	for _, m := range w.msgs {
		if strings.Contains(string(m.Data), secret) {
			t.Errorf("in clear on the bus, subject %s", m.Subject)
		}
	}
	w.mu.Unlock()
	if seen == 0 {
		t.Fatal("the wiretap saw nothing: it cannot tell")
	}
	js, err := jetstream.New(w.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	streams := 0
	for name := range js.StreamNames(ctx).Name() {
		streams++
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
			if m, err := st.GetMsg(ctx, seq); err == nil && strings.Contains(string(m.Data), secret) {
				t.Errorf("in clear in stream %s, message %d (%s)", name, seq, m.Subject)
			}
		}
	}
	if streams < 5 {
		t.Fatalf("only %d streams found", streams)
	}
	logs, _ := filepath.Glob(filepath.Join(logDir, "*.log"))
	if len(logs) == 0 {
		t.Fatal("no logs to search")
	}
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil && strings.Contains(string(b), secret) {
			t.Errorf("in clear in the log %s", l)
		}
	}
	out, err := exec.Command("ps", "axww", "-o", "args").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), secret) {
		t.Error("in clear in a process's arguments")
	}
	t.Logf("searched %d messages, %d streams, %d logs and ps: the secret is in none", seen, streams, len(logs))
}
