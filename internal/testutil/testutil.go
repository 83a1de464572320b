// Package testutil holds helpers shared by skein's tests: an embedded JetStream
// server in a temp dir and polling with a deadline.
package testutil

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

// Bus starts an embedded NATS server with skein's streams in t's temp dir and
// returns a connection to it; both are closed when the test ends.
func Bus(t testing.TB) (*bus.Conn, string) {
	t.Helper()
	ns, err := bus.StartServer(bus.ServerOptions{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	conn, err := bus.Connect(bus.ConnOptions{URL: ns.ClientURL(), Name: t.Name(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Ensure(ctx, conn.JS, 1); err != nil {
		t.Fatal(err)
	}
	return conn, ns.ClientURL()
}

// Eventually polls cond every tick until it holds or total passes, then fails the test with msg.
func Eventually(t testing.TB, total time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{total}, args...)...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// UncheckedCommand builds a command envelope without validating its payload, as
// a misbehaving client would send it: for tests of what the agent refuses.
func UncheckedCommand(server, typ string, payload any) *events.Envelope {
	data, err := json.Marshal(payload)
	if err != nil {
		panic(err)
	}
	spec, _ := events.Lookup(typ)
	return &events.Envelope{ID: events.NewID(), Type: typ, V: spec.Version, Time: time.Now().UTC(), Source: "test", Server: server, Data: data}
}

// AuthBus is Bus with authentication: the server trusts a fresh authority,
// refuses anonymous clients and, as `skein server`, makes each role's
// consumers and stores as it is issued (bus.FollowAuthority). It returns an admin connection, the URL and the
// authority, to connect more roles with Connect.
func AuthBus(t testing.TB) (*bus.Conn, string, *bus.Authority) {
	t.Helper()
	a, err := bus.LoadAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ns, err := bus.StartServer(bus.ServerOptions{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Authority: a})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	admin := Connect(t, ns.ClientURL(), a, bus.Role{Kind: "admin"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bus.Ensure(ctx, admin.JS, 1); err != nil {
		t.Fatal(err)
	}
	// As `skein server` does: each role's consumers and stores, made as it is issued.
	fctx, stop := context.WithCancel(context.Background())
	followed := make(chan struct{})
	go func() { defer close(followed); bus.FollowAuthority(fctx, a, ns, admin.JS, zerolog.Nop()) }()
	t.Cleanup(func() { stop(); <-followed })
	return admin, ns.ClientURL(), a
}

// Connect connects to url with new credentials of role r.
func Connect(t testing.TB, url string, a *bus.Authority, r bus.Role) *bus.Conn {
	t.Helper()
	creds, err := a.Creds(r)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := bus.Connect(bus.ConnOptions{URL: url, Name: r.Name(), Log: zerolog.Nop(), Creds: creds})
	if err != nil {
		t.Fatalf("%s: %v", r.Name(), err)
	}
	t.Cleanup(conn.Close)
	return conn
}
