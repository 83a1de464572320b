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

// BenchmarkRoundTrip compares skein's round trips with a plain NATS request/reply
// on the same embedded server, in one process:
//   - skein: the ping path: client → agent runtime → result, as `skein ping` does
//     (a query: envelopes, schema validation both ways, core request/reply);
//   - skein-durable: the same ping as a durable command: JetStream work queue →
//     agent consumer → result stored in JetStream → client, as every state change goes;
//   - nats: plain request/reply of a payload of the same size.
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
	pong := func(ctx context.Context, req *workers.Request) (any, error) {
		return events.Pong{Server: "s1", Time: time.Now().UTC()}, nil
	}
	rt.Handle(events.TypePing, pong)
	rt.HandleQuery(events.TypePing, pong)
	go rt.Run(ctx)
	client := bus.NewClient(conn, "bench")

	durable := func() error {
		env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{})
		if err != nil {
			return err
		}
		cctx, c := context.WithTimeout(ctx, 10*time.Second)
		defer c()
		_, err = client.Do(cctx, bus.Call{Envelope: env})
		return err
	}
	query := func() error {
		env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{})
		if err != nil {
			return err
		}
		cctx, c := context.WithTimeout(ctx, 10*time.Second)
		defer c()
		_, err = client.Query(cctx, env)
		return err
	}
	// Warm up: the consumer and the query subscription are made by the runtime asynchronously.
	testutil.Eventually(b, 10*time.Second, func() bool { return durable() == nil && query() == nil }, "agent never answered")

	b.Run("skein", func(b *testing.B) {
		for b.Loop() {
			if err := query(); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("skein-durable", func(b *testing.B) {
		for b.Loop() {
			if err := durable(); err != nil {
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
		// A payload as large as a ping envelope, so the comparison is of paths, not bytes.
		env, _ := client.NewCommand("s1", events.TypePing, "", events.Ping{})
		payload, _ := env.Marshal()
		for b.Loop() {
			if _, err := conn.NC.Request("bench.echo", payload, 10*time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
}
