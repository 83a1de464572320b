package dashboard

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// TestPagesShareOneFollowing: however many pages are open, the bus has one
// watcher per bucket and one events consumer; every page gets each change; a
// page that falls behind is let go (its stream ends, it reloads) without
// holding up the others; the following stops with the last page.
func TestPagesShareOneFollowing(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctrs, err := bus.OpenStore[events.Container](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	consumers := func(stream string) int {
		st, err := conn.JS.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	kvStream := "KV_skein_containers"
	h := &hub{js: conn.JS}
	var pages []<-chan []byte
	var leaves []func()
	for range 3 {
		ch, leave, err := h.join()
		if err != nil {
			t.Fatal(err)
		}
		pages, leaves = append(pages, ch), append(leaves, leave)
	}
	if n, e := consumers(kvStream), consumers(bus.StreamEvents); n != 1 || e != 1 {
		t.Fatalf("3 pages: %d watchers of the containers, %d events consumers; want 1 and 1", n, e)
	}
	put := func(status string) {
		t.Helper()
		if _, err := ctrs.Put(ctx, bus.Key("s1", "web1"), events.Container{Name: "web1", Server: "s1", Status: status, Updated: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	put("Running")
	for i, p := range pages {
		select {
		case m := <-p:
			if !strings.Contains(string(m), `"status":"Running"`) {
				t.Fatalf("page %d got %s", i, m)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("page %d got nothing", i)
		}
	}

	// Page 0 reads no more: after subBuffer changes it is let go, the others are not.
	for i := range subBuffer + 1 {
		put("s" + strings.Repeat("x", i%5))
		for _, p := range pages[1:] {
			select {
			case <-p:
			case <-time.After(5 * time.Second):
				t.Fatalf("a reading page missed change %d", i)
			}
		}
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		for {
			select {
			case _, ok := <-pages[0]:
				if !ok {
					return true
				}
			default:
				return false
			}
		}
	}, "the page that fell behind was not let go")
	leaves[0]() // its handler leaves all the same: harmless

	leaves[1]()
	leaves[2]()
	// The bus drops a consumer a few seconds after its subscriber goes.
	testutil.Eventually(t, 20*time.Second, func() bool {
		return consumers(kvStream) == 0 && consumers(bus.StreamEvents) == 0
	}, "the following went on after the last page left: %v watchers, %v events consumers",
		lazyCount(func() int { return consumers(kvStream) }), lazyCount(func() int { return consumers(bus.StreamEvents) }))
}

// lazyCount prints a count only when a failure message is made.
type lazyCount func() int

func (f lazyCount) String() string { return strconv.Itoa(f()) }

// TestPagesReloadWhenTheBusRestarts: after `skein server` restarts, open
// pages are let go at once (they load the records afresh), and the pages
// that join again see the changes that follow.
func TestPagesReloadWhenTheBusRestarts(t *testing.T) {
	b := testutil.NewRestartableBus(t)
	conn, err := bus.Connect(bus.ConnOptions{URL: b.URL(), Name: t.Name(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := bus.Ensure(ctx, conn.JS, 1); err != nil {
		t.Fatal(err)
	}
	ctrs, err := bus.OpenStore[events.Container](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	h := &hub{js: conn.JS}
	page, leave, err := h.join()
	if err != nil {
		t.Fatal(err)
	}
	defer leave()
	b.Stop()
	b.Start(t)
	restarted := time.Now()
	testutil.Eventually(t, 5*time.Second, func() bool {
		for {
			select {
			case _, ok := <-page:
				if !ok {
					return true
				}
			default:
				return false
			}
		}
	}, "the page was not let go after the bus restarted")
	t.Logf("let go %v after the restart", time.Since(restarted).Round(time.Millisecond))
	var again <-chan []byte
	testutil.Eventually(t, 10*time.Second, func() bool {
		ch, leave2, err := h.join()
		if err != nil {
			return false
		}
		t.Cleanup(leave2)
		again = ch
		return true
	}, "a page cannot join after the restart")
	if _, err := ctrs.Put(ctx, bus.Key("s1", "web1"), events.Container{Name: "web1", Server: "s1", Status: "Running", Updated: time.Now()}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-again:
		if !strings.Contains(string(m), `"status":"Running"`) {
			t.Fatalf("the page got %s", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a page joined after the restart sees no change")
	}
}
