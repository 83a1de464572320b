package bus

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
)

// TestOlderAgentCredsStillStoreResults: an agent whose credentials predate
// the storage acknowledgements (no subscription to its stored subjects) is
// told so at once and publishes its results the plain way, stored and
// acknowledged, instead of waiting for acknowledgements that never come; an
// agent with today's credentials is not degraded.
func TestOlderAgentCredsStillStoreResults(t *testing.T) {
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
	connect := func(creds []byte) *Conn {
		t.Helper()
		c, err := Connect(ConnOptions{URL: ns.ClientURL(), Name: "agent-s2", Log: zerolog.Nop(), Creds: creds})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	admin, err := a.Creds(Role{Kind: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Ensure(ctx, connect(admin).JS, 1); err != nil {
		t.Fatal(err)
	}

	// Today's permissions without the subscription to the stored subjects.
	perms := Role{Kind: "agent", Server: "s2"}.Permissions()
	var subs jwt.StringList
	for _, s := range perms.Sub.Allow {
		if s != ServerStored("s2") {
			subs.Add(s)
		}
	}
	perms.Sub.Allow = subs
	user, _ := nkeys.CreateUser()
	upub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name, uc.Permissions = Role{Kind: "agent", Server: "s2"}.Name(), perms
	uc.Tags.Add("skein-role:agent")
	token, err := uc.Encode(a.account)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	old, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	old = append(old, formatKeys(a.keysLine(Role{Kind: "agent", Server: "s2"}))...)

	p, err := NewResultPublisher(connect(old), "s2")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Degraded() == "" {
		t.Fatal("credentials without the stored subjects were not noticed")
	}
	start := time.Now()
	if err := p.Publish(ctx, "c1", []byte(`{"x":1}`)); err != nil {
		t.Fatalf("publishing with older credentials: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("publishing with older credentials took %s: it waited for an acknowledgement", d)
	}
	// Published again (a lost acknowledgement): stored already, not replaced.
	if err := p.Publish(ctx, "c1", []byte(`{"x":2}`)); err != nil {
		t.Fatalf("publishing a stored result again with older credentials: %v", err)
	}
	raw, err := LastMsg(ctx, connect(admin).NC, StreamResults, ResultSubject("s2", "c1"))
	if err != nil || string(raw) != `{"x":1}` {
		t.Fatalf("the result was not stored once: %q, %v", raw, err)
	}

	agent, err := a.Creds(Role{Kind: "agent", Server: "s2"})
	if err != nil {
		t.Fatal(err)
	}
	q, err := NewResultPublisher(connect(agent), "s2")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if why := q.Degraded(); why != "" {
		t.Fatalf("today's credentials degraded: %s", why)
	}
}
