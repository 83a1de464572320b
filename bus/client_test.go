package bus_test

import (
	"context"
	"encoding/json"
	"errors"
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

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestEnsureIsIdempotent(t *testing.T) {
	conn, _ := testutil.Bus(t) // calls Ensure once
	ctx := ctxT(t, 10*time.Second)

	// Something stored before a second Ensure must survive it.
	if _, err := conn.JS.Publish(ctx, bus.CommandSubject("s1", events.TypePing), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	spec, _ := events.StateOf[events.Container]()
	kv, err := conn.JS.KeyValue(ctx, spec.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "web", []byte(`{"name":"web"}`)); err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		if err := bus.Ensure(ctx, conn.JS, 1); err != nil {
			t.Fatalf("Ensure #%d: %v", i+2, err)
		}
	}
	if err := bus.WaitReady(ctx, conn.JS); err != nil {
		t.Fatal(err)
	}

	for _, want := range bus.StreamConfigs(1) {
		st, err := conn.JS.Stream(ctx, want.Name)
		if err != nil {
			t.Fatalf("stream %s: %v", want.Name, err)
		}
		got := st.CachedInfo().Config
		if got.Retention != want.Retention || (want.Duplicates != 0 && got.Duplicates != want.Duplicates) || got.MaxAge != want.MaxAge || got.Replicas != 1 {
			t.Errorf("stream %s config = retention %v dup %s age %s, want %v %s %s", want.Name, got.Retention, got.Duplicates, got.MaxAge, want.Retention, want.Duplicates, want.MaxAge)
		}
	}
	cmds, err := conn.JS.Stream(ctx, bus.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cmds.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Retention != jetstream.WorkQueuePolicy {
		t.Errorf("commands stream retention = %v, want work queue", info.Config.Retention)
	}
	if info.State.Msgs != 1 {
		t.Errorf("commands stream holds %d messages after Ensure, want the 1 queued before", info.State.Msgs)
	}
	if e, err := kv.Get(ctx, "web"); err != nil || string(e.Value()) != `{"name":"web"}` {
		t.Errorf("container record after Ensure: %v %v", e, err)
	}
	for _, b := range bus.BucketConfigs(1) {
		if _, err := conn.JS.KeyValue(ctx, b.Bucket); err != nil {
			t.Errorf("bucket %s: %v", b.Bucket, err)
		}
	}
}

// agent runs a worker runtime for server on its own connection, answering pings.
func agent(t *testing.T, url, server string) {
	t.Helper()
	conn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agent-" + server, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	rt := workers.NewRuntime(conn, server, zerolog.Nop())
	workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: func(ctx context.Context, req *workers.Request, p events.Ping) (events.Pong, error) {
		if p.Note == "fail" {
			return events.Pong{}, workers.Conflict("asked to fail")
		}
		if p.Note == "slow" {
			time.Sleep(500 * time.Millisecond)
		}
		return events.Pong{Server: server, Note: p.Note, Time: time.Now().UTC()}, nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("runtime: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("runtime did not stop")
		}
		conn.Close()
	})
}

func TestDoReturnsThePong(t *testing.T) {
	conn, url := testutil.Bus(t)
	agent(t, url, "s1")
	client := bus.NewClient(conn, "cli")
	ctx := ctxT(t, 15*time.Second)

	env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{Note: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Do(ctx, bus.Call{Envelope: env})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.Command != env.ID || res.CommandType != events.TypePing {
		t.Fatalf("result = %+v", res)
	}
	var pong events.Pong
	if err := json.Unmarshal(res.Output, &pong); err != nil {
		t.Fatalf("output %s: %v", res.Output, err)
	}
	if pong.Server != "s1" || pong.Note != "hello" || pong.Time.IsZero() {
		t.Errorf("pong = %+v", pong)
	}

	// The result is stored: a client that missed it live can still read it.
	got, ok, err := client.LookupResult(ctx, "s1", env.ID)
	if err != nil || !ok {
		t.Fatalf("LookupResult(%s) = %v %v", env.ID, ok, err)
	}
	if got.Command != env.ID || !got.OK || string(got.Output) != string(res.Output) {
		t.Errorf("stored result = %+v, want %+v", got, res)
	}
	// So can a fresh client, and WaitResult returns it at once.
	other := bus.NewClient(conn, "cli2")
	waited, err := other.WaitResult(ctx, "", env.ID, nil)
	if err != nil || waited.Command != env.ID || !waited.OK {
		t.Errorf("WaitResult = %+v, %v", waited, err)
	}
}

func TestDoReturnsTheCommandError(t *testing.T) {
	conn, url := testutil.Bus(t)
	agent(t, url, "s1")
	client := bus.NewClient(conn, "cli")
	env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{Note: "fail"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Do(ctxT(t, 15*time.Second), bus.Call{Envelope: env})
	var ce *bus.CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("Do error = %T %v, want *bus.CommandError", err, err)
	}
	if ce.Code != workers.CodeConflict || ce.Message != "asked to fail" {
		t.Errorf("CommandError = %+v", ce)
	}
	if res == nil || res.OK || res.Error == nil || res.Error.Code != workers.CodeConflict {
		t.Errorf("result = %+v", res)
	}
}

func TestDoReportsProgress(t *testing.T) {
	conn, url := testutil.Bus(t)
	aconn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agent", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer aconn.Close()
	seen := make(chan events.Progress, 4)
	rt := workers.NewRuntime(aconn, "s1", zerolog.Nop())
	workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: func(ctx context.Context, req *workers.Request, p events.Ping) (events.Pong, error) {
		// Report until the caller has seen it, so the test does not race the result.
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			req.Progress("warm", "warming up")
			select {
			case <-ctx.Done():
				return events.Pong{}, ctx.Err()
			case <-tick.C:
				if len(seen) > 0 {
					return events.Pong{Server: "s1", Time: time.Now().UTC()}, nil
				}
			}
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rt.Run(ctx) }()
	defer func() { cancel(); <-done }()

	client := bus.NewClient(conn, "cli")
	env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	_, err = client.Do(ctxT(t, 15*time.Second), bus.Call{Envelope: env, Progress: func(p events.Progress) {
		once.Do(func() { seen <- p })
	}})
	if err != nil {
		t.Fatal(err)
	}
	p := <-seen
	if p.Command != env.ID || p.Step != "warm" || p.Message != "warming up" {
		t.Errorf("progress = %+v", p)
	}
}

func TestLookupResultOfUnknownCommand(t *testing.T) {
	conn, _ := testutil.Bus(t)
	client := bus.NewClient(conn, "cli")
	res, ok, err := client.LookupResult(ctxT(t, 5*time.Second), "", events.NewID())
	if err != nil || ok || res != nil {
		t.Errorf("LookupResult of a command never answered = %+v %v %v, want nothing", res, ok, err)
	}
}

func TestDoWithoutAgentTimesOut(t *testing.T) {
	conn, _ := testutil.Bus(t)
	client := bus.NewClient(conn, "cli")
	env, err := client.NewCommand("nobody", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = client.Do(ctxT(t, 1500*time.Millisecond), bus.Call{Envelope: env})
	if !errors.Is(err, bus.ErrNoResult) {
		t.Fatalf("Do = %v, want ErrNoResult", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Do took %s with a 1.5s deadline", d)
	}
	// The command stays queued for when the agent comes.
	st, err := conn.JS.Stream(ctxT(t, 5*time.Second), bus.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetLastMsgForSubject(ctxT(t, 5*time.Second), bus.CommandSubject("nobody", events.TypePing)); err != nil {
		t.Errorf("command not queued: %v", err)
	}
}

func TestQueuedCommandIsAnsweredWhenTheAgentComes(t *testing.T) {
	conn, url := testutil.Bus(t)
	client := bus.NewClient(conn, "cli")
	ctx := ctxT(t, 15*time.Second)
	env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{Note: "later"})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Send(ctx, env); err != nil {
		t.Fatal(err)
	}
	agent(t, url, "s1")
	res, err := client.WaitResult(ctx, "s1", env.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var pong events.Pong
	if err := json.Unmarshal(res.Output, &pong); err != nil || pong.Note != "later" {
		t.Errorf("pong = %+v %v", pong, err)
	}
}

func TestNewCommand(t *testing.T) {
	client := bus.NewClient(nil, "cli")
	tests := []struct {
		name    string
		server  string
		id      string
		payload any
		ok      bool
	}{
		{"fresh id", "s1", "", events.ContainerAction{Name: "web"}, true},
		{"chosen id", "s1", "my-id_1", events.ContainerAction{Name: "web"}, true},
		{"server with a dot", "s.1", "", events.ContainerAction{Name: "web"}, false},
		{"empty server", "", "", events.ContainerAction{Name: "web"}, false},
		{"wildcard server", "*", "", events.ContainerAction{Name: "web"}, false},
		{"id with a dot", "s1", "a.b", events.ContainerAction{Name: "web"}, false},
		{"bad payload", "s1", "", events.ContainerAction{Name: "1web"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := client.NewCommand(tc.server, events.TypeStop, tc.id, tc.payload)
			if (err == nil) != tc.ok {
				t.Fatalf("NewCommand = %v, want ok %v", err, tc.ok)
			}
			if !tc.ok {
				return
			}
			if tc.id != "" && env.ID != tc.id {
				t.Errorf("id = %q, want %q", env.ID, tc.id)
			}
			if env.Server != tc.server || env.Source != "cli" || env.Type != events.TypeStop {
				t.Errorf("envelope = %+v", env)
			}
		})
	}
}

// TestLastMsg: the last message of a subject, read from the stream's leader;
// nil when the subject has none.
func TestLastMsg(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subj := bus.ResultSubject("s1", "cmd-1")
	if got, err := bus.LastMsg(ctx, conn.NC, bus.StreamResults, subj); err != nil || got != nil {
		t.Fatalf("before any result: %q, %v; want nil, nil", got, err)
	}
	for _, data := range []string{`{"n":1}`, `{"n":2}`} {
		if _, err := conn.JS.Publish(ctx, subj, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := bus.LastMsg(ctx, conn.NC, bus.StreamResults, subj); err != nil || string(got) != `{"n":2}` {
		t.Fatalf("LastMsg = %q, %v; want the second", got, err)
	}
	if _, err := bus.LastMsg(ctx, conn.NC, "NO_SUCH_STREAM", subj); err == nil {
		t.Error("a stream that does not exist: no error")
	}
}

// TestStreamRepublishesEachStoredResultOnce: the results stream republishes
// a result on its stored-result subject once stored, with the stream's
// headers; a copy published again (an agent storing its result again after a
// lost acknowledgement, or repeating it for a redelivered command) is
// refused, counts as stored, and is not republished: what a client takes
// there is what the stream keeps.
func TestStreamRepublishesEachStoredResultOnce(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 15*time.Second)
	got := make(chan *nats.Msg, 8)
	sub, err := conn.NC.ChanSubscribe(bus.StoredResultSubject("s9", "*"), got)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := conn.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	out, err := bus.NewResultPublisher(conn, "s9")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	publish := func(id, data string) {
		t.Helper()
		if err := out.Publish(ctx, id, []byte(data)); err != nil {
			t.Fatalf("publishing %s %q: %v", id, data, err)
		}
	}
	next := func() *nats.Msg {
		t.Helper()
		select {
		case m := <-got:
			return m
		case <-ctx.Done():
			t.Fatal("nothing republished")
			return nil
		}
	}
	publish("c1", "first")
	publish("c1", "again")
	results, err := conn.JS.Stream(ctx, bus.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	first, err := results.GetLastMsgForSubject(ctx, bus.ResultSubject("s9", "c1"))
	if err != nil || string(first.Data) != "first" {
		t.Fatalf("the stream keeps %v, want the first copy: %v", first, err)
	}
	// The stream republishes in order: c2 comes after anything of c1's.
	publish("c2", "marker")
	var seen []string
	for {
		m := next()
		seen = append(seen, m.Subject+"="+string(m.Data))
		if m.Subject == bus.StoredResultSubject("s9", "c2") {
			break
		}
		if m.Subject != bus.StoredResultSubject("s9", "c1") || string(m.Data) != "first" {
			t.Errorf("republished %s %q, want c1's stored result", m.Subject, m.Data)
		}
		if s := m.Header.Get(jetstream.StreamHeader); s != bus.StreamResults {
			t.Errorf("republished with stream header %q, want %s", s, bus.StreamResults)
		}
		if s := m.Header.Get(jetstream.SequenceHeader); s != fmt.Sprint(first.Sequence) {
			t.Errorf("republished with sequence %q, want %d", s, first.Sequence)
		}
	}
	if len(seen) != 2 {
		t.Errorf("republished %v, want c1's result once, then c2's", seen)
	}
}

// A result that arrives while the client reads the results stream (one
// between leaders: the read waits up to 2 s) is taken at once, not after
// the read (red: 2.25 s, the read's whole wait).
func TestAResultArrivingWhileAReadWaitsIsTaken(t *testing.T) {
	conn, url := testutil.Bus(t)
	agent(t, url, "s1")
	client := bus.NewClient(conn, "cli")
	bus.SetLookup(client, func(ctx context.Context, _, _ string) (*events.Result, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		<-ctx.Done()
		return nil, false, ctx.Err()
	})
	env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{Note: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := client.Do(ctxT(t, 15*time.Second), bus.Call{Envelope: env})
	if err != nil || !res.OK {
		t.Fatalf("Do = %+v, %v", res, err)
	}
	// The agent takes 500 ms; the client's first read began at 250 ms.
	if took := time.Since(start); took > time.Second {
		t.Errorf("the result came %v after the command, want within 1 s: held behind a waiting read", took)
	}
}

// A command published to a commands stream that drops it without a word
// (a stream between leaders) is published again within a look (250 ms) of
// the stream's return, not after the publish's 2 s timeout (red: stored
// after 2.0 s).
func TestACommandDroppedBetweenLeadersIsSentAgainSoon(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 15*time.Second)
	if err := conn.JS.DeleteStream(ctx, bus.StreamCommands); err != nil {
		t.Fatal(err)
	}
	// Someone hears the subject and answers nothing, as the followers of a
	// stream between leaders do.
	sub, err := conn.NC.SubscribeSync(bus.CommandSubject("s1", events.TypePing))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	client := bus.NewClient(conn, "cli")
	env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	go func() { _, _ = client.Do(ctxT(t, 5*time.Second), bus.Call{Envelope: env}) }()
	// The stream is back 300 ms later.
	time.Sleep(300 * time.Millisecond)
	if err := bus.Ensure(ctx, conn.JS, 1); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	testutil.Eventually(t, 5*time.Second, func() bool {
		st, err := conn.JS.Stream(ctx, bus.StreamCommands)
		return err == nil && st.CachedInfo().State.Msgs == 1
	}, "the command was never stored")
	if late := time.Since(back); late > 600*time.Millisecond {
		t.Errorf("the command was stored %v after the stream came back (%v after it was sent), want within 600 ms", late, time.Since(start))
	}
	st, _ := conn.JS.Stream(ctx, bus.StreamCommands)
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("the stream holds %d copies of the command, want 1", n)
	}
}

// A command whose acks come late (a loaded leader: 600 ms each) is
// confirmed by the first to come, whichever copy it answers (red: every
// ack came after its copy was replaced by the next, and Do said "not
// confirmed by NATS" of a stored command).
func TestACommandAckedLateIsConfirmed(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 30*time.Second)
	if err := conn.JS.DeleteStream(ctx, bus.StreamCommands); err != nil {
		t.Fatal(err)
	}
	var copies atomic.Int32
	sub, err := conn.NC.Subscribe(bus.CommandSubject("s1", events.TypePing), func(m *nats.Msg) {
		n := copies.Add(1)
		go func() {
			time.Sleep(600 * time.Millisecond)
			_ = m.Respond([]byte(fmt.Sprintf(`{"stream":%q,"seq":1,"duplicate":%v}`, bus.StreamCommands, n > 1)))
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	client := bus.NewClient(conn, "cli")
	env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Do(ctxT(t, 3*time.Second), bus.Call{Envelope: env})
	if !errors.Is(err, bus.ErrNoResult) || !strings.Contains(err.Error(), "stays queued") {
		t.Fatalf("Do = %v, want no result yet for a command JetStream acknowledged (%d copies sent)", err, copies.Load())
	}
}

// A command a stream drops is sent again, but holds few of the
// connection's pending acks meanwhile (red: 6 for one command, and 900
// commands at once failed on the publisher's limit).
func TestResentCommandHoldsFewAcks(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 30*time.Second)
	if err := conn.JS.DeleteStream(ctx, bus.StreamCommands); err != nil {
		t.Fatal(err)
	}
	sub, err := conn.NC.SubscribeSync(bus.CommandSubject("s1", events.TypePing))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	client := bus.NewClient(conn, "cli")
	env, err := client.NewCommand("s1", events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := client.Do(ctxT(t, 4*time.Second), bus.Call{Envelope: env}); done <- err }()
	most := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		most = max(most, conn.JS.PublishAsyncPending())
	}
	if most > 3 {
		t.Errorf("one unacknowledged command held %d pending acks, want at most 3", most)
	}
	if n, _, _ := sub.Pending(); n < 2 {
		t.Errorf("the command was sent %d times in 3 s of a stream dropping it, want it sent again", n)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "not confirmed") {
		t.Errorf("Do = %v, want not confirmed", err)
	}
}
