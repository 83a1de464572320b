package jobs

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// TestTheLeaseSurvivesAnotherServersCopy (issue 23, attack 4 on the
// scheduler): agent s1 has a record of its own, then a deletion's marker,
// stored over the scheduler's lease (a direct get's reply goes anywhere).
// The scheduler keeps the lead throughout, and the lease reads as its own.
func TestTheLeaseSurvivesAnotherServersCopy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, url, auth := testutil.AuthBus(t)
	sc := testutil.Connect(t, url, auth, bus.Role{Kind: "scheduler"})
	s1 := testutil.Connect(t, url, auth, bus.Role{Kind: "agent", Server: "s1"})
	var logs testutil.LogBuffer
	log := zerolog.New(&logs)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	bus.KeepKeys(sctx, sc.JS, bus.SchedulerKept(), func(bucket, key string, err error) {
		log.Warn().Str("key", key).Err(err).Msg("kept")
	})
	s, err := New(sctx, Config{Conn: sc, ID: "sched-a", Grace: time.Minute, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Run(sctx) }()
	defer func() { stop(); <-done }()
	lease, err := bus.OpenStore[events.SchedulerLeader](ctx, admin.JS)
	if err != nil {
		t.Fatal(err)
	}
	ours := func() bool {
		e, err := lease.Get(ctx, leaderKey)
		return err == nil && e.Value.ID == "sched-a"
	}
	testutil.Eventually(t, 10*time.Second, ours, "the scheduler never took the lease")

	// s1's own record, signed by s1, and a deletion's marker, each stored
	// under s1's key in a bucket and had published onto the lease's subject.
	bucket := lease.Bucket()
	target := "$KV." + bucket + "." + leaderKey
	replay := func(name string, data []byte, h nats.Header) {
		own := "$KV.skein_containers.s1." + name
		m := nats.NewMsg(own)
		m.Data = data
		for k, v := range h {
			m.Header[k] = v
		}
		if _, err := s1.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		req, _ := json.Marshal(map[string]string{"last_by_subj": own})
		if err := s1.NC.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET.KV_skein_containers", Reply: target, Data: req}); err != nil {
			t.Fatal(err)
		}
	}
	for _, at := range []struct {
		name string
		do   func()
	}{
		{"a record of s1's", func() {
			replay("lease", []byte(`{"id":"s1-scheduler","since":"2026-12-07T00:00:00Z"}`), nil)
		}},
		{"a deletion's marker", func() { replay("gone", nil, nats.Header{"KV-Operation": {"DEL"}}) }},
	} {
		before, err := lease.Revision(ctx, leaderKey)
		if err != nil {
			t.Fatal(err)
		}
		at.do()
		testutil.Eventually(t, 10*time.Second, func() bool {
			rev, err := lease.Revision(ctx, leaderKey)
			return err == nil && rev > before+1 && ours()
		}, "%s: the lease is not the scheduler's again", at.name)
		// Through two renewals (a third of the lease each).
		deadline := time.Now().Add(events.SchedulerLease)
		for time.Now().Before(deadline) {
			if strings.Contains(logs.String(), "lost the lead") {
				t.Fatalf("%s: the scheduler lost the lead:\n%s", at.name, logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !ours() {
			t.Errorf("%s: the lease is not the scheduler's", at.name)
		}
	}
}
