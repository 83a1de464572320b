package jobs

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
)

// TestScaleWhoseCountLandedIsTold (the soak's missed-event class): a
// scalejob whose first attempt set the count but heard an error (the job
// record's write acknowledgement lost) is told by the next attempt, which
// finds the count set: job.changed scaled, not silence.
func TestScaleWhoseCountLandedIsTold(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, url, auth := testutil.AuthBus(t)
	sc := testutil.Connect(t, url, auth, bus.Role{Kind: "scheduler"})
	armed := &atomic.Bool{}
	wrapped := *sc
	wrapped.JS = testutil.LostAck(sc.JS, "skein_jobs", armed)
	s, err := New(ctx, Config{Conn: &wrapped, ID: "sched-a", Grace: time.Minute, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	rt := workers.NewRuntime(sc, Name, zerolog.Nop())
	s.Register(rt)
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = rt.Run(rctx) }()
	defer func() { stop(); wg.Wait() }()

	jobs, err := bus.OpenStore[events.Job](ctx, admin.JS)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	job := events.Job{JobAdd: events.JobAdd{Name: "web", Image: "skein-busybox", Count: 2}, Version: 1, Created: now, Updated: now}
	if _, err := jobs.Put(ctx, bus.Key("job", "web"), job); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var told []events.JobChange
	sub, err := admin.NC.Subscribe(bus.EventFilter(Name, events.TypeJobChanged), func(m *nats.Msg) {
		env, err := events.Decode(m.Data)
		var ch events.JobChange
		if err == nil && env.Payload(&ch) == nil {
			mu.Lock()
			told = append(told, ch)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = admin.NC.Flush()

	armed.Store(true)
	client := bus.NewClient(admin, "cli")
	env, err := client.NewCommand(Name, events.TypeJobScale, "", events.JobScale{Name: "web", Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Do(ctx, bus.Call{Envelope: env}); err != nil {
		t.Fatalf("scalejob: %v", err)
	}
	if armed.Load() {
		t.Fatal("the scale's record write never lost its acknowledgement: the test did not test")
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ch := range told {
			if ch.Job == "web" && ch.Change == "scaled" && ch.Count == 1 {
				return true
			}
		}
		return false
	}, "no job.changed scaled to 1")
}
