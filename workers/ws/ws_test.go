package ws

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/containers"
	"github.com/skeinhq/skein/workers/svc"
)

const server = "s1"

// TestMissedMoveIsRepairedAndTold: an app whose container moved while its
// follower missed it (its change failed, or the agent was down) is pointed
// at the container's address by the reconciler, which tells it (ws.changed,
// cause reconcile); a web server whose apps point right is not touched.
func TestMissedMoveIsRepairedAndTold(t *testing.T) {
	conn, url := testutil.Bus(t)
	aconn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agent-" + server, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer aconn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	fake := container.NewFake("10.77.9.0/24", "skein-service")
	cstore, err := bus.OpenStore[events.Container](ctx, aconn.JS)
	if err != nil {
		t.Fatal(err)
	}
	pub := bus.NewPublisher(aconn.JS, "agent/"+server, server)
	cw := containers.New(server, fake, cstore, pub, zerolog.Nop())
	rt := workers.NewRuntime(aconn, server, zerolog.Nop())
	host := &svc.Host{Server: server, Image: "skein-service", Runtime: fake, Containers: cw, Locks: rt, Answered: rt.Answered, Log: zerolog.Nop()}
	w, err := New(ctx, Config{Deps: svc.Deps{Host: host, JS: aconn.JS, Publisher: pub}, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	cw.Register(rt)
	w.Register(rt)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = rt.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	var mu sync.Mutex
	var told []events.WSChange
	sub, err := conn.NC.Subscribe(bus.EventFilter(server, events.TypeWSChanged), func(m *nats.Msg) {
		if env, err := events.Decode(m.Data); err == nil {
			var ch events.WSChange
			if env.Payload(&ch) == nil {
				mu.Lock()
				told = append(told, ch)
				mu.Unlock()
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = conn.NC.Flush()

	client := bus.NewClient(conn, "cli")
	do := func(typ string, payload any) {
		t.Helper()
		env, err := client.NewCommand(server, typ, "", payload)
		if err != nil {
			t.Fatal(err)
		}
		cctx, c := context.WithTimeout(ctx, 30*time.Second)
		defer c()
		if _, err := client.Do(cctx, bus.Call{Envelope: env}); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
	}
	do(events.TypeLaunch, events.Launch{Name: "c1", Image: "skein-service"})
	do(events.TypeWSAdd, events.WSAdd{Name: "web1"})
	do(events.TypeAppPublish, events.AppPublish{WS: "web1", URL: "ctr.test", Target: events.Target{Kind: events.TargetContainer, Host: "c1", Port: 80}})
	addr := func() string {
		e, err := w.kind.Store.Find(ctx, bus.Key(server, "web1"))
		if err != nil || e == nil || len(e.Value.Apps) != 1 {
			t.Fatalf("web1's record: %+v, %v", e, err)
		}
		return e.Value.Apps[0].Addr
	}
	old := addr()
	if old == "" {
		t.Fatal("the app has no address")
	}

	execs := len(fake.Execs)
	svc.Reconcile(ctx, host, w.kind)
	if len(fake.Execs) != execs {
		t.Fatalf("a web server whose apps point right was touched: %v", fake.Execs[execs:])
	}

	// c1 moves; nothing follows it (the follower does not run here).
	ce, err := cstore.FindByName(ctx, "c1")
	if err != nil || ce == nil {
		t.Fatalf("c1's record: %v", err)
	}
	moved := ce.Value
	moved.IPv4 = "10.77.9.200"
	if _, err := cstore.Put(ctx, ce.Key, moved); err != nil {
		t.Fatal(err)
	}
	svc.Reconcile(ctx, host, w.kind)
	if got := addr(); got != "10.77.9.200" {
		t.Fatalf("after the reconciler the app points at %s, want 10.77.9.200 (was %s)", got, old)
	}
	conf := installed(fake, "web1", sitePath)
	if !strings.Contains(conf, "10.77.9.200") || strings.Contains(conf, old+":") {
		t.Errorf("nginx's configuration does not point at the new address:\n%s", conf)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ch := range told {
			if ch.Name == "web1" && ch.Change == "apps" && ch.Cause == "reconcile" {
				return true
			}
		}
		return false
	}, "no ws.changed event with cause reconcile: %v", lazyJSON(func() any { mu.Lock(); defer mu.Unlock(); return told }))
}

// installed is the file the last apply script put at path in container name
// (the fake runs no script: its mv lines name the staged file installed).
func installed(fake *container.Fake, name, path string) string {
	for i := len(fake.Execs) - 1; i >= 0; i-- {
		e := fake.Execs[i]
		if !strings.HasPrefix(e, name+":") && !strings.HasPrefix(e, name+" ") {
			continue
		}
		for _, line := range strings.Split(e, "\n") {
			if f := strings.Fields(line); strings.HasPrefix(line, "mv -f '/tmp/skein-stage-") && len(f) >= 4 && strings.Trim(f[3], "'") == path {
				return string(fake.Files[name+":"+strings.Trim(f[2], "'")])
			}
		}
	}
	return ""
}

// lazyJSON prints its value when a failure message is made.
type lazyJSON func() any

func (f lazyJSON) String() string { b, _ := json.Marshal(f()); return string(b) }
