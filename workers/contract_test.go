package workers_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers"
)

func stopped(name string) events.Container {
	return events.Container{Name: name, Server: server, Status: "Stopped", Updated: time.Now().UTC()}
}

// TestDeadlineAnswersAndFreesTheLock: a handler stuck in a hung Incus call is
// answered with a timeout within its deadline, and the next command on the same
// resource runs; also when the handler ignores its context altogether.
func TestDeadlineAnswersAndFreesTheLock(t *testing.T) {
	const deadline = 400 * time.Millisecond
	fake := container.NewFake("10.77.9.0/24", "img")
	if err := fake.Create(context.Background(), container.CreateSpec{Name: "web", Image: "img"}); err != nil {
		t.Fatal(err)
	}
	forever := make(chan struct{})
	defer close(forever)
	var ran atomic.Int32
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStop, Deadline: deadline,
			Lock: func(p events.ContainerAction) string { return "container/" + p.Name },
			Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
				ran.Add(1)
				if p.Force {
					<-forever // deaf to its context
				}
				if err := fake.Stop(ctx, p.Name, false); err != nil {
					return events.Container{}, workers.Transient("stopping %s: %v", p.Name, err)
				}
				return stopped(p.Name), nil
			}})
	})

	for _, deaf := range []bool{false, true} {
		fake.SetHang("Stop", true)
		start := time.Now()
		_, res, err := h.do(t, events.TypeStop, "", events.ContainerAction{Name: "web", Force: deaf})
		took := time.Since(start)
		wantCode(t, res, err, workers.CodeTimeout)
		limit := deadline + time.Second
		if deaf {
			limit = deadline + 2*time.Second + time.Second // the grace it is given to notice
		}
		if took > limit {
			t.Errorf("deaf=%v: answered after %s, want within %s", deaf, took, limit)
		}
		// The lock is free: the next command on the same container runs now.
		fake.SetHang("Stop", false)
		if _, _, err := h.do(t, events.TypeStop, "", events.ContainerAction{Name: "web"}); err != nil {
			t.Fatalf("deaf=%v: next command on the resource: %v", deaf, err)
		}
	}
	h.drained(t)
	if n := ran.Load(); n != 4 {
		t.Errorf("handler ran %d times, want 4 (a timed-out attempt is not retried)", n)
	}
}

// TestSameIDAfterTheDuplicateWindowIsAnsweredFromItsResult: JetStream forgets
// a command id after its duplicate window; the agent still answers it from the
// stored result instead of running it again.
func TestSameIDAfterTheDuplicateWindowIsAnsweredFromItsResult(t *testing.T) {
	var calls atomic.Int32
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeRestart,
			Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
				calls.Add(1)
				return stopped(p.Name), nil
			}})
	})
	ctx := ctxT(t, 20*time.Second)
	// A short window, so the test does not wait ten minutes.
	const window = 300 * time.Millisecond
	st, err := h.conn.JS.Stream(ctx, bus.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Duplicates = window
	if _, err := h.conn.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	env, res, err := h.do(t, events.TypeRestart, "restart-web-7", events.ContainerAction{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	h.drained(t)
	testutil.Eventually(t, 5*time.Second, func() bool { return time.Since(sent) > 3*window }, "time stood still")

	live := make(chan *nats.Msg, 2)
	sub, err := h.conn.NC.ChanSubscribe(bus.ResultSubject(server, env.ID), live)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	raw, _ := env.Marshal()
	ack := h.publishRaw(t, bus.CommandSubject(server, events.TypeRestart), raw, env.ID)
	if ack.Duplicate {
		t.Fatal("JetStream still dropped the id as a duplicate: the window did not pass")
	}
	select {
	case m := <-live:
		again, err := decode(m.Data)
		if err != nil || string(again.Output) != string(res.Output) {
			t.Errorf("answer to the id sent again = %+v %v, want the stored %s", again, err, res.Output)
		}
	case <-ctx.Done():
		t.Fatal("the id sent again was not answered")
	}
	h.drained(t)
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times for one id, want 1", n)
	}
}

func decode(raw []byte) (*events.Result, error) {
	env, err := events.Decode(raw)
	if err != nil {
		return nil, err
	}
	var r events.Result
	return &r, env.Payload(&r)
}

// TestUnknownErrorsAreFinalAfterAFewTries: an error of no known class is tried
// again a few times, then answered as internal, never retried for ever.
func TestUnknownErrorsAreFinalAfterAFewTries(t *testing.T) {
	var calls atomic.Int32
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStart,
			Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
				calls.Add(1)
				return events.Container{}, errors.New("socket closed")
			}})
	})
	_, res, err := h.do(t, events.TypeStart, "", events.ContainerAction{Name: "web"})
	wantCode(t, res, err, workers.CodeInternal)
	if res.Error.Message != "socket closed" {
		t.Errorf("message = %q", res.Error.Message)
	}
	h.drained(t)
	if n := calls.Load(); n != 3 {
		t.Errorf("handler ran %d times, want 3", n)
	}
}

// TestOnceKeepsADecisionAcrossRedeliveries: what an attempt decided (a
// generated name) is what the next attempt of the same command finds.
func TestOnceKeepsADecisionAcrossRedeliveries(t *testing.T) {
	var mu sync.Mutex
	var decided []string
	n := 0
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStart,
			Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
				name, err := req.Once(ctx, "name", func() (string, error) {
					mu.Lock()
					defer mu.Unlock()
					n++
					decided = append(decided, "web-"+string(rune('0'+n)))
					return decided[len(decided)-1], nil
				})
				if err != nil {
					return events.Container{}, err
				}
				if req.Attempt == 1 {
					return events.Container{}, workers.Transient("crash after deciding")
				}
				return stopped(name), nil
			}})
	})
	_, res, err := h.do(t, events.TypeStart, "", events.ContainerAction{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(decided) != 1 {
		t.Fatalf("decided %v, want one decision", decided)
	}
	if want := `"name":"` + decided[0] + `"`; !contains(string(res.Output), want) {
		t.Errorf("output %s, want the first decision %s", res.Output, decided[0])
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestOnFailRunsOnlyOnTheFinalFailure: cleanup registered by an attempt runs
// when its error is the command's answer, not when the command will be retried.
func TestOnFailRunsOnlyOnTheFinalFailure(t *testing.T) {
	var undone atomic.Int32
	var undoneAt atomic.Int32
	h := newHarness(t, func(rt *workers.Runtime) {
		workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeStart,
			Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
				attempt := int32(req.Attempt)
				req.OnFail(func(context.Context) { undone.Add(1); undoneAt.Store(attempt) })
				if req.Attempt == 1 {
					return events.Container{}, workers.Transient("busy")
				}
				return events.Container{}, workers.Conflict("taken")
			}})
	})
	_, res, err := h.do(t, events.TypeStart, "", events.ContainerAction{Name: "web"})
	wantCode(t, res, err, workers.CodeConflict)
	h.drained(t)
	if undone.Load() != 1 || undoneAt.Load() != 2 {
		t.Errorf("cleanup ran %d times (last after attempt %d), want once after attempt 2", undone.Load(), undoneAt.Load())
	}
}

// TestRuntimeWorksWithAgentCredentials: everything the runtime does for a
// command (its consumer, the stored-result lookup, the journal, the result,
// progress, the ack) fits in an agent's permissions.
func TestRuntimeWorksWithAgentCredentials(t *testing.T) {
	admin, url, a := testutil.AuthBus(t)
	agent := testutil.Connect(t, url, a, bus.Role{Kind: "agent", Server: server})
	rt := workers.NewRuntime(agent, server, zerolog.Nop())
	var decided atomic.Int32
	workers.Handle(rt, workers.Command[events.ContainerAction, events.Container]{Type: events.TypeRestart, Lock: func(p events.ContainerAction) string { return p.Name },
		Run: func(ctx context.Context, req *workers.Request, p events.ContainerAction) (events.Container, error) {
			req.Progress("work", "working")
			if _, err := req.Once(ctx, "boot", func() (string, error) { decided.Add(1); return "1", nil }); err != nil {
				return events.Container{}, err
			}
			return stopped(p.Name), nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rt.Run(ctx) }()
	defer func() { cancel(); <-done }()
	client := bus.NewClient(admin, "cli")
	for _, id := range []string{"", "chosen-id-1", "chosen-id-1"} {
		env, err := client.NewCommand(server, events.TypeRestart, id, events.ContainerAction{Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		res, err := client.Do(ctxT(t, 20*time.Second), bus.Call{Envelope: env})
		if err != nil || !res.OK {
			t.Fatalf("command %q under agent credentials: %+v %v", id, res, err)
		}
	}
	if n := decided.Load(); n != 2 {
		t.Errorf("decided %d times, want 2 (the same id twice is answered once)", n)
	}
}
