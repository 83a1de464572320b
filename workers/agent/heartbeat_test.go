package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// A beat whose write gets no answer gives way to the next in time: the
// server's record is never older than DownAfter while its agent runs
// (found by BenchmarkNATSNodeLoss: "server c1 is down (last heartbeat 8s
// ago)", a beat sent as its NATS node was killed waited the store's 10 s).
func TestAHeartbeatWithoutAnswerGivesWayToTheNext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, _ := testutil.Bus(t)
	var armed atomic.Bool
	spec, _ := events.StateOf[events.Heartbeat]()
	kv, err := bus.OpenStore[events.Heartbeat](ctx, testutil.Unanswered(conn.JS, spec.Bucket, &armed))
	if err != nil {
		t.Fatal(err)
	}
	a := testAgent(&fakePrereqs{})
	a.putHeartbeat(ctx, kv, a.heartbeat(ctx))
	armed.Store(true)
	start := time.Now()
	a.putHeartbeat(ctx, kv, a.heartbeat(ctx))
	if took := time.Since(start); took > HeartbeatEvery+time.Second {
		t.Fatalf("a beat without answer held the next for %v, want at most %v", took, HeartbeatEvery)
	}
	before, err := kv.Get(ctx, a.cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	a.putHeartbeat(ctx, kv, a.heartbeat(ctx))
	after, err := kv.Get(ctx, a.cfg.Name)
	if err != nil || after.Revision <= before.Revision {
		t.Fatalf("the beat after one without answer was not stored: revision %d then %d, %v", before.Revision, after.Revision, err)
	}
}
