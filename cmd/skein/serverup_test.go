package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// A read of a heartbeat that waited for the bucket's stream to elect a
// leader finds the last beat stored before (TestNATSCluster, right after a
// NATS node's loss): the CLI asks again for one beat's time before it
// calls the server down. Otherwise a server whose beats stopped is refused
// at once (one cut off from the LAN), and one stopped cleanly always is.
func TestAServerIsDownOnlyAfterABeatsTime(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hbs, err := bus.OpenStore[events.Heartbeat](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	c := &cli{g: &globals{}, conn: conn, client: bus.NewClient(conn, "cli")}
	beat := func(status string, age time.Duration) {
		t.Helper()
		if _, err := hbs.Put(ctx, "s1", events.Heartbeat{Name: "s1", Status: status, Time: time.Now().Add(-age).UTC()}); err != nil {
			t.Fatal(err)
		}
	}

	// Every read counts as one that waited for an election.
	electionRead = 0
	beat("up", 8*time.Second)
	go func() {
		time.Sleep(time.Second)
		beat("up", 0)
	}()
	if _, err := c.serverUp(ctx, "s1"); err != nil {
		t.Errorf("after an election, a server whose next beat came a second later: %v", err)
	}
	beat("up", 8*time.Second)
	if _, err := c.serverUp(ctx, "s1"); err == nil || !strings.Contains(err.Error(), "is down") {
		t.Errorf("after an election, a server whose beats stopped: %v", err)
	}
	electionRead = bus.FirstReadAttempt

	beat("down", 0)
	start := time.Now()
	if _, err := c.serverUp(ctx, "s1"); err == nil || !strings.Contains(err.Error(), "is down") || time.Since(start) > time.Second {
		t.Errorf("a server stopped cleanly: %v after %s", err, time.Since(start))
	}

	beat("up", 8*time.Second)
	start = time.Now()
	if _, err := c.serverUp(ctx, "s1"); err == nil || !strings.Contains(err.Error(), "is down") || time.Since(start) > time.Second {
		t.Errorf("a server whose beats stopped, read at once: %v after %s", err, time.Since(start))
	}
}
