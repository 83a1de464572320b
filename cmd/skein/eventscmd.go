package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

func eventsCmd(g *globals) *cobra.Command {
	var follow bool
	var typ, server string
	var since time.Duration
	c := &cobra.Command{
		Use:   "events [--follow] [--type T]",
		Short: "Show the cluster's events; --follow waits for new ones",
		Long: `Show the cluster's events from the events stream.

Events are published on skein.event.<server>.<type>, e.g. skein.event.s1.container.started;
any NATS client can subscribe there. --type takes a type or a prefix with '*'
(container.*). With -o json each event is printed as one JSON envelope per line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cl, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer cl.close()
			cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.EventFilter(server, typ)}}
			switch {
			case since > 0:
				t := time.Now().Add(-since)
				cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
			case follow:
				cfg.DeliverPolicy = jetstream.DeliverNewPolicy
			default:
				t := time.Now().Add(-time.Hour)
				cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
			}
			cons, err := cl.conn.JS.OrderedConsumer(ctx, bus.StreamEvents, cfg)
			if err != nil {
				return notReady(err)
			}
			if !follow {
				return drain(ctx, g, cons)
			}
			// Say when we are listening, so that scripts know no event is missed from here on.
			fmt.Fprintln(os.Stderr, "following events (Ctrl-C to stop)")
			it, err := cons.Messages()
			if err != nil {
				return err
			}
			go func() { <-ctx.Done(); it.Stop() }()
			for {
				m, err := it.Next()
				if err != nil {
					if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
						return nil
					}
					return err
				}
				printEvent(g, m.Data())
			}
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "wait for new events")
	c.Flags().StringVar(&typ, "type", "", "only events of this type, e.g. container.started or container.*")
	c.Flags().StringVarP(&server, "server", "s", "", "only events about this server")
	c.Flags().DurationVar(&since, "since", 0, "start this far back (default: the last hour, or now with --follow)")
	g.addOutputFlag(c)
	return c
}

// drain prints what is stored and returns once caught up.
func drain(ctx context.Context, g *globals, cons jetstream.Consumer) error {
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			printEvent(g, m.Data())
		}
		if n == 0 {
			return nil
		}
	}
}

func printEvent(g *globals, raw []byte) {
	if g.output == "json" {
		fmt.Println(string(raw))
		return
	}
	env, err := events.Decode(raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, "skipping bad event:", err)
		return
	}
	detail := string(env.Data)
	var ce events.ContainerEvent
	if spec, _ := events.Lookup(env.Type); spec.Go == reflectContainerEvent && env.Payload(&ce) == nil {
		detail = fmt.Sprintf("%s status=%s ipv4=%s cause=%s", ce.Name, ce.Status, orDash(ce.IPv4), ce.Cause)
	}
	fmt.Printf("%s  %-4s  %-20s  %s\n", env.Time.Local().Format("15:04:05.000"), env.Server, env.Type, detail)
}
