package workers_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
)

// pingAgent runs a worker runtime for s1 answering pings, as command and
// query, with agent s1's credentials (its commands' MACs checked).
func pingAgent(b *testing.B, ctx context.Context, url string, a *bus.Authority) {
	b.Helper()
	agentConn := testutil.Connect(b, url, a, bus.Role{Kind: "agent", Server: "s1"})
	rt := workers.NewRuntime(agentConn, "s1", zerolog.Nop())
	pong := func(ctx context.Context, req *workers.Request, p events.Ping) (events.Pong, error) {
		return events.Pong{Server: "s1", Time: time.Now().UTC()}, nil
	}
	workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: pong})
	workers.HandleQuery(rt, workers.Query[events.Ping, events.Pong]{Type: events.TypePing, Inline: true, Run: pong})
	go rt.Run(ctx)
}

// BenchmarkRoundTrip compares skein's round trips with bare NATS and bare
// JetStream on the same embedded server, in one process:
//   - skein: the ping path: client → agent runtime → result, as `skein ping` does
//     (a query: envelopes, schema validation both ways, core request/reply);
//   - skein-durable: the same ping as a durable command: JetStream work queue →
//     agent consumer (stored-result check, lock, deadline) → result stored in
//     JetStream → client, as every state change goes;
//   - jetstream: the same path with nothing of skein's: work-queue publish →
//     consumer → result published to a stream → client, no JSON;
//   - jetstream-stored: the same, the client taking the result only once
//     it is stored (as the stream republishes it), as skein's durable path does;
//   - nats: plain request/reply of a payload of the same size.
//
// On a bus that asks for credentials, as `skein server` does: skein's paths
// with the admin's and agent s1's (commands and results carry MACs), the
// bare ones between two admin connections (no permissions to check).
func BenchmarkRoundTrip(b *testing.B) {
	conn, url, a := testutil.AuthBus(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pingAgent(b, ctx, url, a)
	agentConn := testutil.Connect(b, url, a, bus.Role{Kind: "admin"})
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
	// A payload as large as a ping envelope, so the comparisons are of paths, not bytes.
	env, _ := client.NewCommand("s1", events.TypePing, "", events.Ping{})
	payload, _ := env.Marshal()

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

	round := bareJetStream(b, ctx, conn, agentConn)
	b.Run("jetstream", func(b *testing.B) {
		for b.Loop() {
			if err := round(payload, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same, the client taking the result only once JetStream says it is stored, as skein's does.
	b.Run("jetstream-stored", func(b *testing.B) {
		for b.Loop() {
			if err := round(payload, true); err != nil {
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
		for b.Loop() {
			if _, err := conn.NC.Request("bench.echo", payload, 10*time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// bareJetStream sets up skein's durable path with nothing of skein's in it: a
// work-queue stream and its consumer on the agent's connection, which
// publishes each result into a results stream and then acks; the client
// subscribes to the result, publishes the command without waiting for its
// ack, and waits. With stored, as skein's durable path does, the client takes
// the result only as the results stream republishes it once stored; the
// agent publishes it with a reply subject it listens on, waits for
// JetStream's acknowledgement of storing it there, and acks the command a
// millisecond later. It returns one round trip.
func bareJetStream(b testing.TB, ctx context.Context, client, agent *bus.Conn) func(payload []byte, stored bool) error {
	b.Helper()
	for _, cfg := range []jetstream.StreamConfig{
		{Name: "BENCH_CMDS", Subjects: []string{"bench.cmd.>"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage},
		{Name: "BENCH_RES", Subjects: []string{"bench.res.>"}, Storage: jetstream.FileStorage, MaxMsgsPerSubject: 1,
			RePublish: &jetstream.RePublish{Source: "bench.res.*", Destination: "bench.stored.{{wildcard(1)}}"}},
	} {
		if _, err := client.JS.CreateOrUpdateStream(ctx, cfg); err != nil {
			b.Fatal(err)
		}
	}
	var mu sync.Mutex
	acks := map[string]chan struct{}{}
	asub, err := agent.NC.Subscribe("bench.ack.*", func(m *nats.Msg) {
		mu.Lock()
		ch := acks[strings.TrimPrefix(m.Subject, "bench.ack.")]
		mu.Unlock()
		if ch != nil {
			close(ch)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = asub.Unsubscribe() })
	cons, err := agent.JS.CreateOrUpdateConsumer(ctx, "BENCH_CMDS", jetstream.ConsumerConfig{Durable: "bench", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		id := m.Headers().Get(nats.MsgIdHdr)
		if m.Headers().Get("Bench-Stored") == "" {
			if _, err := agent.JS.PublishMsg(ctx, &nats.Msg{Subject: "bench.res." + id, Data: m.Data()}, jetstream.WithMsgID("r-"+id)); err == nil {
				_ = m.DoubleAck(ctx)
			}
			return
		}
		stored := make(chan struct{})
		mu.Lock()
		acks[id] = stored
		mu.Unlock()
		r := nats.NewMsg("bench.res." + id)
		r.Data, r.Reply = m.Data(), "bench.ack."+id
		r.Header.Set(nats.MsgIdHdr, "r-"+id)
		if agent.NC.PublishMsg(r) == nil {
			<-stored
			// A moment later, as skein does (workers.ackDelay).
			time.AfterFunc(time.Millisecond, func() { _ = m.DoubleAck(ctx) })
		}
		mu.Lock()
		delete(acks, id)
		mu.Unlock()
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cc.Stop)
	return func(payload []byte, stored bool) error {
		id := events.NewID()
		res := make(chan *nats.Msg, 2)
		subject := "bench.res." + id
		cmd := nats.NewMsg("bench.cmd." + id)
		cmd.Data = payload
		if stored {
			subject = "bench.stored." + id
			cmd.Header.Set("Bench-Stored", "1")
		}
		sub, err := client.NC.ChanSubscribe(subject, res)
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		if _, err := client.JS.PublishMsgAsync(cmd, jetstream.WithMsgID(id)); err != nil {
			return err
		}
		select {
		case <-res:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no result for %s", id)
		}
		return nil
	}
}

// BenchmarkThroughput sends no-op commands to one agent with many in flight
// and reports commands per second; each must be answered exactly once.
func BenchmarkThroughput(b *testing.B) {
	conn, url, a := testutil.AuthBus(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pingAgent(b, ctx, url, a)
	client := bus.NewClient(conn, "bench")
	testutil.Eventually(b, 10*time.Second, func() bool {
		env, _ := client.NewCommand("s1", events.TypePing, "", events.Ping{})
		cctx, c := context.WithTimeout(ctx, 2*time.Second)
		defer c()
		_, err := client.Do(cctx, bus.Call{Envelope: env})
		return err == nil
	}, "agent never answered")

	const inFlight = 256
	var mu sync.Mutex
	answers := map[string]int{}
	var answered atomic.Int64
	done := make(chan struct{}, 1)
	var want int64
	// One subscription for every result, as a busy client would have.
	sub, err := conn.NC.Subscribe(bus.AllResults(), func(m *nats.Msg) {
		env, err := events.Decode(m.Data)
		if err != nil {
			return
		}
		var r events.Result
		if env.Payload(&r) != nil || !r.OK {
			return
		}
		mu.Lock()
		answers[r.Command]++
		mu.Unlock()
		if answered.Add(1) == want {
			done <- struct{}{}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	msgs := make([]*nats.Msg, b.N)
	ids := make([]string, b.N)
	for i := range msgs {
		env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{})
		if err != nil {
			b.Fatal(err)
		}
		raw, _ := env.Marshal()
		if msgs[i], err = client.CommandMsg(env, raw); err != nil {
			b.Fatal(err)
		}
		ids[i] = env.ID
	}
	want = int64(b.N)
	b.ResetTimer()
	start := time.Now()
	for i := range msgs {
		// Keep at most inFlight commands unanswered.
		for int64(i)-answered.Load() >= inFlight {
			time.Sleep(50 * time.Microsecond)
		}
		if _, err := conn.JS.PublishMsgAsync(msgs[i], jetstream.WithMsgID(ids[i])); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("%d of %d commands answered", answered.Load(), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cmds/s")
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if answers[id] != 1 {
			b.Fatalf("command %s answered %d times, want once", id, answers[id])
		}
	}
}
