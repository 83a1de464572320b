package workers_test

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

// harness is an embedded bus with one worker runtime for server s1 on its own connection.
type harness struct {
	conn   *bus.Conn
	client *bus.Client
}

const server = "s1"

func newHarness(t *testing.T, register func(rt *workers.Runtime)) *harness {
	t.Helper()
	conn, url := testutil.Bus(t)
	aconn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agent", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	rt := workers.NewRuntime(aconn, server, zerolog.Nop())
	register(rt)
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
			t.Error("runtime did not stop within 10s")
		}
		aconn.Close()
	})
	return &harness{conn: conn, client: bus.NewClient(conn, "cli")}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// do sends a command to s1 and waits for its result.
func (h *harness) do(t *testing.T, typ, id string, payload any) (*events.Envelope, *events.Result, error) {
	t.Helper()
	env, err := h.client.NewCommand(server, typ, id, payload)
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.client.Do(ctxT(t, 20*time.Second), bus.Call{Envelope: env})
	if errors.Is(err, bus.ErrNoResult) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s: %v", typ, err)
	}
	return env, res, err
}

// publishRaw puts bytes on a command subject as a misbehaving client would.
func (h *harness) publishRaw(t *testing.T, subject string, data []byte, msgID string) *jetstream.PubAck {
	t.Helper()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := h.conn.JS.PublishMsg(ctxT(t, 5*time.Second), &nats.Msg{Subject: subject, Data: data}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ack
}

// waitResult waits for the stored or live result of command id.
func (h *harness) waitResult(t *testing.T, id string) (*events.Result, error) {
	t.Helper()
	res, err := h.client.WaitResult(ctxT(t, 20*time.Second), server, id, nil)
	if errors.Is(err, bus.ErrNoResult) {
		t.Fatalf("no result for %s", id)
	}
	return res, err
}

// drained waits until the command has left the work queue for good: nothing
// pending on s1's consumer, nothing waiting for an ack, nothing in the stream.
func (h *harness) drained(t *testing.T) {
	t.Helper()
	var last string
	testutil.Eventually(t, 10*time.Second, func() bool {
		ctx := ctxT(t, 5*time.Second)
		cons, err := h.conn.JS.Consumer(ctx, bus.StreamCommands, bus.AgentConsumerName(server))
		if err != nil {
			last = err.Error()
			return false
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			last = err.Error()
			return false
		}
		st, err := h.conn.JS.Stream(ctx, bus.StreamCommands)
		if err != nil {
			last = err.Error()
			return false
		}
		si, err := st.Info(ctx)
		if err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("ack pending %d, pending %d, redelivered %d, stream msgs %d", ci.NumAckPending, ci.NumPending, ci.NumRedelivered, si.State.Msgs)
		return ci.NumAckPending == 0 && ci.NumPending == 0 && si.State.Msgs == 0
	}, "commands not drained: %v", lazy(func() any { return last }))
}

// lazy formats its value when printed, so a failure message shows the state at failure.
type lazy func() any

func (l lazy) String() string { return fmt.Sprint(l()) }

func wantCode(t *testing.T, res *events.Result, err error, code string) {
	t.Helper()
	var ce *bus.CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("error = %T %v, want a *bus.CommandError %s", err, err, code)
	}
	if ce.Code != code {
		t.Errorf("error code = %q (%s), want %q", ce.Code, ce.Message, code)
	}
	if res == nil || res.OK || res.Error == nil || res.Error.Code != code {
		t.Errorf("result = %+v, want ok=false code %s", res, code)
	}
}

func pong(ctx context.Context, req *workers.Request, p events.Ping) (events.Pong, error) {
	return events.Pong{Server: server, Time: time.Now().UTC()}, nil
}

func TestPermanentErrorIsNotRetried(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code string
	}{
		{"invalid", workers.Invalid("bad %s", "input"), workers.CodeInvalid},
		{"not found", workers.NotFound("no such thing"), workers.CodeNotFound},
		{"conflict", workers.Conflict("taken"), workers.CodeConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			h := newHarness(t, func(rt *workers.Runtime) {
				workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStop, Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
					calls.Add(1)
					return events.Container{}, tc.err
				}})
			})
			env, res, err := h.do(t, events.TypeStop, "", events.ContainerAction{Name: "web"})
			wantCode(t, res, err, tc.code)
			if res.Error.Message != tc.err.Error() {
				t.Errorf("message = %q, want %q", res.Error.Message, tc.err.Error())
			}
			if res.Command != env.ID || res.CommandType != events.TypeStop {
				t.Errorf("result answers %s %s, want %s %s", res.Command, res.CommandType, env.ID, events.TypeStop)
			}
			h.drained(t)
			if n := calls.Load(); n != 1 {
				t.Errorf("handler ran %d times, want 1", n)
			}
		})
	}
}

func TestTransientErrorIsRetried(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"transient", workers.Transient("incus is busy")},
		{"error of unknown kind", errors.New("connection reset")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var attempts []int
			h := newHarness(t, func(rt *workers.Runtime) {
				workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStart, Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
					mu.Lock()
					attempts = append(attempts, req.Attempt)
					mu.Unlock()
					if req.Attempt < 2 {
						return events.Container{}, tc.err
					}
					return events.Container{Name: "web", Server: server, Status: "Running", Updated: time.Now().UTC()}, nil
				}})
			})
			_, res, err := h.do(t, events.TypeStart, "", events.ContainerAction{Name: "web"})
			if err != nil {
				t.Fatalf("Do = %v, want success on the second attempt", err)
			}
			var c events.Container
			if err := json.Unmarshal(res.Output, &c); err != nil || c.Status != "Running" {
				t.Errorf("output = %s (%v)", res.Output, err)
			}
			h.drained(t)
			mu.Lock()
			defer mu.Unlock()
			if fmt.Sprint(attempts) != "[1 2]" {
				t.Errorf("attempts = %v, want [1 2]", attempts)
			}
		})
	}
}

func TestInvalidMessageIsAnsweredAndDropped(t *testing.T) {
	valid := func(t *testing.T) map[string]any {
		env, err := events.New(events.TypeLaunch, "cli", server, events.Launch{Name: "web", Image: "img"})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := env.Marshal()
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name string
		// make returns the raw message, the Nats-Msg-Id to publish with ("" for none)
		// and the id the result must be published under ("" for the stream sequence).
		make func(t *testing.T) (raw []byte, msgID, resultID string)
	}{
		{"payload breaks the schema", func(t *testing.T) ([]byte, string, string) {
			m := valid(t)
			m["data"] = map[string]any{"name": "1web", "image": "img"}
			raw, _ := json.Marshal(m)
			return raw, m["id"].(string), m["id"].(string)
		}},
		{"payload with an extra field, no msg id", func(t *testing.T) ([]byte, string, string) {
			m := valid(t)
			m["data"] = map[string]any{"name": "web", "image": "img", "cpu": 4}
			raw, _ := json.Marshal(m)
			return raw, "", m["id"].(string)
		}},
		{"envelope without a source", func(t *testing.T) ([]byte, string, string) {
			m := valid(t)
			delete(m, "source")
			raw, _ := json.Marshal(m)
			return raw, "other-id", m["id"].(string)
		}},
		{"envelope without an id", func(t *testing.T) ([]byte, string, string) {
			m := valid(t)
			delete(m, "id")
			raw, _ := json.Marshal(m)
			return raw, "hdr-id-1", "hdr-id-1"
		}},
		{"not JSON", func(t *testing.T) ([]byte, string, string) {
			return []byte("launch web please"), "hdr-id-2", "hdr-id-2"
		}},
		{"not JSON, no id anywhere", func(t *testing.T) ([]byte, string, string) {
			return []byte("{"), "", ""
		}},
		// A result subject longer than NATS's 4 KiB control line cut the
		// agent off the bus at every delivery: such an id is never answered on.
		{"an id of 5,000 characters", func(t *testing.T) ([]byte, string, string) {
			m := valid(t)
			m["id"] = strings.Repeat("a", 5000)
			raw, _ := json.Marshal(m)
			return raw, "", ""
		}},
		{"a message id of 5,000 characters, no id", func(t *testing.T) ([]byte, string, string) {
			m := valid(t)
			delete(m, "id")
			raw, _ := json.Marshal(m)
			return raw, strings.Repeat("b", 5000), ""
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			h := newHarness(t, func(rt *workers.Runtime) {
				workers.Handle(rt, workers.Command[events.Launch, events.Container]{Type: events.TypeLaunch, Run: func(ctx context.Context, req *workers.Request, p events.Launch) (events.Container, error) {
					calls.Add(1)
					return events.Container{}, nil
				}})
			})
			raw, msgID, resultID := tc.make(t)
			ack := h.publishRaw(t, bus.CommandSubject(server, events.TypeLaunch), raw, msgID)
			if resultID == "" {
				resultID = fmt.Sprintf("seq-%d", ack.Sequence)
			}
			res, err := h.waitResult(t, resultID)
			wantCode(t, res, err, workers.CodeInvalid)
			if res.Command != resultID {
				t.Errorf("result answers %q, want %q", res.Command, resultID)
			}
			h.drained(t)
			if n := calls.Load(); n != 0 {
				t.Errorf("handler ran %d times on an invalid message", n)
			}
			// The agent is still on the bus: the next command is answered.
			env, err := events.New(events.TypeLaunch, "cli", server, events.Launch{Name: "web", Image: "img"})
			if err != nil {
				t.Fatal(err)
			}
			next, _ := env.Marshal()
			h.publishRaw(t, bus.CommandSubject(server, events.TypeLaunch), next, env.ID)
			if res, err := h.waitResult(t, env.ID); err != nil || res.Error != nil {
				t.Errorf("the next command after an invalid one: %v %+v", err, res)
			}
		})
	}
}

// A command whose envelope says another type than its subject is refused,
// not run as the envelope's type: a delete sent on the ping subject.
func TestCommandOfAnotherTypeThanItsSubjectIsRejected(t *testing.T) {
	var calls atomic.Int32
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeDelete, Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
			calls.Add(1)
			return events.Container{}, nil
		}})
	})
	env, err := events.New(events.TypeDelete, "cli", server, events.ContainerAction{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := env.Marshal()
	h.publishRaw(t, bus.CommandSubject(server, events.TypePing), raw, env.ID)
	res, err := h.waitResult(t, env.ID)
	wantCode(t, res, err, workers.CodeInvalid)
	if !strings.Contains(res.Error.Message, "sent on subject") {
		t.Errorf("message %q does not say the subject", res.Error.Message)
	}
	h.drained(t)
	if n := calls.Load(); n != 0 {
		t.Errorf("the delete ran %d times from the ping subject", n)
	}
}

func TestCommandForAnotherServerIsRejected(t *testing.T) {
	var calls atomic.Int32
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStop, Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
			calls.Add(1)
			return events.Container{}, nil
		}})
	})
	env, err := events.New(events.TypeStop, "cli", "s2", events.ContainerAction{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := env.Marshal()
	// On s1's subject but addressed to s2 in the envelope.
	h.publishRaw(t, bus.CommandSubject(server, events.TypeStop), raw, env.ID)
	res, err := h.waitResult(t, env.ID)
	wantCode(t, res, err, workers.CodeInvalid)
	if !strings.Contains(res.Error.Message, `"s2"`) {
		t.Errorf("message %q does not name the addressed server", res.Error.Message)
	}
	h.drained(t)
	if n := calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for another server's command", n)
	}
}

func TestCommandWithoutHandlerIsRejected(t *testing.T) {
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: pong})
	})

	t.Run("registered type without a handler here", func(t *testing.T) {
		env, res, err := h.do(t, events.TypeLaunch, "", events.Launch{Name: "web", Image: "img"})
		wantCode(t, res, err, workers.CodeInvalid)
		if res.Command != env.ID || res.CommandType != events.TypeLaunch {
			t.Errorf("result = %+v", res)
		}
		if !strings.Contains(res.Error.Message, events.TypeLaunch) {
			t.Errorf("message %q does not name the command type", res.Error.Message)
		}
		h.drained(t)
	})

	t.Run("type registered nowhere", func(t *testing.T) {
		raw, _ := json.Marshal(map[string]any{
			"id": "frob-1", "type": "container.frobnicate", "v": 1, "time": time.Now().UTC(),
			"source": "cli", "server": server, "data": map[string]any{"name": "web"},
		})
		h.publishRaw(t, bus.CommandSubject(server, "container.frobnicate"), raw, "frob-1")
		res, err := h.waitResult(t, "frob-1")
		wantCode(t, res, err, workers.CodeInvalid)
		if res.CommandType != "container.frobnicate" {
			t.Errorf("result command type = %q", res.CommandType)
		}
		h.drained(t)
	})

	// The runtime keeps serving after rejecting.
	if _, _, err := h.do(t, events.TypePing, "", events.Ping{}); err != nil {
		t.Errorf("ping after rejections: %v", err)
	}
}

func TestHandleRefusesNonCommands(t *testing.T) {
	for _, typ := range []string{events.TypeContainerStarted, events.TypeResult, "container.frobnicate"} {
		t.Run(typ, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Handle(%q) did not panic", typ)
				}
			}()
			workers.Handle(workers.NewRuntime(nil, server, zerolog.Nop()), workers.Command[events.Ping, events.Pong]{Type: typ, Run: pong})
		})
	}
}

func TestHandlerPanicBecomesInternalError(t *testing.T) {
	var calls atomic.Int32
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeRestart, Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
			calls.Add(1)
			var m map[string]int
			m["boom"]++ // nil map write
			return events.Container{}, nil
		}})
		workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: pong})
	})
	_, res, err := h.do(t, events.TypeRestart, "", events.ContainerAction{Name: "web"})
	wantCode(t, res, err, workers.CodeInternal)
	if !strings.Contains(res.Error.Message, events.TypeRestart) {
		t.Errorf("message %q does not name the handler", res.Error.Message)
	}
	h.drained(t)
	if n := calls.Load(); n != 1 {
		t.Errorf("panicking handler ran %d times, want 1", n)
	}
	if _, _, err := h.do(t, events.TypePing, "", events.Ping{}); err != nil {
		t.Errorf("runtime did not survive the panic: %v", err)
	}
}

func TestSameMsgIDRunsOnce(t *testing.T) {
	var calls atomic.Int32
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStop, Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
			n := calls.Add(1)
			return events.Container{Name: "web", Server: server, Status: "Stopped", Image: fmt.Sprint(n), Updated: time.Now().UTC()}, nil
		}})
	})
	env, err := h.client.NewCommand(server, events.TypeStop, "stop-web-1", events.ContainerAction{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := env.Marshal()
	subject := bus.CommandSubject(server, events.TypeStop)
	first := h.publishRaw(t, subject, raw, env.ID)
	second := h.publishRaw(t, subject, raw, env.ID)
	if first.Duplicate || !second.Duplicate {
		t.Errorf("duplicate flags = %v, %v, want false, true", first.Duplicate, second.Duplicate)
	}
	res, err := h.waitResult(t, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	h.drained(t)

	// A client retrying with the same id later gets the first answer, not a second run.
	again, err := h.client.Do(ctxT(t, 20*time.Second), bus.Call{Envelope: env})
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Output) != string(res.Output) {
		t.Errorf("retry got %s, want the first result %s", again.Output, res.Output)
	}
	h.drained(t)
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times for one command id, want 1", n)
	}
}

// TestRedeliveryAfterAnswerIsNotRerun: a command redelivered after its result
// went out (an agent that died between result and ack) is acknowledged, not rerun.
func TestRedeliveryAfterAnswerIsNotRerun(t *testing.T) {
	var calls atomic.Int32
	var firstSeq atomic.Uint64
	var h *harness
	h = newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeDelete, Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
			calls.Add(1)
			// Emulate an earlier incarnation that answered and died before its ack.
			res, _ := events.New(events.TypeResult, "agent/"+server, server, events.Result{Command: req.Envelope.ID, CommandType: events.TypeDelete, OK: false, Error: &events.ErrorInfo{Code: workers.CodeConflict, Message: "earlier answer"}})
			raw, _ := res.Marshal()
			ack, err := h.conn.JS.Publish(ctx, bus.ResultSubject(server, req.Envelope.ID), raw, jetstream.WithMsgID("result-"+req.Envelope.ID))
			if err != nil {
				return events.Container{}, workers.Invalid("test could not store a result: %v", err)
			}
			firstSeq.Store(ack.Sequence)
			return events.Container{}, workers.Transient("crash")
		}})
	})
	env, err := h.client.NewCommand(server, events.TypeDelete, "", events.ContainerAction{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.client.Send(ctxT(t, 5*time.Second), env); err != nil {
		t.Fatal(err)
	}
	res, err := h.waitResult(t, env.ID)
	wantCode(t, res, err, workers.CodeConflict)
	// The redelivery (after the transient backoff) must find the result and ack.
	h.drained(t)
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	stored, ok, err := h.client.LookupResult(ctxT(t, 5*time.Second), server, env.ID)
	if err != nil || !ok || stored.Error == nil || stored.Error.Message != "earlier answer" {
		t.Errorf("stored result replaced: %+v %v %v", stored, ok, err)
	}
	// The repeated answer reached the waiting client, not the stream a second
	// time: the stored result is still the first one (the stream keeps one per
	// command, so a second would replace it under a new sequence).
	st, err := h.conn.JS.Stream(ctxT(t, 5*time.Second), bus.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	subj := bus.ResultSubject(server, env.ID)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		m, err := st.GetLastMsgForSubject(ctxT(t, 5*time.Second), subj)
		if err != nil {
			t.Fatal(err)
		}
		if m.Sequence != firstSeq.Load() {
			t.Fatalf("the result was stored again (sequence %d, first %d): an observer of the results stream sees it twice", m.Sequence, firstSeq.Load())
		}
	}
}

// TestCommandsOnOneResourceAreSerialised: commands whose contract names the
// same lock run one at a time; others run side by side.
func TestCommandsOnOneResourceAreSerialised(t *testing.T) {
	var inFlight, maxInFlight atomic.Int32
	started := make(chan string, 4)
	release := map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{}), "c": make(chan struct{})}
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStop, Lock: func(p events.ContainerAction) string { return "container/" + p.Name }, Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				m := maxInFlight.Load()
				if n <= m || maxInFlight.CompareAndSwap(m, n) {
					break
				}
			}
			started <- p.Name
			select {
			case <-release[p.Name]:
			case <-ctx.Done():
			}
			return events.Container{Name: p.Name, Server: server, Status: "Stopped", Updated: time.Now().UTC()}, nil
		}})
	})
	send := func(name string) *events.Envelope {
		env, err := h.client.NewCommand(server, events.TypeStop, "", events.ContainerAction{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.client.Send(ctxT(t, 5*time.Second), env); err != nil {
			t.Fatal(err)
		}
		return env
	}
	// Different containers run side by side: both handlers are in at once.
	a, b := send("a"), send("b")
	for range 2 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("commands on two containers did not run in parallel")
		}
	}
	close(release["a"])
	close(release["b"])
	for _, env := range []*events.Envelope{a, b} {
		if _, err := h.waitResult(t, env.ID); err != nil {
			t.Fatal(err)
		}
	}
	if m := maxInFlight.Load(); m != 2 {
		t.Errorf("max in flight = %d, want 2", m)
	}

	// Same container: the second waits for the first.
	maxInFlight.Store(0)
	c1, c2 := send("c"), send("c")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("first command on c never started")
	}
	select {
	case <-started:
		t.Fatal("second command on c started while the first ran")
	case <-time.After(300 * time.Millisecond):
	}
	close(release["c"])
	for _, env := range []*events.Envelope{c1, c2} {
		if _, err := h.waitResult(t, env.ID); err != nil {
			t.Fatal(err)
		}
	}
	if m := maxInFlight.Load(); m != 1 {
		t.Errorf("max in flight on one container = %d, want 1", m)
	}
}

// TestResultPublishedAgainNotRerun: a result that cannot be stored (the
// results stream away, as during a NATS leader election) is published again
// until it is, and the command is not run a second time.
func TestResultPublishedAgainNotRerun(t *testing.T) {
	var calls atomic.Int32
	ran := make(chan struct{}, 4)
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: func(ctx context.Context, req *workers.Request, p events.Ping) (events.Pong, error) {
			calls.Add(1)
			ran <- struct{}{}
			return events.Pong{Server: server}, nil
		}})
	})
	ctx := ctxT(t, 30*time.Second)
	var cfg jetstream.StreamConfig
	for _, c := range bus.StreamConfigs(1) {
		if c.Name == bus.StreamResults {
			cfg = c
		}
	}
	// The runtime has found the stream already: take it away only now.
	h.do(t, events.TypePing, "", events.Ping{})
	<-ran
	calls.Store(0)
	if err := h.conn.JS.DeleteStream(ctx, bus.StreamResults); err != nil {
		t.Fatal(err)
	}
	env, err := h.client.NewCommand(server, events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.client.Send(ctx, env); err != nil {
		t.Fatal(err)
	}
	<-ran
	// The result has nowhere to go for 2.1 s (its live copies are published
	// all the same): the client takes none of them, as none is stored.
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 2100*time.Millisecond)
	if res, err := h.client.WaitResult(wctx, server, env.ID, nil); !errors.Is(err, bus.ErrNoResult) {
		t.Fatalf("a result that is not stored was taken: %+v, %v", res, err)
	}
	cancel()
	// Then the stream is back.
	time.Sleep(time.Until(start.Add(2100 * time.Millisecond)))
	if _, err := h.conn.JS.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	res, err := h.waitResult(t, env.ID)
	if err != nil || res == nil || !res.OK {
		t.Fatalf("result %+v, %v", res, err)
	}
	// Published again every 200 ms while a stream's election may last: the
	// client has it soon after the stream is back (a growing wait kept the
	// first command after a NATS node's loss up to a second longer).
	if took := time.Since(back); took > 700*time.Millisecond {
		t.Errorf("the result came %v after the stream was back, want within 700 ms", took)
	}
	h.drained(t)
	if n := calls.Load(); n != 1 {
		t.Errorf("the command ran %d times, want 1", n)
	}
}

// TestStopSendsTheAcksItOwes: a command answered just before its agent stops
// is acknowledged before Run returns (acks go out a moment after the result
// is stored): the work queue is left empty, with nothing to deliver again.
func TestStopSendsTheAcksItOwes(t *testing.T) {
	conn, url := testutil.Bus(t)
	aconn, err := bus.Connect(bus.ConnOptions{URL: url, Name: "agent", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer aconn.Close()
	rt := workers.NewRuntime(aconn, server, zerolog.Nop())
	workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: pong})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	h := &harness{conn: conn, client: bus.NewClient(conn, "cli")}
	if _, res, err := h.do(t, events.TypePing, "", events.Ping{}); err != nil || !res.OK {
		t.Fatalf("ping: %+v %v", res, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runtime did not stop within 10s")
	}
	aconn.Close()
	h.drained(t)
}

// fakeMetrics records what the runtime tells its metrics.
type fakeMetrics struct {
	mu          sync.Mutex
	done        []string // type/outcome
	redelivered []string
	deadline    []string
}

func (f *fakeMetrics) Done(typ, outcome string, queued, handled time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.done = append(f.done, typ+"/"+outcome)
}

func (f *fakeMetrics) Redelivered(typ string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.redelivered = append(f.redelivered, typ)
}

func (f *fakeMetrics) DeadlineHit(typ string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deadline = append(f.deadline, typ)
}

func (f *fakeMetrics) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprint(f.done, f.redelivered, f.deadline)
}

// TestMetricsTold: each answered command is told once with its outcome (a
// transient failure retried is not an answer, its redelivery is told), and a
// handler past its deadline is told as a deadline hit.
func TestMetricsTold(t *testing.T) {
	m := &fakeMetrics{}
	var tries atomic.Int32
	h := newHarness(t, func(rt *workers.Runtime) {
		rt.SetMetrics(m)
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStart, Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
			switch p.Name {
			case "flaky":
				if tries.Add(1) == 1 {
					return events.Container{}, workers.Transient("not yet")
				}
			case "missing":
				return events.Container{}, workers.NotFound("no container missing")
			}
			return events.Container{Name: p.Name}, nil
		}})
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStop, Deadline: 200 * time.Millisecond, Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
			<-ctx.Done()
			return events.Container{}, ctx.Err()
		}})
	})
	for _, name := range []string{"web", "missing", "flaky"} {
		h.do(t, events.TypeStart, "", events.ContainerAction{Name: name})
	}
	h.do(t, events.TypeStop, "", events.ContainerAction{Name: "web"})
	want := "[container.start/ok container.start/not_found container.start/ok container.stop/timeout] [container.start] [container.stop]"
	testutil.Eventually(t, 5*time.Second, func() bool { return m.String() == want }, "metrics told %v, want %s", m, want)
}

// TestInlineQueryNotHeldBySlowOne: a slow query (its own goroutine) does not
// delay an inline one (ping) asked meanwhile; a query whose subject names
// another type than its envelope is refused, since the subject decides how
// it runs.
func TestInlineQueryNotHeldBySlowOne(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int32
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.HandleQuery(rt, workers.Query[events.Ping, events.Pong]{Type: events.TypePing, Inline: true,
			Run: func(context.Context, *workers.Request, events.Ping) (events.Pong, error) {
				return events.Pong{Server: server, Time: time.Now().UTC()}, nil
			}})
		workers.HandleQuery(rt, workers.Query[events.ImageAsk, events.ImageAnswer]{Type: events.TypeImageAsk,
			Run: func(ctx context.Context, _ *workers.Request, _ events.ImageAsk) (events.ImageAnswer, error) {
				started.Add(1)
				select {
				case <-release:
				case <-ctx.Done():
				}
				return events.ImageAnswer{}, nil
			}})
	})
	defer close(release)
	query := func(typ string, p any) error {
		env, err := h.client.NewCommand(server, typ, "", p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.client.Query(ctxT(t, 5*time.Second), env)
		return err
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return query(events.TypePing, events.Ping{}) == nil }, "no answer to ping")
	slow := make(chan error, 3)
	for range 3 {
		go func() { slow <- query(events.TypeImageAsk, events.ImageAsk{Image: "skein-busybox"}) }()
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return started.Load() == 3 }, "the slow queries did not start together")
	for range 5 {
		start := time.Now()
		if err := query(events.TypePing, events.Ping{}); err != nil {
			t.Fatalf("ping during slow queries: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("ping took %s behind the slow queries", d)
		}
	}
	select {
	case err := <-slow:
		t.Fatalf("a slow query ended before its release: %v", err)
	default:
	}

	// A ping envelope sent on the image.ask subject: refused, not run.
	env, err := h.client.NewCommand(server, events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := env.Marshal()
	m, err := h.conn.NC.Request(bus.QuerySubject(server, events.TypeImageAsk), raw, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Data), "query sent on") || strings.Contains(string(m.Data), `"ok":true`) {
		t.Errorf("a mismatched query: %s", m.Data)
	}
}

// TestAResultNotRepublishedIsReadSoon: a result stored but not republished
// (the results stream's leader lost between the two: RePublish is the
// leader's) is read from the stream by the waiting client within a
// quarter of a second, not at its next one-second look.
func TestAResultNotRepublishedIsReadSoon(t *testing.T) {
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.Ping, events.Pong]{Type: events.TypePing, Run: pong})
	})
	ctx := ctxT(t, 20*time.Second)
	h.do(t, events.TypePing, "", events.Ping{})
	st, err := h.conn.JS.Stream(ctx, bus.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.RePublish = nil
	if _, err := h.conn.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	env, err := h.client.NewCommand(server, events.TypePing, "", events.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := h.client.WaitResult(ctx, server, env.ID, func() {
		if err := h.client.Send(ctx, env); err != nil {
			t.Error(err)
		}
	})
	took := time.Since(start)
	if err != nil || res == nil || !res.OK {
		t.Fatalf("result %+v, %v", res, err)
	}
	if took > 600*time.Millisecond {
		t.Errorf("a result stored without its republished copy was read %v after the command, want within 600 ms", took)
	}
}
