package bus

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestAResultIsStoredOnce: an agent's result published again (its
// acknowledgement lost) counts as stored and does not replace the first.
func TestAResultIsStoredOnce(t *testing.T) {
	a, err := LoadAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ns, err := StartServer(ServerOptions{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Authority: a})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func(r Role) *Conn {
		t.Helper()
		creds, err := a.Creds(r)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Connect(ConnOptions{URL: ns.ClientURL(), Name: r.Name(), Log: zerolog.Nop(), Creds: creds})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	admin := connect(Role{Kind: "admin"})
	if err := Ensure(ctx, admin.JS, 1); err != nil {
		t.Fatal(err)
	}
	p, err := NewResultPublisher(connect(Role{Kind: "agent", Server: "s2"}), "s2")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Publish(ctx, "c1", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, "c1", []byte(`{"x":2}`)); err != nil {
		t.Fatalf("publishing a stored result again: %v", err)
	}
	raw, err := LastMsg(ctx, admin.NC, StreamResults, ResultSubject("s2", "c1"))
	if err != nil || string(raw) != `{"x":1}` {
		t.Fatalf("the result was not stored once: %q, %v", raw, err)
	}
}
