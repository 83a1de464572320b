package agent

import (
	"context"
	"errors"
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
)

// fakePrereqs lacks what it is told to.
type fakePrereqs struct {
	mu     sync.Mutex
	lacks  []container.Lack
	checks int
}

func (f *fakePrereqs) set(l ...container.Lack) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lacks = l
}

func (f *fakePrereqs) Check(ctx context.Context, images []string) []container.Lack {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks++
	return append([]container.Lack(nil), f.lacks...)
}

func (f *fakePrereqs) Prepare(ctx context.Context, p container.PrepareSpec) ([]string, error) {
	return nil, nil
}

func (f *fakePrereqs) Import(ctx context.Context, alias, path string) (string, error) {
	return "", nil
}

func testAgent(p *fakePrereqs) *Agent {
	rt := container.NewFake("10.77.1.0/24", "skein-busybox")
	return &Agent{cfg: Config{Name: "s1", Prereqs: p, Prepare: "skein up --prepare", ServiceImage: "skein-service", Runtime: rt}, log: zerolog.Nop()}
}

// The heartbeat says what lacks with the fix; a launch is refused with the
// same words, an image lacking refuses only launches of that image, and what
// came back is seen at once.
func TestDegradedHeartbeatAndRefusals(t *testing.T) {
	ctx := context.Background()
	p := &fakePrereqs{}
	a := testAgent(p)
	a.check(ctx)
	if hb := a.heartbeat(ctx); len(hb.Degraded) != 0 {
		t.Fatalf("a server with everything is degraded: %v", hb.Degraded)
	}
	p.set(container.Lack{What: "network", Name: "skeinbr9"})
	a.check(ctx)
	hb := a.heartbeat(ctx)
	want := "network skeinbr9 not found: run skein up --prepare or pass --network"
	if len(hb.Degraded) != 1 || hb.Degraded[0] != want {
		t.Fatalf("heartbeat degraded %q, want [%q]", hb.Degraded, want)
	}
	err := a.ready(ctx, "skein-busybox")
	var we *workers.Error
	if err == nil || !strings.Contains(err.Error(), want) || !asError(err, &we) || we.Code != workers.CodeUnavailable || we.Transient {
		t.Fatalf("ready: %v, want a permanent unavailable error with %q", err, want)
	}
	p.set(container.Lack{What: "image", Name: "skein-service"})
	if err := a.ready(ctx, "skein-busybox"); err != nil {
		t.Errorf("an app launch refused for lack of the service image: %v", err)
	}
	if err := a.ready(ctx, "skein-service"); err == nil || !strings.Contains(err.Error(), "image skein-service not found") {
		t.Errorf("a service launch without its image: %v", err)
	}
	p.set()
	if err := a.ready(ctx, "skein-service"); err != nil {
		t.Errorf("still refused once everything is there: %v", err)
	}
	before := p.checks
	if err := a.ready(ctx, "skein-service"); err != nil || p.checks != before {
		t.Errorf("a healthy server is checked again on every launch (%d checks, %v)", p.checks-before, err)
	}
	for _, l := range []container.Lack{
		{What: "incus", Name: "/var/lib/incus/unix.socket", Detail: "connection refused"},
		{What: "project", Name: "skein-x"},
		{What: "pool", Name: "skein", Detail: "permission denied"},
	} {
		msg := a.fix(l)
		if !strings.Contains(msg, l.Name) || !strings.Contains(msg, "pass --") {
			t.Errorf("fix for %+v does not name it and a flag: %q", l, msg)
		}
	}
}

func asError(err error, target **workers.Error) bool { return errors.As(err, target) }

// TestHeartbeatTellsTheMemoryTheJobsUse: the scheduler counts a job's
// instances by what they ask and the rest of the memory in use by what
// it uses; the beat says how much the jobs' instances use.
func TestHeartbeatTellsTheMemoryTheJobsUse(t *testing.T) {
	ctx := context.Background()
	a := testAgent(&fakePrereqs{})
	rt := a.cfg.Runtime.(*container.Fake)
	for _, s := range []container.CreateSpec{{Name: "web-1", Image: "skein-busybox", Job: "web"}, {Name: "web-2", Image: "skein-busybox", Job: "web"}, {Name: "db", Image: "skein-busybox"}} {
		if err := rt.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	rt.SetMemUsage("web-1", 100<<20)
	rt.SetMemUsage("web-2", 50<<20)
	rt.SetMemUsage("db", 1<<30)
	hb := a.heartbeat(ctx)
	if hb.MemJobs != 150<<20 || hb.Containers != 3 {
		t.Fatalf("the beat says the jobs use %d MiB of %d containers; want 150 MiB of 3", hb.MemJobs>>20, hb.Containers)
	}
}

// A beat that lands late (held in a dead connection's socket while the
// server's address was away, its agent restarted meanwhile) is refused by
// the bus: the record keeps the newer beat. Found by BenchmarkPeerMove,
// whose m3 read as at an address of two moves before for 6.7 s.
func TestALateHeartbeatDoesNotTurnTheRecordBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, url, auth := testutil.AuthBus(t)
	agentConn := testutil.Connect(t, url, auth, bus.Role{Kind: "agent", Server: "s1"})
	if err := bus.WaitReady(ctx, agentConn.JS); err != nil {
		t.Fatal(err)
	}
	kv, err := bus.OpenStore[events.Heartbeat](ctx, agentConn.JS)
	if err != nil {
		t.Fatal(err)
	}
	// What the agent publishes, as the socket held it.
	sent := make(chan *nats.Msg, 4)
	sub, err := conn.NC.ChanSubscribe("$KV."+kv.Bucket()+".s1", sent)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := conn.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	old := testAgent(&fakePrereqs{})
	old.cfg.Address = "10.0.0.1"
	old.putHeartbeat(ctx, kv, old.heartbeat(ctx))
	var late *nats.Msg
	select {
	case late = <-sent:
	case <-ctx.Done():
		t.Fatal("the beat was never seen")
	}
	// The agent restarted, at another address.
	restarted := testAgent(&fakePrereqs{})
	restarted.cfg.Address = "10.0.0.2"
	restarted.putHeartbeat(ctx, kv, restarted.heartbeat(ctx))
	_, err = conn.JS.PublishMsg(ctx, &nats.Msg{Subject: late.Subject, Data: late.Data, Header: late.Header})
	if err == nil {
		t.Error("the late beat was stored")
	}
	got, err := kv.Get(ctx, "s1")
	if err != nil || got.Value.Address != "10.0.0.2" {
		t.Fatalf("s1's heartbeat after a late beat: %+v %v", got.Value, err)
	}
	// The first agent, still running, writes again over the new one's beat.
	old.putHeartbeat(ctx, kv, old.heartbeat(ctx))
	if got, err := kv.Get(ctx, "s1"); err != nil || got.Value.Address != "10.0.0.1" {
		t.Fatalf("a running agent's beat after another's: %+v %v", got.Value, err)
	}
}
