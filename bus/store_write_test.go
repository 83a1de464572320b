package bus

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/events"
)

// TestWriteGivesUpWhenUnanswered: a record write that gets no answer (the
// NATS server that took it gone) fails after writeAttempt, as a transient
// error its command is retried for, instead of holding its caller until the
// caller's own deadline.
func TestWriteGivesUpWhenUnanswered(t *testing.T) {
	defer func(d time.Duration) { writeAttempt = d }(writeAttempt)
	writeAttempt = time.Second
	ns, err := StartServer(ServerOptions{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := Connect(ConnOptions{URL: ns.ClientURL(), Name: "t", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Ensure(ctx, conn.JS, 1); err != nil {
		t.Fatal(err)
	}
	st, err := OpenStore[events.Heartbeat](ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	hb := events.Heartbeat{Name: "s1", Status: "up", CPUs: 1, Time: time.Now().UTC()}
	if _, err := st.Put(ctx, "s1", hb); err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	for name, write := range map[string]func() error{
		"put":    func() error { _, err := st.Put(ctx, "s1", hb); return err },
		"create": func() error { _, err := st.Create(ctx, "s2", hb); return err },
		"update": func() error { _, err := st.Update(ctx, "s1", hb, 1); return err },
		"delete": func() error { return st.Delete(ctx, "s1", 0) },
	} {
		start := time.Now()
		err := write()
		if err == nil {
			t.Errorf("%s with the server gone succeeded", name)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s with the server gone took %s, want about writeAttempt (1 s): %v", name, d.Round(time.Millisecond), err)
		}
	}
}
