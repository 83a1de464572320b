package ws

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	r := newRig(t, nil)
	ctx, fake, w, host, cstore, do := r.ctx, r.fake, r.w, r.host, r.cstore, r.do
	mu, told := &r.mu, &r.changes
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
		for _, ch := range *told {
			if ch.Name == "web1" && ch.Change == "apps" && ch.Cause == "reconcile" {
				return true
			}
		}
		return false
	}, "no ws.changed event with cause reconcile: %v", lazyJSON(func() any { mu.Lock(); defer mu.Unlock(); return *told }))
}

// rig is a web-server worker on a fake server, its events followed.
type rig struct {
	ctx     context.Context
	fake    *container.Fake
	w       *Worker
	host    *svc.Host
	cstore  *bus.Store[events.Container]
	do      func(typ string, payload any)
	mu      sync.Mutex
	changes []events.WSChange
	apps    []events.AppEvent
	removed []events.AppEvent
}

// newRig starts the worker; wrap, when set, stands between it and JetStream.
func newRig(t *testing.T, wrap func(jetstream.JetStream) jetstream.JetStream) *rig {
	t.Helper()
	conn, url := testutil.Bus(t)
	aconn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agent-" + server, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(aconn.Close)
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{ctx: ctx, fake: container.NewFake("10.77.9.0/24", "skein-service")}
	if r.cstore, err = bus.OpenStore[events.Container](ctx, aconn.JS); err != nil {
		t.Fatal(err)
	}
	pub := bus.NewPublisher(aconn.JS, "agent/"+server, server)
	cw := containers.New(server, r.fake, r.cstore, pub, zerolog.Nop())
	rt := workers.NewRuntime(aconn, server, zerolog.Nop())
	r.host = &svc.Host{Server: server, Image: "skein-service", Runtime: r.fake, Containers: cw, Locks: rt, Answered: rt.Answered, Log: zerolog.Nop()}
	js := aconn.JS
	if wrap != nil {
		js = wrap(js)
	}
	if r.w, err = New(ctx, Config{Deps: svc.Deps{Host: r.host, JS: js, Publisher: pub}, Log: zerolog.Nop()}); err != nil {
		t.Fatal(err)
	}
	cw.Register(rt)
	r.w.Register(rt)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = rt.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	sub, err := conn.NC.Subscribe(bus.EventFilter(server, ""), func(m *nats.Msg) {
		env, err := events.Decode(m.Data)
		if err != nil {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		switch env.Type {
		case events.TypeWSChanged:
			var ch events.WSChange
			if env.Payload(&ch) == nil {
				r.changes = append(r.changes, ch)
			}
		case events.TypeAppPublished:
			var a events.AppEvent
			if env.Payload(&a) == nil {
				r.apps = append(r.apps, a)
			}
		case events.TypeAppRemoved:
			var a events.AppEvent
			if env.Payload(&a) == nil {
				r.removed = append(r.removed, a)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	_ = conn.NC.Flush()
	client := bus.NewClient(conn, "cli")
	r.do = func(typ string, payload any) {
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
	return r
}

// An app published by an attempt whose record landed but whose answer was
// lost (CI's soak: "writing ws: context deadline exceeded", then done by the
// next attempt) is still told: app.published, once the command succeeds.
func TestPublishWhoseRecordLandedIsTold(t *testing.T) {
	armed := &atomic.Bool{}
	r := newRig(t, func(js jetstream.JetStream) jetstream.JetStream { return testutil.LostAck(js, "skein_ws", armed) })
	r.do(events.TypeLaunch, events.Launch{Name: "c1", Image: "skein-service"})
	r.do(events.TypeWSAdd, events.WSAdd{Name: "web1"})
	armed.Store(true)
	r.do(events.TypeAppPublish, events.AppPublish{WS: "web1", URL: "lost.test", Target: events.Target{Kind: events.TargetContainer, Host: "c1", Port: 80}})
	if armed.Load() {
		t.Fatal("the publication's record write never lost its acknowledgement: the test did not test")
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, a := range r.apps {
			if a.URL == "lost.test" {
				return true
			}
		}
		return false
	}, "no app.published for lost.test: %v", lazyJSON(func() any { r.mu.Lock(); defer r.mu.Unlock(); return r.apps }))
}

// TestUnpublishWhoseRemovalLandedSucceeds (issue 24's open end, found by
// the soak on a NATS cluster and fixed in 4ce039d): a delapp whose first
// attempt removed the app but heard an error (the record's write
// acknowledgement lost) is answered by the next attempt as the first
// would have been, a success with app.removed told, not "does not
// publish lost.test".
func TestUnpublishWhoseRemovalLandedSucceeds(t *testing.T) {
	armed := &atomic.Bool{}
	r := newRig(t, func(js jetstream.JetStream) jetstream.JetStream { return testutil.LostAck(js, "skein_ws", armed) })
	r.do(events.TypeLaunch, events.Launch{Name: "c1", Image: "skein-service"})
	r.do(events.TypeWSAdd, events.WSAdd{Name: "web1"})
	r.do(events.TypeAppPublish, events.AppPublish{WS: "web1", URL: "lost.test", Target: events.Target{Kind: events.TargetContainer, Host: "c1", Port: 80}})
	armed.Store(true)
	r.do(events.TypeAppDelete, events.AppRef{WS: "web1", URL: "lost.test"})
	if armed.Load() {
		t.Fatal("the removal's record write never lost its acknowledgement: the test did not test")
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.removed) > 0 && r.removed[0].URL == "lost.test"
	}, "no app.removed for lost.test")
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
