package workers_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
)

// BenchmarkRoundTrip compares skein's command round trip (client → JetStream →
// agent runtime → result) with a plain NATS request/reply on the same server.
func BenchmarkRoundTrip(b *testing.B) {
	conn, url := testutil.Bus(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	agentConn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agent", Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer agentConn.Close()
	rt := workers.NewRuntime(agentConn, "s1", zerolog.Nop())
	rt.Handle(events.TypePing, func(ctx context.Context, req *workers.Request) (any, error) {
		return events.Pong{Server: "s1", Time: time.Now().UTC()}, nil
	})
	go rt.Run(ctx)
	client := bus.NewClient(conn, "bench")

	ping := func() error {
		env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{})
		if err != nil {
			return err
		}
		cctx, c := context.WithTimeout(ctx, 10*time.Second)
		defer c()
		_, err = client.Do(cctx, bus.Call{Envelope: env})
		return err
	}
	// Warm up: the consumer is created by the runtime asynchronously.
	testutil.Eventually(b, 10*time.Second, func() bool { return ping() == nil }, "agent never answered")

	b.Run("skein", func(b *testing.B) {
		for b.Loop() {
			if err := ping(); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("nats", func(b *testing.B) {
		sub, err := agentConn.NC.Subscribe("bench.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := agentConn.NC.Flush(); err != nil {
			b.Fatal(err)
		}
		payload := []byte(`{"note":""}`)
		for b.Loop() {
			if _, err := conn.NC.Request("bench.echo", payload, 10*time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
}
