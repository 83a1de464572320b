package svc

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// TestChangeDoneBeforeAnswersWithTheRecord: an edit that finds its change
// made by an earlier attempt of its command makes Change answer with the
// record as it is, applying and writing nothing; any other edit error is
// the answer.
func TestChangeDoneBeforeAnswersWithTheRecord(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := bus.OpenStore[events.LB](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	k := &Kind[events.LB, *events.LB]{Noun: "load balancer", Prefix: "lb", ListCmd: "skein listlbs", Store: st}
	h := &Host{Server: "s1"}
	rec := events.LB{Resource: events.Resource{Name: "ha1", Server: "s1", Status: events.StatusReady, Updated: time.Now().UTC()},
		Kind: "haproxy", Backends: []events.Backend{{Name: "b1", Host: "10.77.9.5", Port: 80}}}
	rev, err := st.Create(ctx, bus.Key("s1", "ha1"), rec)
	if err != nil {
		t.Fatal(err)
	}
	applied := false
	apply := func(old, next events.LB) (string, error) { applied = true; return "", nil }

	got, err := Change(ctx, h, k, "ha1", func(next *events.LB) error {
		next.Backends = nil // what the earlier attempt did, say; not to be written
		return fmt.Errorf("removing b1: %w", ErrDoneBefore)
	}, apply)
	if err != nil || len(got.Backends) != 1 || got.Backends[0].Name != "b1" {
		t.Fatalf("Change = %+v, %v; want the record as it is and no error", got, err)
	}
	e, err := st.Find(ctx, bus.Key("s1", "ha1"))
	if err != nil || e == nil || e.Revision != rev || applied {
		t.Fatalf("record at revision %d (want %d), applied %v: %v", e.Revision, rev, applied, err)
	}

	refused := errors.New("no such backend")
	if _, err := Change(ctx, h, k, "ha1", func(next *events.LB) error { return refused }, apply); !errors.Is(err, refused) || applied {
		t.Fatalf("Change = %v (applied %v), want the edit's error", err, applied)
	}
}
