package bus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

func connectTo(t *testing.T, url string) *bus.Conn {
	t.Helper()
	c, err := bus.Connect(bus.ConnOptions{URL: url, Name: t.Name(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestFollowCarriesOnAcrossABusRestart: a follower of a bucket sees what
// changed while the bus was restarting, deletions too, and goes on
// following after.
func TestFollowCarriesOnAcrossABusRestart(t *testing.T) {
	b := testutil.NewRestartableBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	writer := connectTo(t, b.URL())
	if err := bus.Ensure(ctx, writer.JS, 1); err != nil {
		t.Fatal(err)
	}
	follower := connectTo(t, b.URL())
	open := func(c *bus.Conn) *bus.Store[events.Container] {
		st, err := bus.OpenStore[events.Container](ctx, c.JS)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	w := open(writer)
	put := func(st *bus.Store[events.Container], name, image string) {
		t.Helper()
		if _, err := st.Put(ctx, bus.Key("s1", name), events.Container{Name: name, Server: "s1", Status: "Running", Image: image, Updated: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	put(w, "a", "1")
	put(w, "b", "1")
	var mu sync.Mutex
	seen := map[string]string{}
	ch := open(follower).Follow(ctx, ">", func(error) {})
	go func() {
		for c := range ch {
			if c.Synced {
				continue
			}
			mu.Lock()
			if c.Value == nil {
				delete(seen, c.Key)
			} else {
				seen[c.Key] = c.Value.Image
			}
			mu.Unlock()
		}
	}()
	view := func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprint(seen)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return view() == "map[s1.a:1 s1.b:1]" }, "the follower does not see a and b: %s", lazy(view))

	b.Stop()
	b.Start(t)
	// A writer that reconnects first changes the bucket before the follower is back.
	writer2 := connectTo(t, b.URL())
	w2 := open(writer2)
	if err := w2.Delete(ctx, bus.Key("s1", "b"), 0); err != nil {
		t.Fatal(err)
	}
	put(w2, "c", "1")
	put(w2, "a", "2")
	restarted := time.Now()
	testutil.Eventually(t, 5*time.Second, func() bool { return view() == "map[s1.a:2 s1.c:1]" }, "after the bus restarted the follower sees %s", lazy(view))
	t.Logf("converged %v after the writes", time.Since(restarted))
	put(w2, "d", "1")
	testutil.Eventually(t, 10*time.Second, func() bool { return view() == "map[s1.a:2 s1.c:1 s1.d:1]" }, "the follower does not go on following: %s", lazy(view))
}

// TestFollowKeepsARecordForgedWhileItWasAway: a copy of s1's stored under
// s2's container key is refused; when the follower's watch starts again
// (its connection reconnected), that key is not taken for deleted: the
// follower keeps s2's record.
func TestFollowKeepsARecordForgedWhileItWasAway(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 60*time.Second)
	ctrs, err := bus.OpenStore[events.Container](ctx, admin.JS)
	if err != nil {
		t.Fatal(err)
	}
	own, err := bus.OpenStore[events.Container](ctx, s2.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := own.Put(ctx, bus.Key("s2", "web"), events.Container{Name: "web", Server: "s2", Status: "Running", Image: "real", Updated: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	synced := 0
	go func() {
		for c := range ctrs.Follow(ctx, ">", nil) {
			mu.Lock()
			switch {
			case c.Synced:
				synced++
			case c.Value == nil:
				got = append(got, "deleted "+c.Key)
			default:
				got = append(got, c.Key+" "+c.Value.Image)
			}
			mu.Unlock()
		}
	}()
	seen := func() (string, int) {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprint(got), synced
	}
	testutil.Eventually(t, 10*time.Second, func() bool { g, n := seen(); return g == "[s2.web real]" && n == 1 }, "the follower does not see s2's container")
	fake, _ := json.Marshal(events.Container{Name: "web", Server: "s2", Status: "Running", Image: "s1s", Updated: time.Now().UTC()})
	replayAs(t, s1, "s1", "web", fake, nil, "$KV."+ctrs.Bucket()+".s2.web")
	testutil.Eventually(t, 10*time.Second, func() bool {
		m, err := bus.LastStored(ctx, admin.NC, "KV_"+ctrs.Bucket(), "$KV."+ctrs.Bucket()+".s2.web")
		return err == nil && m != nil && strings.Contains(string(m.Data), "s1s")
	}, "s1's copy is not stored under s2's key")
	if err := admin.NC.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { _, n := seen(); return n == 2 }, "the follower's watch did not start again after its reconnection")
	if g, _ := seen(); g != "[s2.web real]" {
		t.Fatalf("after its watch started again the follower was told %s, not nothing more", g)
	}
}
