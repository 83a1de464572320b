package workers_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
)

func zzDurable(b *testing.B, client *bus.Client, agent *bus.Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt := workers.NewRuntime(agent, "s1", zerolog.Nop())
	pong := func(ctx context.Context, req *workers.Request, p events.Ping) (events.Pong, error) {
		return events.Pong{Server: "s1", Time: time.Now().UTC()}, nil
	}
	workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: pong})
	go rt.Run(ctx)
	do := func() error {
		env, _ := client.NewCommand("s1", events.TypePing, "", events.Ping{})
		cctx, c := context.WithTimeout(ctx, 10*time.Second)
		defer c()
		_, err := client.Do(cctx, bus.Call{Envelope: env})
		return err
	}
	testutil.Eventually(b, 10*time.Second, func() bool { return do() == nil }, "no answer")
	b.ResetTimer()
	for b.Loop() {
		if err := do(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkZZ(b *testing.B) {
	b.Run("noauth", func(b *testing.B) {
		conn, url := testutil.Bus(b)
		agent, _ := bus.Connect(bus.ConnOptions{URL: url, Log: zerolog.Nop()})
		defer agent.Close()
		zzDurable(b, bus.NewClient(conn, "b"), agent)
	})
	b.Run("auth-nomac", func(b *testing.B) {
		conn, url, a := testutil.AuthBus(b)
		agent := testutil.Connect(b, url, a, bus.Role{Kind: "agent", Server: "s1"})
		conn.Keys, agent.Keys = nil, nil
		zzDurable(b, bus.NewClient(conn, "b"), agent)
	})
	b.Run("auth-mac", func(b *testing.B) {
		conn, url, a := testutil.AuthBus(b)
		agent := testutil.Connect(b, url, a, bus.Role{Kind: "agent", Server: "s1"})
		zzDurable(b, bus.NewClient(conn, "b"), agent)
	})
}
