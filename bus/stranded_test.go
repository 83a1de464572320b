package bus_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/testutil"
)

// A connection whose server answers no JetStream request (as a NATS node
// cut from its cluster does) moves to another server it knows after three
// failed checks; one whose server answers stays.
func TestAStrandedConnectionMovesToAnotherServer(t *testing.T) {
	// Without JetStream: every JetStream request goes unanswered.
	mute, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go mute.Start()
	if !mute.ReadyForConnections(5 * time.Second) {
		t.Fatal("the server without JetStream did not start")
	}
	t.Cleanup(mute.Shutdown)
	_, good := testutil.Bus(t)
	urls := mute.ClientURL() + "," + good
	// The pool's order is random: connect until the first pick is the mute one.
	var conn *bus.Conn
	for try := 0; conn == nil; try++ {
		c, err := bus.Connect(bus.ConnOptions{URL: urls, Name: t.Name(), Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		if c.NC.ConnectedUrl() == mute.ClientURL() {
			conn = c
		} else if c.Close(); try == 50 {
			t.Fatal("50 connections never picked the first server")
		}
	}
	t.Cleanup(conn.Close)
	start := time.Now()
	testutil.Eventually(t, 5*time.Second, func() bool {
		conn.Stranded(zerolog.Nop())
		return conn.NC.ConnectedUrl() == good
	}, "the connection stays with a server that answers no JetStream request (at %s)", conn.NC.ConnectedUrl())
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
