package bus_test

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

func lbRecord(name string, backends ...string) events.LB {
	l := events.LB{Resource: events.Resource{Name: name, Server: "s1", Status: events.StatusReady, Updated: time.Now().UTC()}, Kind: "haproxy", Mode: "roundrobin", Backends: []events.Backend{}}
	for _, b := range backends {
		l.Backends = append(l.Backends, events.Backend{Name: b, Host: "10.77.1.5", Port: 80})
	}
	return l
}

func TestStoreCreateGetUpdateDelete(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 10*time.Second)
	st, err := bus.OpenStore[events.LB](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "s1.ha1"); !errors.Is(err, bus.ErrNoRecord) {
		t.Fatalf("Get of a missing record = %v, want ErrNoRecord", err)
	}
	rev, err := st.Create(ctx, "s1.ha1", lbRecord("ha1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, "s1.ha1", lbRecord("ha1")); !errors.Is(err, bus.ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	e, err := st.Get(ctx, "s1.ha1")
	if err != nil || e.Revision != rev || e.Value.Name != "ha1" {
		t.Fatalf("Get = %+v %v", e, err)
	}
	rev2, err := st.Update(ctx, "s1.ha1", lbRecord("ha1", "a"), rev)
	if err != nil {
		t.Fatal(err)
	}
	// A writer that read before the update must be refused, not win.
	if _, err := st.Update(ctx, "s1.ha1", lbRecord("ha1", "stale"), rev); !errors.Is(err, bus.ErrConflict) {
		t.Fatalf("stale Update = %v, want ErrConflict", err)
	}
	if err := st.Delete(ctx, "s1.ha1", rev); !errors.Is(err, bus.ErrConflict) {
		t.Fatalf("stale Delete = %v, want ErrConflict", err)
	}
	if err := st.Delete(ctx, "s1.ha1", rev2); err != nil {
		t.Fatal(err)
	}
	if f, err := st.Find(ctx, "s1.ha1"); err != nil || f != nil {
		t.Fatalf("Find after Delete = %+v %v", f, err)
	}
	// A name freed by Delete can be created again.
	if _, err := st.Create(ctx, "s1.ha1", lbRecord("ha1")); err != nil {
		t.Fatalf("Create after Delete: %v", err)
	}
}

func TestStoreRefusesARecordItsSchemaRefuses(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 10*time.Second)
	st, err := bus.OpenStore[events.LB](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	bad := lbRecord("ha1")
	bad.Status = "half-made"
	_, err = st.Create(ctx, "s1.ha1", bad)
	var ve *events.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Create of a record with status %q = %v, want a validation error", bad.Status, err)
	}
	if f, _ := st.Find(ctx, "s1.ha1"); f != nil {
		t.Fatalf("the refused record was stored: %+v", f)
	}
}

// TestStoreModifyLosesNoUpdate has 20 writers add one backend each to one
// record at once: compare-and-set with retries keeps all 20.
func TestStoreModifyLosesNoUpdate(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 30*time.Second)
	st, err := bus.OpenStore[events.LB](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, "s1.ha1", lbRecord("ha1")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := st.Modify(ctx, "s1.ha1", func(cur events.LB, exists bool) (events.LB, error) {
				cur.Backends = append(cur.Backends, events.Backend{Name: "b" + string(rune('a'+i)), Host: "10.77.1.5", Port: 80})
				return cur, nil
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Modify: %v", err)
		}
	}
	e, err := st.Get(ctx, "s1.ha1")
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Value.Backends) != 20 {
		t.Fatalf("after 20 concurrent Modify the record has %d backends, want 20", len(e.Value.Backends))
	}
}

func TestStoreWatchSeesRecordsThenChanges(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 10*time.Second)
	st, err := bus.OpenStore[events.LB](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, "s1.a", lbRecord("a")); err != nil {
		t.Fatal(err)
	}
	ch, err := st.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func() bus.Change[events.LB] {
		select {
		case c := <-ch:
			return c
		case <-ctx.Done():
			t.Fatal("no change")
		}
		return bus.Change[events.LB]{}
	}
	if c := next(); c.Key != "s1.a" || c.Value == nil {
		t.Fatalf("first change = %+v, want record a", c)
	}
	if c := next(); !c.Synced {
		t.Fatalf("second change = %+v, want the synced mark", c)
	}
	if _, err := st.Create(ctx, "s1.b", lbRecord("b")); err != nil {
		t.Fatal(err)
	}
	if c := next(); c.Key != "s1.b" || c.Value == nil || c.Value.Name != "b" {
		t.Fatalf("change = %+v, want b created", c)
	}
	if err := st.Delete(ctx, "s1.a", 0); err != nil {
		t.Fatal(err)
	}
	if c := next(); c.Key != "s1.a" || c.Value != nil {
		t.Fatalf("change = %+v, want a deleted", c)
	}
	all, err := st.List(ctx)
	if err != nil || len(all) != 1 || all[0].Key != "s1.b" {
		t.Fatalf("List = %+v %v, want only b", all, err)
	}
}

// TestStoreLatestReadsTheLeader: Latest reads what Get does, from the
// bucket's leader: the record as last written; none when it is missing or deleted.
func TestStoreLatestReadsTheLeader(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 10*time.Second)
	st, err := bus.OpenStore[events.LB](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Latest(ctx, "s1.ha1"); !errors.Is(err, bus.ErrNoRecord) {
		t.Fatalf("Latest of a missing record = %v, want ErrNoRecord", err)
	}
	if _, err := st.Put(ctx, "s1.ha1", lbRecord("ha1", "b1")); err != nil {
		t.Fatal(err)
	}
	rev, err := st.Put(ctx, "s1.ha1", lbRecord("ha1", "b1", "b2"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := st.Latest(ctx, "s1.ha1")
	if err != nil || len(e.Value.Backends) != 2 {
		t.Fatalf("Latest = %+v, %v; want the second write", e.Value, err)
	}
	if err := st.Delete(ctx, "s1.ha1", rev); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Latest(ctx, "s1.ha1"); !errors.Is(err, bus.ErrNoRecord) {
		t.Fatalf("Latest of a deleted record = %v, want ErrNoRecord", err)
	}
}

// A record stored under one server's key but naming another server is
// never taken as the other's: Get refuses it, lists and watches leave it out
// (issue 23: s1 wrote a record saying server s2, and it was listed as s2's).
func TestStoreRefusesARecordOfAnotherServersKey(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 10*time.Second)
	st, err := bus.OpenStore[events.LB](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	forged := lbRecord("ha9")
	forged.Server = "s2"
	raw, _ := json.Marshal(forged)
	kv, err := conn.JS.KeyValue(ctx, st.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "s1.ha9", raw); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, "s2.ha1", func() events.LB { l := lbRecord("ha1"); l.Server = "s2"; return l }()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "s1.ha9"); err == nil || !strings.Contains(err.Error(), `says server "s2"`) {
		t.Errorf("Get of the forged record: %v", err)
	}
	all, err := st.List(ctx)
	if err != nil || len(all) != 1 || all[0].Key != "s2.ha1" {
		t.Errorf("List = %+v, %v: want s2's own record only", all, err)
	}
	hbs, err := bus.OpenStore[events.Heartbeat](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	hkv, _ := conn.JS.KeyValue(ctx, hbs.Bucket())
	b, _ := json.Marshal(events.Heartbeat{Name: "s2", Status: "up", Time: time.Now().UTC()})
	if _, err := hkv.Put(ctx, "s1", b); err != nil {
		t.Fatal(err)
	}
	if _, err := hbs.Get(ctx, "s1"); err == nil {
		t.Error("a heartbeat naming s2 under s1's key was taken")
	}
}
