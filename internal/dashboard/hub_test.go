package dashboard

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

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
