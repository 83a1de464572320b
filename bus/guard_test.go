package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

// TestAConsumerDeliveringOntoAnotherServersQueueIsUndone (found reviewing
// issue 23): agent s1 makes a consumer of a bucket it reads that delivers
// onto s2's MSG.NEXT subject, so that a message of its own, stored under its
// key, reaches s2's command consumer as a pull request whose reply is
// nobody's: s2's commands would go to nowhere until their ack wait ends, and
// be dropped after MaxDeliver such thefts. The bus's server deletes the
// consumer and revokes s1; s2 runs the admin's command at once, delivered
// once.
func TestAConsumerDeliveringOntoAnotherServersQueueIsUndone(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 60*time.Second)
	s2cons := commandConsumerOf(t, admin, "s2")

	bucket := bus.BucketConfigs(1)[0].Bucket
	key := "$KV." + bucket + ".s1.pull"
	body, _ := json.Marshal(map[string]any{"stream_name": "KV_" + bucket, "config": map[string]any{
		"name": "steal", "filter_subject": key, "deliver_policy": "new", "ack_policy": "explicit",
		"deliver_subject": "$JS.API.CONSUMER.MSG.NEXT." + bus.StreamCommands + "." + bus.AgentConsumerName("s2")}})
	if _, err := s1.NC.Request("$JS.API.CONSUMER.CREATE.KV_"+bucket+".steal."+key, body, 2*time.Second); err != nil {
		t.Fatalf("s1 could not make the consumer: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := admin.JS.Consumer(ctx, "KV_"+bucket, "steal")
		return errors.Is(err, jetstream.ErrConsumerNotFound)
	}, "s1's consumer delivering onto s2's queue was not deleted")
	works := func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := s1.JS.Publish(pctx, bus.EventSubject("s1", "probe"), []byte("{}"))
		return err == nil
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return !works() }, "s1 still works after making it")

	// What s1 would have delivered there, stored if it still can: a pull
	// request waiting at s2's consumer ahead of s2's own.
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	_, _ = s1.JS.Publish(pctx, key, []byte(`{"batch":10,"expires":60000000000}`))
	cancel()
	ran := pingRecorder(t, s2, "s2")
	client := bus.NewClient(admin, "cli")
	env, err := client.NewCommand("s2", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	// Well within the ack wait (10 s) a stolen command would cost.
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := client.Do(dctx, bus.Call{Envelope: env}); err != nil {
		t.Fatalf("s2 did not answer at once: %v", err)
	}
	if got := ran(); !slices.Equal(got, []string{env.ID}) {
		t.Errorf("s2 ran %v", got)
	}
	if info, err := s2cons.Info(ctx); err != nil || info.Delivered.Consumer != 1 {
		t.Errorf("s2's command was delivered %d times (%v), want once", info.Delivered.Consumer, err)
	}
}

// TestRevokingARoleDeletesTheConsumersItMade (issue 23): a durable consumer
// agent s1 made on a bucket it reads is deleted when s1 is revoked; the
// observer's, made on the events stream, stays.
func TestRevokingARoleDeletesTheConsumersItMade(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	obs := connectAs(t, url, a, bus.Role{Kind: "observer"})
	ctx := ctxT(t, 30*time.Second)
	bucket := bus.BucketConfigs(1)[0].Bucket
	if _, err := s1.JS.CreateOrUpdateConsumer(ctx, "KV_"+bucket, jetstream.ConsumerConfig{Durable: "s1-kept", FilterSubject: "$KV." + bucket + ".s1.>"}); err != nil {
		t.Fatalf("s1 making a durable consumer of its keys: %v", err)
	}
	if _, err := obs.JS.CreateOrUpdateConsumer(ctx, bus.StreamEvents, jetstream.ConsumerConfig{Durable: "observer-kept"}); err != nil {
		t.Fatalf("the observer making a durable consumer of the events: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := admin.JS.Consumer(ctx, "KV_"+bucket, "s1-kept")
		return err == nil
	}, "s1's consumer is not there")
	if _, err := a.Revoke(bus.Role{Kind: "agent", Server: "s1"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := admin.JS.Consumer(ctx, "KV_"+bucket, "s1-kept")
		return errors.Is(err, jetstream.ErrConsumerNotFound)
	}, "the consumer revoked s1 made is still there")
	if _, err := admin.JS.Consumer(ctx, bus.StreamEvents, "observer-kept"); err != nil {
		t.Errorf("the observer's consumer went with s1's revocation: %v", err)
	}
}
