// Package workers is the runtime every skein worker shares: it consumes one
// server's commands, runs the handler registered for each type, publishes the
// result and only then acknowledges. Domain handlers live in sub-packages.
package workers

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
)

// Handler does one command and returns its output. It must be idempotent: a
// redelivered command has to end with the same outcome as one delivery.
type Handler func(ctx context.Context, req *Request) (any, error)

// Request is one delivery of a command to a handler.
type Request struct {
	// Envelope is the validated command.
	Envelope *events.Envelope
	// Attempt counts deliveries, from 1.
	Attempt int
	// Log is the handler's logger, with the command's id and type.
	Log zerolog.Logger

	progress func(step, msg string)
}

// Decode decodes the command's payload.
func (r *Request) Decode(v any) error { return r.Envelope.Payload(v) }

// Progress reports a step of long work to the caller.
func (r *Request) Progress(step, msg string) {
	if r.progress != nil {
		r.progress(step, msg)
	}
}

// Runtime consumes one server's commands and dispatches them to handlers.
type Runtime struct {
	server      string
	conn        *bus.Conn
	log         zerolog.Logger
	handlers    map[string]Handler
	queries     map[string]Handler
	concurrency int
	locks       keyedMutex
	results     jetstream.Stream
}

// NewRuntime returns a runtime for server's commands.
func NewRuntime(conn *bus.Conn, server string, log zerolog.Logger) *Runtime {
	return &Runtime{server: server, conn: conn, log: log, handlers: map[string]Handler{}, queries: map[string]Handler{}, concurrency: 16}
}

// Handle registers the handler of one command type.
func (r *Runtime) Handle(typ string, h Handler) {
	spec, ok := events.Lookup(typ)
	if !ok || spec.Kind != events.KindCommand {
		panic(fmt.Sprintf("workers: %q is not a registered command type", typ))
	}
	r.handlers[typ] = h
}

// HandleQuery registers a handler for queries of one type: core request/reply,
// answered only while the agent is up, never stored or redelivered. Only for
// handlers that change nothing.
func (r *Runtime) HandleQuery(typ string, h Handler) {
	if _, ok := events.Lookup(typ); !ok {
		panic(fmt.Sprintf("workers: %q is not a registered type", typ))
	}
	r.queries[typ] = h
}

// Run consumes commands and answers queries until ctx ends.
func (r *Runtime) Run(ctx context.Context) error {
	if len(r.queries) > 0 {
		// A queue group lets a standby agent of the same server share the load.
		qsub, err := r.conn.NC.QueueSubscribe(bus.ServerQueries(r.server), bus.AgentConsumerName(r.server), func(m *nats.Msg) {
			go r.query(ctx, m)
		})
		if err != nil {
			return fmt.Errorf("workers: queries for %s: %w", r.server, err)
		}
		defer qsub.Unsubscribe()
	}
	cons, err := bus.EnsureAgentConsumer(ctx, r.conn.JS, r.server)
	if err != nil {
		return fmt.Errorf("workers: consumer for %s: %w", r.server, err)
	}
	if r.results, err = r.conn.JS.Stream(ctx, bus.StreamResults); err != nil {
		return fmt.Errorf("workers: results stream: %w", err)
	}
	sem := make(chan struct{}, r.concurrency)
	var wg sync.WaitGroup
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			r.process(ctx, msg)
		}()
	},
		jetstream.PullMaxMessages(r.concurrency),
		// A crashed agent's pull requests stay at the server until they expire, and
		// a redelivery can go to one of them: keep them short-lived.
		jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(2*time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			r.log.Debug().Err(err).Msg("consume")
		}))
	if err != nil {
		return fmt.Errorf("workers: consume: %w", err)
	}
	<-ctx.Done()
	cc.Stop()
	wg.Wait()
	return nil
}

// process is the one path every command takes: decode → validate → dedupe → act → respond → ack.
func (r *Runtime) process(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		r.log.Error().Err(err).Msg("message without metadata")
		_ = msg.Term()
		return
	}
	env, err := events.Decode(msg.Data())
	if err == nil && env.Server != r.server {
		err = &events.ValidationError{Type: env.Type, Reason: fmt.Sprintf("addressed to server %q but delivered to %q", env.Server, r.server)}
	}
	if err != nil {
		id, typ := fallbackID(env, msg, meta)
		r.log.Warn().Str("cmd", id).Err(err).Msg("rejecting invalid command")
		r.respond(ctx, id, typ, nil, &Error{Code: CodeInvalid, Message: err.Error()})
		_ = msg.TermWithReason("invalid: " + err.Error())
		return
	}
	log := r.log.With().Str("cmd", env.ID).Str("type", env.Type).Logger()
	// A redelivery may follow a crash after the result went out: never answer twice.
	if meta.NumDelivered > 1 && r.hasResult(ctx, env.ID) {
		log.Info().Msg("already answered, acknowledging duplicate")
		_ = msg.DoubleAck(ctx)
		return
	}
	h, ok := r.handlers[env.Type]
	if !ok {
		r.respond(ctx, env.ID, env.Type, nil, Invalid("server %s does not handle %s commands (is the agent older than the CLI?)", r.server, env.Type))
		_ = msg.TermWithReason("no handler")
		return
	}
	unlock := r.locks.lock(lockKey(env))
	defer unlock()

	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go keepAlive(hctx, msg)
	req := &Request{Envelope: env, Attempt: int(meta.NumDelivered), Log: log}
	req.progress = func(step, m string) { r.progress(env.ID, step, m) }
	out, herr := safeCall(hctx, h, req)
	if ctx.Err() != nil {
		// Shutting down: leave the command for redelivery rather than guess.
		return
	}
	if herr != nil && IsTransient(herr) && int(meta.NumDelivered) < bus.MaxDeliver {
		delay := backoff(int(meta.NumDelivered))
		log.Warn().Err(herr).Dur("retry_in", delay).Int("attempt", int(meta.NumDelivered)).Msg("transient failure")
		_ = msg.NakWithDelay(delay)
		return
	}
	if herr != nil {
		log.Warn().Err(herr).Msg("command failed")
	} else {
		log.Info().Msg("command done")
	}
	if err := r.respond(ctx, env.ID, env.Type, out, herr); err != nil {
		log.Error().Err(err).Msg("publishing result failed; will retry")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	// A confirmed ack; a lost one only means a redelivery, which finds the result.
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn().Err(err).Msg("ack not confirmed; a redelivery will find the result")
	}
}

// query answers one query on its reply subject: decode → validate → act → respond.
func (r *Runtime) query(ctx context.Context, m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	env, err := events.Decode(m.Data)
	if err == nil && env.Server != r.server {
		err = &events.ValidationError{Type: env.Type, Reason: fmt.Sprintf("addressed to server %q but asked of %q", env.Server, r.server)}
	}
	var out any
	var id, typ string
	if err != nil {
		err = &Error{Code: CodeInvalid, Message: err.Error()}
		id, typ = "invalid-"+events.NewID(), "unknown"
		if env != nil && bus.ValidToken(env.ID) {
			id, typ = env.ID, env.Type
		}
	} else if h, ok := r.queries[env.Type]; !ok {
		id, typ = env.ID, env.Type
		err = Invalid("server %s does not answer %s queries (is the agent older than the CLI?)", r.server, env.Type)
	} else {
		id, typ = env.ID, env.Type
		out, err = safeCall(ctx, h, &Request{Envelope: env, Attempt: 1, Log: r.log.With().Str("query", env.ID).Str("type", env.Type).Logger()})
	}
	raw, rerr := r.resultEnvelope(id, typ, out, err)
	if rerr != nil {
		r.log.Error().Err(rerr).Msg("encoding query result")
		return
	}
	_ = m.Respond(raw)
}

func safeCall(ctx context.Context, h Handler, req *Request) (out any, err error) {
	defer func() {
		if p := recover(); p != nil {
			req.Log.Error().Str("stack", string(debug.Stack())).Msgf("handler panic: %v", p)
			err = &Error{Code: CodeInternal, Message: fmt.Sprintf("internal error in %s handler: %v", req.Envelope.Type, p)}
		}
	}()
	return h(ctx, req)
}

// keepAlive tells JetStream the command is still being worked on, so that a slow
// handler is not redelivered while a crashed one is, after AckWait.
func keepAlive(ctx context.Context, msg jetstream.Msg) {
	t := time.NewTicker(bus.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = msg.InProgress()
		}
	}
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
	env, err := events.New(events.TypeResult, "agent/"+r.server, r.server, res)
	if err != nil {
		return nil, err
	}
	env.ID = "result-" + id
	return env.Marshal()
}

// respond publishes the result of command id; JetStream drops a second one with the same id.
func (r *Runtime) respond(ctx context.Context, id, typ string, out any, herr error) error {
	raw, err := r.resultEnvelope(id, typ, out, herr)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = r.conn.JS.PublishMsg(pctx, &nats.Msg{Subject: bus.ResultSubject(id), Data: raw}, jetstream.WithMsgID("result-"+id))
	return err
}

func (r *Runtime) hasResult(ctx context.Context, id string) bool {
	_, err := r.results.GetLastMsgForSubject(ctx, bus.ResultSubject(id))
	return err == nil
}

func (r *Runtime) progress(id, step, m string) {
	env, err := events.New(events.TypeProgress, "agent/"+r.server, r.server, events.Progress{Command: id, Step: step, Message: m})
	if err != nil {
		return
	}
	if raw, err := env.Marshal(); err == nil {
		_ = r.conn.NC.Publish(bus.ProgressSubject(id), raw)
	}
}

// fallbackID finds an id to answer an invalid message on: its own, its dedup id, or its sequence.
func fallbackID(env *events.Envelope, msg jetstream.Msg, meta *jetstream.MsgMetadata) (string, string) {
	typ := "unknown"
	if env != nil && env.Type != "" {
		typ = env.Type
	}
	if env != nil && bus.ValidToken(env.ID) {
		return env.ID, typ
	}
	var probe struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(msg.Data(), &probe) == nil && bus.ValidToken(probe.ID) && len(probe.ID) <= 128 {
		return probe.ID, typ
	}
	if id := msg.Headers().Get(nats.MsgIdHdr); bus.ValidToken(id) {
		return id, typ
	}
	return fmt.Sprintf("seq-%d", meta.Sequence.Stream), typ
}

// lockKey serialises commands about the same container; others run in parallel.
func lockKey(env *events.Envelope) string {
	var probe struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(env.Data, &probe) == nil && probe.Name != "" {
		return probe.Name
	}
	return ""
}

type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	if key == "" {
		return func() {}
	}
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
