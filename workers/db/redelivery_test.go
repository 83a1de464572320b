package db

import (
	"context"
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
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/containers"
	"github.com/skeinhq/skein/workers/svc"
)

// TestDropWhoseRemovalLandedSucceeds (issue 24's open end, found by the
// soak on a NATS cluster and fixed in 4ce039d): a deldb whose first attempt
// dropped the database but heard an error (the record's write
// acknowledgement lost) is answered by the next attempt as the first would
// have been, a success with db.changed told, not "instance db1 has no
// database d1".
func TestDropWhoseRemovalLandedSucceeds(t *testing.T) {
	r := newDBRig(t)
	r.armed.Store(true)
	r.do(t, events.TypeDBDrop, events.DBDrop{Instance: "db1", DB: "d1"})
	if r.armed.Load() {
		t.Fatal("the drop's record write never lost its acknowledgement: the test did not test")
	}
	r.toldChange(t, "d1", "database-removed")
	got, err := r.w.kind.Store.Get(r.ctx, bus.Key(server, "db1"))
	if err != nil || len(got.Value.Databases) != 0 {
		t.Fatalf("db1 after the drop: %+v %v", got.Value.Databases, err)
	}
}

// TestCreateWhoseDatabaseLandedIsTold (the soak's missed-event class,
// found by review after CI's lb.changed): an adddb --on whose first
// attempt made the database but heard an error (the record's write
// acknowledgement lost) is told by the next attempt, which finds the
// database made: db.changed database-added, not silence.
func TestCreateWhoseDatabaseLandedIsTold(t *testing.T) {
	r := newDBRig(t)
	r.armed.Store(true)
	r.do(t, events.TypeDBCreate, events.DBCreate{Instance: "db1", User: "u1", DB: "d2"})
	if r.armed.Load() {
		t.Fatal("the creation's record write never lost its acknowledgement: the test did not test")
	}
	r.toldChange(t, "d2", "database-added")
}

const server = "s1"

// dbRig is the database worker on a fake server with an instance db1 that
// serves database d1 of user u1, its record's next write's acknowledgement
// lost once armed, its db.changed events followed.
type dbRig struct {
	ctx    context.Context
	w      *Worker
	armed  *atomic.Bool
	client *bus.Client
	fake   *container.Fake
	// js is the agent's connection's, without the lost acknowledgements.
	js    jetstream.JetStream
	agent *seal.Keys
	mu    sync.Mutex
	told  []events.DBChange
}

func newDBRig(t *testing.T) *dbRig {
	t.Helper()
	conn, url := testutil.Bus(t)
	aconn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agent-" + server, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(aconn.Close)
	ctx, cancel := context.WithCancel(context.Background())
	fake := container.NewFake("10.77.9.0/24", "skein-service")
	cstore, err := bus.OpenStore[events.Container](ctx, aconn.JS)
	if err != nil {
		t.Fatal(err)
	}
	pub := bus.NewPublisher(aconn.JS, "agent/"+server, server)
	cw := containers.New(server, fake, cstore, pub, zerolog.Nop())
	rt := workers.NewRuntime(aconn, server, zerolog.Nop())
	agent, err := seal.New()
	if err != nil {
		t.Fatal(err)
	}
	host := &svc.Host{Server: server, Image: "skein-service", Runtime: fake, Containers: cw, Locks: rt, Answered: rt.Answered, Secrets: agent, Log: zerolog.Nop()}
	r := &dbRig{ctx: ctx, armed: &atomic.Bool{}, client: bus.NewClient(conn, "cli"), fake: fake, js: aconn.JS, agent: agent}
	if r.w, err = New(ctx, Config{Deps: svc.Deps{Host: host, JS: testutil.LostAck(aconn.JS, "skein_dbs", r.armed), Publisher: pub}, Log: zerolog.Nop()}); err != nil {
		t.Fatal(err)
	}
	cw.Register(rt)
	r.w.Register(rt)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = rt.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	// An instance that serves, with one database, as adddb leaves it.
	if err := fake.Create(ctx, container.CreateSpec{Name: "db1", Image: "skein-service"}); err != nil {
		t.Fatal(err)
	}
	if err := fake.Start(ctx, "db1"); err != nil {
		t.Fatal(err)
	}
	inst := events.DBInstance{Resource: events.Resource{Name: "db1", Server: server, Status: events.StatusReady, Updated: time.Now().UTC()},
		Kind: "mysql", Port: 3306, Allow: []string{"10.77.0.0/16"}, Databases: []events.DBDatabase{{Name: "d1", Owner: "u1"}}, Users: []events.DBUser{{Name: "u1"}}}
	if _, err := r.w.kind.Store.Put(ctx, bus.Key(server, "db1"), inst); err != nil {
		t.Fatal(err)
	}
	sub, err := conn.NC.Subscribe(bus.EventFilter(server, events.TypeDBChanged), func(m *nats.Msg) {
		env, err := events.Decode(m.Data)
		var ch events.DBChange
		if err == nil && env.Payload(&ch) == nil {
			r.mu.Lock()
			r.told = append(r.told, ch)
			r.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	_ = conn.NC.Flush()
	return r
}

// do sends a command and waits for its success.
func (r *dbRig) do(t *testing.T, typ string, payload any) {
	t.Helper()
	if _, err := r.call(t, typ, payload); err != nil {
		t.Fatalf("%s: %v", typ, err)
	}
}

// call sends a command and returns its result.
func (r *dbRig) call(t *testing.T, typ string, payload any) (*events.Result, error) {
	t.Helper()
	env, err := r.client.NewCommand(server, typ, "", payload)
	if err != nil {
		t.Fatal(err)
	}
	cctx, c := context.WithTimeout(r.ctx, 60*time.Second)
	defer c()
	return r.client.Do(cctx, bus.Call{Envelope: env})
}

// toldChange waits for db.changed of db1's database db with change.
func (r *dbRig) toldChange(t *testing.T, db, change string) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, ch := range r.told {
			if ch.Instance == "db1" && ch.DB == db && ch.Change == change {
				return true
			}
		}
		return false
	}, "no db.changed %s of %s: %v", change, db, lazyChanges(func() []events.DBChange { r.mu.Lock(); defer r.mu.Unlock(); return r.told }))
}

type lazyChanges func() []events.DBChange

func (f lazyChanges) String() string {
	out := ""
	for _, c := range f() {
		out += c.Instance + "/" + c.DB + ":" + c.Change + " "
	}
	return out
}
