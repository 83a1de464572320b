// Package workers is the runtime every skein worker shares: it consumes one
// server's commands, runs the handler registered for each type, publishes the
// result and only then acknowledges. Domain handlers live in sub-packages.
//
// The handler contract (see Command): a handler declares its payload and output
// types, the resource it locks and its deadline; the runtime decodes and
// validates the payload once, serialises commands on one resource, answers a
// command id that has a stored result from that result without running it
// again, bounds each attempt by the deadline, and retries an attempt only when
// its error says it is worth it.
package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/validate"
)

// DefaultDeadline bounds one attempt of a command whose contract names none.
const DefaultDeadline = 2 * time.Minute

// deadlineGrace is how long a handler past its deadline may take to notice
// before the runtime answers without it and frees its lock.
const deadlineGrace = 2 * time.Second

// workerIdle is how long a command's goroutine waits for the next command before it ends.
const workerIdle = 10 * time.Second

// unknownTries bounds the attempts at a command that fails with an error of no
// known class: a few, in case it was passing, then it is final.
const unknownTries = 3

// Command is the contract of one command's handler.
type Command[In, Out any] struct {
	// Type is the command type; events registers it with payload In and output Out.
	Type string
	// Lock names the resource the command changes, e.g. "lb/ha1": commands with
	// the same lock run one at a time on this agent. nil or "" locks nothing.
	Lock func(In) string
	// Deadline bounds one attempt; 0 is DefaultDeadline. An attempt past it is
	// answered with a timeout error and its lock is freed.
	Deadline time.Duration
	// Run does the command. It must be idempotent: a redelivered command has to
	// end as one delivery would. Errors: *Error (Transient for a retry), anything
	// else is retried a few times, then answered as an internal error.
	Run func(ctx context.Context, req *Request, in In) (Out, error)
}

// Query is the contract of a query's handler: core request/reply, answered only
// while the agent is up, never stored or redelivered, for handlers that change nothing.
type Query[In, Out any] struct {
	// Type is the query type.
	Type string
	// Deadline bounds the answer; 0 is ten seconds.
	Deadline time.Duration
	// Inline marks a handler that only reads memory and never blocks (ping):
	// it answers on the subscription's goroutine, without a hand-off. Every
	// other query runs on a goroutine of its own, so a slow one delays none.
	Inline bool
	// Run answers the query.
	Run func(ctx context.Context, req *Request, in In) (Out, error)
}

// handler is a contract with its types erased, as the runtime dispatches it.
type handler struct {
	deadline time.Duration
	inline   bool
	decode   func(raw json.RawMessage) (any, error)
	lock     func(in any) string
	run      func(ctx context.Context, req *Request, in any) (any, error)
}

// Handle registers a command's handler. It panics when the contract does not
// match the command's registration in events: that is a programming error.
func Handle[In, Out any](r *Runtime, c Command[In, Out]) {
	spec, ok := events.Lookup(c.Type)
	if !ok || spec.Kind != events.KindCommand {
		panic(fmt.Sprintf("workers: %q is not a registered command type", c.Type))
	}
	checkTypes[In, Out](spec)
	h := erase(c.Type, c.Deadline, c.Run)
	if c.Lock != nil {
		h.lock = func(in any) string { return c.Lock(in.(In)) }
	}
	r.handlers[c.Type] = h
}

// HandleQuery registers a query's handler.
func HandleQuery[In, Out any](r *Runtime, q Query[In, Out]) {
	spec, ok := events.Lookup(q.Type)
	if !ok {
		panic(fmt.Sprintf("workers: %q is not a registered type", q.Type))
	}
	checkTypes[In, Out](spec)
	d := q.Deadline
	if d == 0 {
		d = 10 * time.Second
	}
	h := erase(q.Type, d, q.Run)
	h.inline = q.Inline
	r.queries[q.Type] = h
}

func checkTypes[In, Out any](spec events.Spec) {
	if in := reflect.TypeFor[In](); spec.Go != in {
		panic(fmt.Sprintf("workers: %s carries %v, not %v", spec.Type, spec.Go, in))
	}
	if out := reflect.TypeFor[Out](); spec.Output != nil && spec.Output != out {
		panic(fmt.Sprintf("workers: %s answers %v, not %v", spec.Type, spec.Output, out))
	}
}

func erase[In, Out any](typ string, deadline time.Duration, run func(context.Context, *Request, In) (Out, error)) *handler {
	if deadline == 0 {
		deadline = DefaultDeadline
	}
	return &handler{
		deadline: deadline,
		decode: func(raw json.RawMessage) (any, error) {
			var in In
			if err := json.Unmarshal(raw, &in); err != nil {
				return nil, &events.ValidationError{Type: typ, Reason: err.Error()}
			}
			// What the schema's patterns cannot say (address ranges, label lengths).
			if err := validate.Struct(in); err != nil {
				return nil, &events.ValidationError{Type: typ, Reason: err.Error()}
			}
			return in, nil
		},
		run: func(ctx context.Context, req *Request, in any) (any, error) {
			return run(ctx, req, in.(In))
		},
	}
}

// Request is one delivery of a command to its handler.
type Request struct {
	// Envelope is the validated command.
	Envelope *events.Envelope
	// Attempt counts deliveries, from 1. Handlers decide from state, never from it.
	Attempt int
	// Log is the handler's logger, with the command's id and type.
	Log zerolog.Logger

	progress func(step, msg string)
	journal  *bus.Store[events.Journal]
	started  time.Time
	mu       sync.Mutex
	onFail   []func(context.Context)
	defers   []func()
}

// ID is the command's id.
func (r *Request) ID() string { return r.Envelope.ID }

// Progress reports a step of long work to the caller.
func (r *Request) Progress(step, msg string) {
	if r.progress != nil {
		r.progress(step, msg)
	}
}

// Once returns what an earlier attempt of this command decided at step, or
// decides now with decide and records it before returning: a generated name or
// a container's boot before a restart stay the same across redeliveries.
func (r *Request) Once(ctx context.Context, step string, decide func() (string, error)) (string, error) {
	if r.journal == nil {
		return decide()
	}
	id := r.Envelope.ID
	j, err := r.journal.Find(ctx, bus.Key(r.Envelope.Server, id))
	if err != nil {
		return "", Transient("reading the journal of %s: %v", id, err)
	}
	if j != nil {
		if v, ok := j.Value.Steps[step]; ok {
			return v, nil
		}
	}
	v, err := decide()
	if err != nil {
		return "", err
	}
	var kept string
	_, err = r.journal.Modify(ctx, bus.Key(r.Envelope.Server, id), func(cur events.Journal, exists bool) (events.Journal, error) {
		if !exists {
			cur = events.Journal{Command: id, Steps: map[string]string{}}
		}
		if old, ok := cur.Steps[step]; ok {
			// Another attempt decided first: its decision stands.
			kept = old
			return cur, nil
		}
		cur.Steps[step], cur.Updated, kept = v, time.Now().UTC(), v
		return cur, nil
	})
	if err != nil {
		return "", Transient("writing the journal of %s: %v", id, err)
	}
	return kept, nil
}

// Forget drops what the command decided at step, so that Once decides again.
func (r *Request) Forget(ctx context.Context, step string) error {
	if r.journal == nil {
		return nil
	}
	_, err := r.journal.Modify(ctx, bus.Key(r.Envelope.Server, r.Envelope.ID), func(cur events.Journal, exists bool) (events.Journal, error) {
		if exists {
			delete(cur.Steps, step)
		} else {
			cur = events.Journal{Command: r.Envelope.ID, Steps: map[string]string{}}
		}
		cur.Updated = time.Now().UTC()
		return cur, nil
	})
	if err != nil {
		return Transient("writing the journal of %s: %v", r.Envelope.ID, err)
	}
	return nil
}

// Defer runs f when this attempt's handler returns, however it ends.
func (r *Request) Defer(f func()) {
	r.mu.Lock()
	r.defers = append(r.defers, f)
	r.mu.Unlock()
}

func (r *Request) ended() {
	r.mu.Lock()
	fs := r.defers
	r.defers = nil
	r.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// FirstSaw returns whether the command's first attempt found what it is about
// (what was says now, journaled under step on the first attempt): a delete that
// finds nothing succeeds when an earlier attempt found it, fails when none did.
func (r *Request) FirstSaw(ctx context.Context, step string, was bool) (bool, error) {
	v, err := r.Once(ctx, step, func() (string, error) { return fmt.Sprint(was), nil })
	return v == "true", err
}

// OnFail registers cleanup that runs when this attempt's error is the command's
// final answer (not when it will be retried): undo a half-made resource.
func (r *Request) OnFail(f func(ctx context.Context)) {
	r.mu.Lock()
	r.onFail = append(r.onFail, f)
	r.mu.Unlock()
}

func (r *Request) failed(ctx context.Context) {
	r.mu.Lock()
	fs := r.onFail
	r.onFail = nil
	r.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i](ctx)
	}
}

// Runtime consumes one server's commands and dispatches them to handlers.
type Runtime struct {
	server      string
	conn        *bus.Conn
	log         zerolog.Logger
	handlers    map[string]*handler
	queries     map[string]*handler
	concurrency int
	locks       keyedLock
	openMu      sync.Mutex
	results     jetstream.Stream
	out         *bus.ResultPublisher
	journal     *bus.Store[events.Journal]
	metrics     Metrics
	acks        sync.WaitGroup
	inflight    atomic.Int64
	started     time.Time
	recent      recentIDs
}

// Metrics is told what the runtime does with each command (internal/metrics
// counts it for Prometheus).
type Metrics interface {
	// Done tells a command answered: outcome is ok or its error's code;
	// queued runs from the command's creation to its handler starting.
	Done(typ, outcome string, queued, handled time.Duration)
	// Redelivered tells a command delivered again.
	Redelivered(typ string)
	// DeadlineHit tells a handler answered with a timeout.
	DeadlineHit(typ string)
}

// SetMetrics has m told of every command from now on.
func (r *Runtime) SetMetrics(m Metrics) { r.metrics = m }

// NewRuntime returns a runtime for server's commands.
func NewRuntime(conn *bus.Conn, server string, log zerolog.Logger) *Runtime {
	return &Runtime{server: server, conn: conn, log: log, handlers: map[string]*handler{}, queries: map[string]*handler{}, concurrency: 64, started: time.Now()}
}

// Run consumes commands and answers queries until ctx ends.
func (r *Runtime) Run(ctx context.Context) error {
	if err := r.open(ctx); err != nil {
		return err
	}
	out, err := bus.NewResultPublisher(r.conn, r.server)
	if err != nil {
		return fmt.Errorf("workers: %w", err)
	}
	defer out.Close()
	r.out = out
	if len(r.queries) > 0 {
		// A queue group lets a standby agent of the same server share the load.
		prefix := bus.QuerySubject(r.server, "")
		qsub, err := r.conn.NC.QueueSubscribe(bus.ServerQueries(r.server), bus.AgentConsumerName(r.server), func(m *nats.Msg) {
			// The subject names the type: its handler is looked up once, here.
			typ := strings.TrimPrefix(m.Subject, prefix)
			h := r.queries[typ]
			if h != nil && h.inline {
				r.query(ctx, m, typ, h)
				return
			}
			go r.query(ctx, m, typ, h)
		})
		if err != nil {
			return fmt.Errorf("workers: queries for %s: %w", r.server, err)
		}
		defer qsub.Unsubscribe()
	}
	// The bus's server makes it when the bus asks for credentials: wait for it.
	cons, err := bus.CommandConsumer(ctx, r.conn, r.server, r.log)
	if err != nil && ctx.Err() != nil {
		return nil // stopped while waiting for it
	}
	if err != nil {
		return fmt.Errorf("workers: consumer for %s: %w", r.server, err)
	}
	sem := make(chan struct{}, r.concurrency)
	var wg sync.WaitGroup
	// A command runs on a goroutine that, once done, waits a while for the
	// next instead of ending: a new goroutine's stack grows again along every
	// command's path (about 8 µs a command in BenchmarkRoundTrip's profile).
	idle := make(chan jetstream.Msg)
	work := func(msg jetstream.Msg) {
		wait := time.NewTimer(workerIdle)
		defer wait.Stop()
		for {
			// A handler left behind by its watchdog holds neither a slot nor the shutdown.
			var once sync.Once
			release := func() { once.Do(func() { <-sem; r.inflight.Add(-1); wg.Done() }) }
			r.process(ctx, msg, release)
			release()
			wait.Reset(workerIdle)
			select {
			case msg = <-idle:
			case <-wait.C:
				return
			case <-ctx.Done():
				return
			}
		}
	}
	take := func(msg jetstream.Msg) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return // stopping: delivered again later
		}
		r.inflight.Add(1)
		wg.Add(1)
		select {
		case idle <- msg:
		default:
			go work(msg)
		}
	}
	fctx, stopFetching := context.WithCancel(ctx)
	defer stopFetching()
	fetched, err := r.fetchOnElection(fctx, cons, take)
	if err != nil {
		return err
	}
	cc, err := cons.Consume(take,
		jetstream.PullMaxMessages(r.concurrency),
		// A crashed agent's pull requests stay at the server until they expire, and
		// a redelivery can go to one of them: keep them short-lived. One parked
		// at a consumer leader that is lost is known dead after two missed
		// heartbeats (500 ms: nats-server's least) and asked again; the new
		// leader is asked at once when elected (fetchOnElection).
		jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(500*time.Millisecond),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			r.log.Debug().Err(err).Msg("consume")
			// Heartbeats missed: the consumer's leader is being elected, or
			// this agent's NATS node is cut from its cluster (then the
			// connection moves to another node).
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				r.conn.Stranded(r.log)
			}
		}))
	if err != nil {
		stopFetching()
		<-fetched
		return fmt.Errorf("workers: consume: %w", err)
	}
	<-ctx.Done()
	cc.Stop()
	// No command starts after this: the work in flight is all counted.
	select {
	case <-cc.Closed():
	case <-time.After(5 * time.Second):
		r.log.Warn().Msg("the command consumer did not stop within 5 s")
	}
	<-fetched
	wg.Wait()
	r.acks.Wait()
	return nil
}

// fetchOnElection asks a new leader of the command consumer for commands as
// soon as JetStream tells it is elected (a NATS node lost, or handing its
// leaderships over as it stops): the consume's own pull, parked at the old
// leader, is asked again only after two missed heartbeats, and not before
// the consumer has a leader again. Told any number of times (the advisory
// is anyone's to have replayed), it fetches once at a time: what it takes
// goes the one way every command does (take). The channel closes once
// ctx has ended and no fetch is under way.
func (r *Runtime) fetchOnElection(ctx context.Context, cons jetstream.Consumer, take func(jetstream.Msg)) (<-chan struct{}, error) {
	done := make(chan struct{})
	kick := make(chan struct{}, 1)
	sub, err := r.conn.NC.Subscribe(bus.CommandsElected(r.server), func(*nats.Msg) {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return nil, fmt.Errorf("workers: following the command consumer's leader: %w", err)
	}
	go func() {
		defer close(done)
		defer sub.Unsubscribe()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			}
			batch, err := cons.Fetch(r.concurrency, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				r.log.Debug().Err(err).Msg("fetching from the command consumer's new leader")
				continue
			}
			n := 0
			for msg := range batch.Messages() {
				n++
				take(msg)
			}
			r.log.Debug().Int("commands", n).Msg("the command consumer has a new leader: fetched from it")
		}
	}()
	return done, nil
}

// process is the one path every command takes:
// decode → validate → answered already? → lock → act within the deadline → respond → ack.
// release frees the command's consumer slot (and its part in Run's wait for
// the work in flight); it runs once, at the latest when process returns.
func (r *Runtime) process(ctx context.Context, msg jetstream.Msg, release func()) {
	meta, err := msg.Metadata()
	if err != nil {
		r.log.Error().Err(err).Msg("message without metadata")
		_ = msg.Term()
		return
	}
	attempt := int(meta.NumDelivered)
	freshHeader := msg.Headers().Get(bus.HeaderFreshID) == "1"
	if !r.authentic(msg, freshHeader) {
		// Not made by a holder of this server's key (the admin, the scheduler):
		// whoever had the bus's server store it here gets no answer, and the
		// id it chose (perhaps a real command's) none either.
		r.log.Warn().Str("subject", msg.Subject()).Uint64("seq", meta.Sequence.Stream).Msg("dropping a command without this server's MAC")
		_ = msg.TermWithReason("not authentic")
		return
	}
	env, err := events.Decode(msg.Data())
	if err == nil && r.conn.Keys.Signs() && time.Since(env.Time) > commandsKept {
		err = &events.ValidationError{Type: env.Type, Reason: fmt.Sprintf("made at %s, longer ago than commands are kept (%s): a replay, or a clock a day off", env.Time.Format(time.RFC3339), commandsKept)}
	}
	// Whether the id was answered is asked at once, while the message is
	// validated; unless its client made the id for it, moments ago, and this
	// is its first delivery: then no earlier result can exist.
	lookup := func(string) ([]byte, error) { return nil, nil }
	if attempt > 1 || !freshHeader || env == nil || !r.recent.admit(env.ID, env.Time, r.started) {
		lookup = r.lookup(ctx, msg.Data())
	}
	if err == nil && env.Server != r.server {
		err = &events.ValidationError{Type: env.Type, Reason: fmt.Sprintf("addressed to server %q but delivered to %q", env.Server, r.server)}
	}
	// A command runs as the type its subject names, which permissions and
	// readers of the stream go by, or not at all.
	if err == nil && msg.Subject() != bus.CommandSubject(r.server, env.Type) {
		err = &events.ValidationError{Type: env.Type, Reason: fmt.Sprintf("a %s command sent on subject %s", env.Type, msg.Subject())}
	}
	var h *handler
	var in any
	if err == nil {
		var ok bool
		if h, ok = r.handlers[env.Type]; !ok {
			err = Invalid("server %s does not handle %s commands (is the agent older than the CLI?)", r.server, env.Type)
		} else {
			in, err = h.decode(env.Data)
		}
	}
	if err != nil {
		id, typ := fallbackID(env, msg, meta)
		r.log.Warn().Str("cmd", id).Err(err).Msg("rejecting invalid command")
		if _, ok := err.(*Error); !ok {
			err = &Error{Code: CodeInvalid, Message: err.Error()}
		}
		// Its answer is stored as any other (retried while the stream is
		// unavailable), so that its client learns why; then it is dropped.
		raw, rerr := r.resultEnvelope(id, typ, nil, err)
		if rerr == nil && !r.store(ctx, msg, r.log.With().Str("cmd", id).Logger(), id, raw) {
			return // shutting down: redelivered, and refused again, later
		}
		_ = msg.TermWithReason("invalid: " + err.Error())
		return
	}
	log := r.log.With().Str("cmd", env.ID).Str("type", env.Type).Logger()

	// An id that was answered is answered again from its result, whenever it
	// comes back: after a crash, or sent again after JetStream's duplicate window.
	stored, err := lookup(env.ID)
	if err != nil {
		log.Warn().Err(err).Msg("cannot tell whether the command was answered; retrying")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if stored != nil {
		log.Info().Int("attempt", attempt).Msg("already answered: repeating the stored result")
		// As any result, once per subject: the stream keeps the one it has
		// (found by the chaos soak: a plain publish stored a second result
		// for one command); a waiting client reads that one.
		if err := r.publish(ctx, env.ID, stored); err != nil {
			log.Warn().Err(err).Msg("repeating the stored result")
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = msg.DoubleAck(actx)
		return
	}

	stopAlive := keepAlive(msg)
	defer stopAlive()
	unlock := func() {}
	if h.lock != nil {
		key := h.lock(in)
		if unlock, err = r.locks.lock(ctx, key); err != nil {
			return // shutting down: leave the command for redelivery
		}
	}
	if attempt > 1 && r.metrics != nil {
		r.metrics.Redelivered(env.Type)
	}
	req := &Request{Envelope: env, Attempt: attempt, Log: log, journal: r.journal, started: time.Now()}
	req.progress = func(step, m string) { r.progress(env.ID, step, m) }

	// The handler runs here; a watchdog answers for it if it is still running
	// a grace after its deadline (deaf to its context), freeing the resource's
	// lock and the consumer slot, so the next command on the resource runs.
	var settled atomic.Bool
	settle := func(out any, herr error) {
		if !settled.CompareAndSwap(false, true) {
			return
		}
		unlock()
		r.finish(ctx, msg, req, attempt, out, herr)
		release()
	}
	hctx, cancel := context.WithTimeout(ctx, h.deadline)
	defer cancel()
	watchdog := time.AfterFunc(h.deadline+deadlineGrace, func() {
		log.Error().Dur("deadline", h.deadline).Msg("handler did not return after its deadline; answering without it")
		settle(nil, timeoutError(req, h.deadline, hctx.Err()))
	})
	out, herr := safeCall(hctx, h, req, in)
	req.ended()
	if !watchdog.Stop() {
		log.Warn().Msg("a handler answered for by its watchdog has returned")
	}
	if herr != nil && ctx.Err() == nil && errors.Is(hctx.Err(), context.DeadlineExceeded) {
		herr = timeoutError(req, h.deadline, herr)
	}
	settle(out, herr)
}

// timeoutError is the answer of an attempt that passed its deadline.
func timeoutError(req *Request, deadline time.Duration, last error) error {
	return &Error{Code: CodeTimeout, Message: fmt.Sprintf("%s did not finish within its deadline of %s (last error: %v); what it did so far stays: run it again to resume",
		req.Envelope.Type, deadline, last)}
}

// finish ends one attempt: a retry for an error worth it, otherwise the
// cleanup of a failed command, the result, and only then the ack.
func (r *Runtime) finish(ctx context.Context, msg jetstream.Msg, req *Request, attempt int, out any, herr error) {
	log, env := req.Log, req.Envelope
	if ctx.Err() != nil {
		// Shutting down: leave the command for redelivery rather than guess.
		return
	}
	if herr != nil && r.retry(herr, attempt) {
		delay := backoff(attempt)
		log.Warn().Err(herr).Dur("retry_in", delay).Int("attempt", attempt).Msg("transient failure")
		_ = msg.NakWithDelay(delay)
		return
	}
	if r.metrics != nil {
		outcome := "ok"
		if herr != nil {
			outcome = Info(herr).Code
		}
		if outcome == CodeTimeout {
			r.metrics.DeadlineHit(env.Type)
		}
		r.metrics.Done(env.Type, outcome, req.started.Sub(env.Time), time.Since(req.started))
	}
	if herr != nil {
		log.Warn().Err(herr).Int("attempt", attempt).Msg("command failed")
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		req.failed(cctx)
		cancel()
	} else {
		log.Info().Msg("command done")
	}
	raw, err := r.resultEnvelope(env.ID, env.Type, out, herr)
	if err != nil {
		// Cannot happen with the typed values a result is made of; answer rather than hang.
		log.Error().Err(err).Msg("encoding the result")
		raw, _ = r.resultEnvelope(env.ID, env.Type, nil, err)
	}
	if !r.store(ctx, msg, log, env.ID, raw) {
		return // shutting down: the redelivery looks for the result first
	}
	r.ack(ctx, msg, log)
}

// ackDelay is how long after its result is stored a command is acknowledged
// when it is the only one in flight. Acknowledging the only command in the
// work queue empties the stream's last file block, and NATS replaces the
// block's file (open, tombstone, unlink: about 150 µs of the server's time
// under the stream's lock, found by profiling BenchmarkRoundTrip), which a
// command sent right after this one's result waits out. A moment later that
// command is stored first and the block is not emptied. A crash meanwhile
// means a redelivery, answered from the stored result.
const ackDelay = time.Millisecond

// ack acknowledges msg, whose result is stored: at once while other commands
// are in flight (their messages keep the block, and late acks would hold the
// consumer's ack-pending slots), else ackDelay from now. Run waits for a
// late ack before returning.
func (r *Runtime) ack(ctx context.Context, msg jetstream.Msg, log zerolog.Logger) {
	send := func() {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		// A confirmed ack; a lost one only means a redelivery, which finds the result.
		if err := msg.DoubleAck(actx); err != nil {
			log.Warn().Err(err).Msg("ack not confirmed; a redelivery will find the result")
		}
	}
	if r.inflight.Load() > 1 {
		send()
		return
	}
	r.acks.Add(1)
	time.AfterFunc(ackDelay, func() {
		defer r.acks.Done()
		send()
	})
}

// store publishes raw as command id's result until the results stream has
// it, and says whether it does (false: the runtime stopped first). The
// outcome is decided: it is published again (the same bytes, stored once
// per subject, and only that once republished to the waiting client) while
// msg stays ours, rather than handed back to run a second
// time (found by the chaos soak: commands whose result's ack was lost in a
// NATS leader election ran again 20 s later, over what newer commands had done).
func (r *Runtime) store(ctx context.Context, msg jetstream.Msg, log zerolog.Logger, id string, raw []byte) bool {
	err := r.publish(ctx, id, raw)
	if err == nil {
		return true
	}
	stop := keepAlive(msg)
	defer stop()
	first := time.Now()
	for try := 1; err != nil; try++ {
		if errors.Is(err, bus.ErrResultSubjectFull) {
			// Ran once; no publishing stores its result: the command ends here,
			// rather than held, or run again, for ever.
			log.Error().Err(err).Msg("the result cannot be stored: another server filled its subject first (a command id it could guess); the command ran once")
			return true
		}
		log.Warn().Err(err).Int("try", try).Msg("publishing the result failed; publishing it again")
		select {
		case <-ctx.Done():
			return false
		case <-time.After(resultRetry(time.Since(first))):
		}
		err = r.publish(ctx, id, raw)
	}
	return true
}

// electionPatience is how long a result's publication is tried again at
// the shortest interval: a results stream whose leader was lost has another
// within 1-2 s on skein's NATS nodes (bus.SkeinRaft), and a publication
// refused meanwhile costs only a round trip.
const electionPatience = 5 * time.Second

// resultRetry is the wait before publishing a result again, failed
// publications begun elapsed ago: 200 ms within electionPatience (a
// growing wait there made the first command after a NATS node's loss wait
// up to a second past the new leader's election), then a fifth of the
// time beyond it more, up to 5 s (a bus away for 10 s: 1.2 s).
func resultRetry(elapsed time.Duration) time.Duration {
	if elapsed < electionPatience {
		return 200 * time.Millisecond
	}
	return min(200*time.Millisecond+(elapsed-electionPatience)/5, 5*time.Second)
}

// retry says whether a failed attempt is worth another: transient errors until
// the delivery bound, errors of unknown kind a few times, nothing else.
func (r *Runtime) retry(err error, attempt int) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Transient && attempt < bus.MaxDeliver
	}
	return attempt < unknownTries
}

// query answers one query on its reply subject: decode → validate → act →
// respond. typ is the type its subject names, h that type's handler (nil
// when this agent answers none).
func (r *Runtime) query(ctx context.Context, m *nats.Msg, typ string, h *handler) {
	if m.Reply == "" {
		return
	}
	env, err := events.Decode(m.Data)
	if err == nil && env.Server != r.server {
		err = &events.ValidationError{Type: env.Type, Reason: fmt.Sprintf("addressed to server %q but asked of %q", env.Server, r.server)}
	}
	if err == nil && env.Type != typ {
		// The subject chose how it runs (inline or not): it must name the same type.
		err = &events.ValidationError{Type: env.Type, Reason: fmt.Sprintf("a %s query sent on %s", env.Type, m.Subject)}
	}
	var out any
	var id string
	if err != nil {
		err = &Error{Code: CodeInvalid, Message: err.Error()}
		id, typ = "invalid-"+events.NewID(), "unknown"
		if env != nil && bus.ValidToken(env.ID) {
			id, typ = env.ID, env.Type
		}
	} else if h == nil {
		id = env.ID
		err = Invalid("server %s does not answer %s queries (is the agent older than the CLI?)", r.server, env.Type)
	} else {
		id = env.ID
		var in any
		if in, err = h.decode(env.Data); err != nil {
			err = &Error{Code: CodeInvalid, Message: err.Error()}
		} else {
			// A query changes nothing: it runs inline, bounded by its deadline.
			req := &Request{Envelope: env, Attempt: 1, Log: r.log.With().Str("query", env.ID).Str("type", env.Type).Logger()}
			qctx, cancel := context.WithTimeout(ctx, h.deadline)
			out, err = safeCall(qctx, h, req, in)
			cancel()
		}
	}
	raw, rerr := r.resultEnvelope(id, typ, out, err)
	if rerr != nil {
		r.log.Error().Err(rerr).Msg("encoding query result")
		return
	}
	_ = m.Respond(raw)
}

func safeCall(ctx context.Context, h *handler, req *Request, in any) (out any, err error) {
	defer func() {
		if p := recover(); p != nil {
			req.Log.Error().Str("stack", string(debug.Stack())).Msgf("handler panic: %v", p)
			err = &Error{Code: CodeInternal, Message: fmt.Sprintf("internal error in %s handler: %v", req.Envelope.Type, p)}
		}
	}()
	return h.run(ctx, req, in)
}

// keepAlive tells JetStream the command is still being worked on (or waits for
// its resource's lock), so that it is not redelivered while a crashed one is,
// after AckWait. It returns the function that stops it.
func keepAlive(msg jetstream.Msg) func() {
	var stopped atomic.Bool
	var t *time.Timer
	t = time.AfterFunc(bus.AckWait/3, func() {
		if stopped.Load() {
			return
		}
		_ = msg.InProgress()
		t.Reset(bus.AckWait / 3)
	})
	return func() { stopped.Store(true); t.Stop() }
}

func backoff(attempt int) time.Duration {
	d := 500 * time.Millisecond << (attempt - 1)
	if d > 10*time.Second || d <= 0 {
		d = 10 * time.Second
	}
	return d
}

// resultEnvelope builds the encoded result of command id.
func (r *Runtime) resultEnvelope(id, typ string, out any, herr error) ([]byte, error) {
	res := events.Result{Command: id, CommandType: typ, OK: herr == nil}
	if herr != nil {
		res.Error = Info(herr)
	} else if out != nil {
		b, err := json.Marshal(out)
		if err != nil {
			res.OK, res.Error = false, Info(fmt.Errorf("encoding output: %w", err))
		} else {
			res.Output = b
		}
	}
	// Built from typed values, so it is not walked against its schema here:
	// clients validate what they receive.
	data, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	env := events.Envelope{ID: "result-" + id, Type: events.TypeResult, V: 1, Time: time.Now().UTC(), Source: "agent/" + r.server, Server: r.server, Data: data}
	return env.Marshal()
}

// publish stores raw as the result of command id and returns once it is
// stored; the waiting client learns that from JetStream itself.
func (r *Runtime) publish(ctx context.Context, id string, raw []byte) error {
	// No acknowledgement comes when the stream is unavailable: try again
	// soon. A result on its way is waited for even when the agent is
	// stopping: its command is then acknowledged, not delivered again.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	return r.out.Publish(pctx, id, raw)
}

// open finds the results stream and the journal, once.
func (r *Runtime) open(ctx context.Context) error {
	r.openMu.Lock()
	defer r.openMu.Unlock()
	if r.results != nil {
		return nil
	}
	results, err := r.conn.JS.Stream(ctx, bus.StreamResults)
	if err != nil {
		return fmt.Errorf("workers: results stream: %w", err)
	}
	if r.journal, err = bus.OpenStore[events.Journal](ctx, r.conn.JS); err != nil {
		return fmt.Errorf("workers: %w", err)
	}
	r.results = results
	return nil
}

// Lock takes the lock of a resource as a command on it would, or gives up when
// ctx ends: reconcilers repair a resource under it.
func (r *Runtime) Lock(ctx context.Context, key string) (func(), error) {
	return r.locks.lock(ctx, key)
}

// Answered returns the stored result of command id, nil when it has none.
func (r *Runtime) Answered(ctx context.Context, id string) (*events.Result, error) {
	if err := r.open(ctx); err != nil {
		return nil, err
	}
	raw, err := r.storedResult(ctx, id)
	if err != nil || raw == nil {
		return nil, err
	}
	return events.DecodeResult(raw)
}

// lookup starts reading the stored result of the command in raw and returns
// the wait for it; the wait reads again if the id turns out to be another.
func (r *Runtime) lookup(ctx context.Context, raw []byte) func(id string) ([]byte, error) {
	var probe struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &probe) != nil || !bus.ValidToken(probe.ID) {
		return func(id string) ([]byte, error) { return r.storedResult(ctx, id) }
	}
	type found struct {
		raw []byte
		err error
	}
	ch := make(chan found, 1)
	go func() {
		b, err := r.storedResult(ctx, probe.ID)
		ch <- found{b, err}
	}()
	return func(id string) ([]byte, error) {
		f := <-ch
		if id != probe.ID {
			return r.storedResult(ctx, id)
		}
		return f.raw, f.err
	}
}

// authentic says whether msg carries this server's MAC (always, on a bus
// that asks for no credentials).
func (r *Runtime) authentic(msg jetstream.Msg, fresh bool) bool {
	k := r.conn.Keys
	if !k.Signs() {
		return true
	}
	macs := msg.Headers().Values(bus.HeaderMAC)
	return len(macs) == 1 && k.VerifyCommand(r.server, msg.Subject(), fresh, msg.Data(), macs[0])
}

// commandsKept is the oldest an authentic command can be: the commands
// stream keeps none longer, with a margin for clocks.
const commandsKept = 24*time.Hour + 10*time.Minute

// storedResult returns the stored result of command id, nil when it has none,
// from the results stream's leader (a lagging replica's "none" would run the
// command again), asked again through an election for 5 s at the most.
func (r *Runtime) storedResult(ctx context.Context, id string) ([]byte, error) {
	subject := bus.ResultSubject(r.server, id)
	// Only this server's own: others can have messages stored there too.
	m, err := bus.Retrying(ctx, 5*time.Second, func(ctx context.Context) (*bus.StoredMsg, error) {
		return bus.AuthenticResult(ctx, r.conn.NC, r.conn.Keys, subject)
	})
	if m == nil {
		return nil, err
	}
	return m.Data, err
}

func (r *Runtime) progress(id, step, m string) {
	env, err := events.New(events.TypeProgress, "agent/"+r.server, r.server, events.Progress{Command: id, Step: step, Message: m})
	if err != nil {
		return
	}
	if raw, err := env.Marshal(); err == nil {
		_ = r.conn.NC.Publish(bus.ProgressSubject(r.server, id), raw)
	}
}

// fallbackID finds an id to answer an invalid message on: its own, its dedup id, or its sequence.
func fallbackID(env *events.Envelope, msg jetstream.Msg, meta *jetstream.MsgMetadata) (string, string) {
	typ := "unknown"
	if env != nil && env.Type != "" {
		typ = env.Type
	}
	if env != nil && answerable(env.ID) {
		return env.ID, typ
	}
	var probe struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(msg.Data(), &probe) == nil && answerable(probe.ID) {
		return probe.ID, typ
	}
	if id := msg.Headers().Get(nats.MsgIdHdr); answerable(id) {
		return id, typ
	}
	return fmt.Sprintf("seq-%d", meta.Sequence.Stream), typ
}

// answerable says whether an id of an invalid message may name its result
// subject: one token, and short (a subject beyond NATS's 4 KiB control line
// cuts the publisher off the bus), as envelopes' ids are.
func answerable(id string) bool {
	return bus.ValidToken(id) && len(id) <= 160
}

// lockResources is true but in a broken build made to show that the soak's
// checker catches lost updates (go build -tags skeinbroken, SKEIN_BROKEN=nolock).
var lockResources = true

// keyedLock serialises commands on one resource; others run in parallel.
// Waiters are served in the order they came (a channel's senders queue FIFO).
type keyedLock struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	ch   chan struct{}
	refs int
}

// lock takes key's lock, or gives up when ctx ends; "" locks nothing.
func (k *keyedLock) lock(ctx context.Context, key string) (func(), error) {
	if key == "" || !lockResources {
		return func() {}, nil
	}
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	drop := func() {
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; drop() }, nil
	case <-ctx.Done():
		drop()
		return nil, ctx.Err()
	}
}
