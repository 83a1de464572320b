package bus_test

import (
	"context"
	"encoding/json"
	"errors"
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

// TestAnotherAgentCannotAnswerForAServer: agent s2 tries each way found (by
// review) to make a client that waits for a command of s1 take a result s1
// never stored: its own result stored for s1's command id; a direct get
// answered on s1's stored-result subject, of an event of s2's carrying the
// results stream's headers; a push consumer of s2's own key delivering such
// a message there. The client takes none of them; s1's real result, once its
// agent runs, is taken.
func TestAnotherAgentCannotAnswerForAServer(t *testing.T) {
	url, a := authBus(t)
	admin := connectAs(t, url, a, bus.Role{Kind: "admin"})
	s2 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	ctx := ctxT(t, 60*time.Second)
	client := bus.NewClient(admin, "cli")
	env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	id := env.ID
	forged := []byte(`{"id":"result-` + id + `","type":"result","v":1,"time":"2026-11-26T10:00:00Z","source":"agent/s1","server":"s1",` +
		`"data":{"command":"` + id + `","command_type":"server.ping","ok":true,"output":{"server":"s1","note":"forged","time":"2026-11-26T10:00:00Z"}}}`)
	witness := make(chan *nats.Msg, 8)
	wsub, err := admin.NC.ChanSubscribe(bus.StoredResultSubject("s1", id), witness)
	if err != nil {
		t.Fatal(err)
	}
	defer wsub.Unsubscribe()

	type outcome struct {
		res *events.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		dctx, cancel := context.WithTimeout(ctx, 6*time.Second)
		defer cancel()
		res, err := client.Do(dctx, bus.Call{Envelope: env})
		done <- outcome{res, err}
	}()
	// Do listens before it publishes: once the command is queued, it listens.
	commands, err := admin.JS.Stream(ctx, bus.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := commands.GetLastMsgForSubject(ctx, bus.CommandSubject("s1", events.TypePing))
		return err == nil
	}, "the command was never queued")

	forgedHeaders := func(m *nats.Msg) *nats.Msg {
		m.Header.Set(jetstream.StreamHeader, bus.StreamResults)
		m.Header.Set(jetstream.SubjectHeader, bus.ResultSubject("s1", id))
		m.Header.Set(jetstream.SequenceHeader, "1")
		m.Data = forged
		return m
	}
	// 1. Its own result for s1's command.
	if _, err := s2.JS.Publish(ctx, bus.ResultSubject("s2", id), forged); err != nil {
		t.Fatal(err)
	}
	// 2. A direct get of its own event, answered on s1's stored-result subject.
	if _, err := s2.JS.PublishMsg(ctx, forgedHeaders(nats.NewMsg(bus.EventSubject("s2", "forge")))); err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(map[string]string{"last_by_subj": bus.EventSubject("s2", "forge")})
	if err := s2.NC.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET." + bus.StreamEvents, Reply: bus.StoredResultSubject("s1", id), Data: req}); err != nil {
		t.Fatal(err)
	}
	// 3. A push consumer of its own key, delivering there.
	bucket := bus.BucketConfigs(1)[0].Bucket
	key := "$KV." + bucket + ".s2.forge"
	if _, err := s2.JS.PublishMsg(ctx, forgedHeaders(nats.NewMsg(key))); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"stream_name": "KV_" + bucket, "config": map[string]any{
		"name": "forge", "deliver_subject": bus.StoredResultSubject("s1", id), "filter_subject": key,
		"deliver_policy": "last", "ack_policy": "none"}})
	if r, err := s2.NC.RequestWithContext(ctx, "$JS.API.CONSUMER.CREATE.KV_"+bucket+".forge", body); err != nil {
		t.Fatal(err)
	} else if jsonHas(r.Data, "error") {
		t.Fatalf("the push consumer was not made: %s", r.Data)
	}
	// Both reached the subject the client listens on.
	for range 2 {
		select {
		case <-witness:
		case <-ctx.Done():
			t.Fatal("a forged message never reached the stored-result subject")
		}
	}
	o := <-done
	if o.res != nil || !errors.Is(o.err, bus.ErrNoResult) {
		t.Fatalf("the client took a result s1 never stored: %+v, %v", o.res, o.err)
	}

	// s1's agent answers: its result is taken.
	s1 := connectAs(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	rt := workers.NewRuntime(s1, "s1", zerolog.Nop())
	workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: func(ctx context.Context, req *workers.Request, p events.Ping) (events.Pong, error) {
		return events.Pong{Server: "s1", Note: "real", Time: time.Now().UTC()}, nil
	}})
	rctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- rt.Run(rctx) }()
	defer func() { stop(); <-ran }()
	res, err := client.WaitResult(ctx, "s1", id, nil)
	if err != nil {
		t.Fatal(err)
	}
	var pong events.Pong
	if err := json.Unmarshal(res.Output, &pong); err != nil || pong.Note != "real" {
		t.Errorf("took %s, want s1's real answer", res.Output)
	}
}

// jsonHas says whether the JSON object in data has key at its top.
func jsonHas(data []byte, key string) bool {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(data, &m)
	_, ok := m[key]
	return ok
}
