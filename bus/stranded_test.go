package bus_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/testutil"
)

// muteServer starts a NATS server without JetStream: every JetStream
// request to it goes unanswered, as through a node cut from its cluster.
func muteServer(t *testing.T) string {
	t.Helper()
	mute, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go mute.Start()
	if !mute.ReadyForConnections(5 * time.Second) {
		t.Fatal("the server without JetStream did not start")
	}
	t.Cleanup(mute.Shutdown)
	return mute.ClientURL()
}

// connectFirstTo connects to urls until the connection's first pick (the
// pool's order is random) is first.
func connectFirstTo(t *testing.T, first, urls string) *bus.Conn {
	t.Helper()
	for try := 0; ; try++ {
		c, err := bus.Connect(bus.ConnOptions{URL: urls, Name: t.Name(), Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		if c.NC.ConnectedUrl() == first {
			t.Cleanup(c.Close)
			return c
		}
		if c.Close(); try == 50 {
			t.Fatalf("50 connections never picked %s", first)
		}
	}
}

// A connection whose server answers no JetStream request stays there when
// no other server answers either (a cluster without a leader anywhere).
func TestAConnectionStaysWhenNoServerAnswers(t *testing.T) {
	mute, other := muteServer(t), muteServer(t)
	conn := connectFirstTo(t, mute, mute+","+other)
	for range 30 {
		conn.Stranded(zerolog.Nop())
		time.Sleep(100 * time.Millisecond)
		if u := conn.NC.ConnectedUrl(); u != mute {
			t.Fatalf("the connection moved to %q, which answers no better", u)
		}
	}
}

// A connection whose server answers no JetStream request (as a NATS node
// cut from its cluster does) moves to another server it knows after three
// failed checks, when that one answers; there it stays.
func TestAStrandedConnectionMovesToAnotherServer(t *testing.T) {
	mute := muteServer(t)
	_, good := testutil.Bus(t)
	conn := connectFirstTo(t, mute, mute+","+good)
	start := time.Now()
	testutil.Eventually(t, 5*time.Second, func() bool {
		conn.Stranded(zerolog.Nop())
		return conn.NC.ConnectedUrl() == good
	}, "the connection stays with a server that answers no JetStream request though another does")
	t.Logf("moved after %v", time.Since(start).Round(time.Millisecond))
	// Where JetStream answers, told the same, it stays.
	for range 20 {
		conn.Stranded(zerolog.Nop())
		time.Sleep(100 * time.Millisecond)
		if u := conn.NC.ConnectedUrl(); u != good {
			t.Fatalf("the connection left a server that answers for %q", u)
		}
	}
}
