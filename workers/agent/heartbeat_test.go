package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// stalledJS hands out bucket's KV with its next Update unanswered once
// armed: the write waits for its deadline, as one sent to a bucket between
// leaders does (its followers drop it without a word).
type stalledJS struct {
	jetstream.JetStream
	bucket string
	armed  *atomic.Bool
}

func (j stalledJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.KeyValue(ctx, bucket)
	if err != nil || bucket != j.bucket {
		return kv, err
	}
	return stalledKV{KeyValue: kv, armed: j.armed}, nil
}

type stalledKV struct {
	jetstream.KeyValue
	armed *atomic.Bool
}

func (k stalledKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if k.armed.CompareAndSwap(true, false) {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	return k.KeyValue.Update(ctx, key, value, rev)
}

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
	kv, err := bus.OpenStore[events.Heartbeat](ctx, stalledJS{JetStream: conn.JS, bucket: spec.Bucket, armed: &armed})
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
