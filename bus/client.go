package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
)

// ErrNoResult means no result arrived in time; the command may still run later.
var ErrNoResult = errors.New("no result yet")

// CommandError is a command that its agent answered with an error.
type CommandError struct {
	// Code classifies the error (events.ErrorInfo.Code).
	Code string
	// Message says what went wrong and how to fix it.
	Message string
}

func (e *CommandError) Error() string { return e.Message }

// Client publishes commands and waits for their results.
type Client struct {
	conn   *Conn
	source string

	mu      sync.Mutex
	results jetstream.Stream
}

// NewClient returns a client whose messages name source as their sender.
func NewClient(conn *Conn, source string) *Client { return &Client{conn: conn, source: source} }

// Conn returns the client's connection.
func (c *Client) Conn() *Conn { return c.conn }

// Call is one command on its way.
type Call struct {
	// Envelope is the command as published.
	Envelope *events.Envelope
	// Progress receives the agent's progress reports; nil to ignore them.
	Progress func(events.Progress)
}

// NewCommand builds a validated command envelope; id may be "" for a fresh one.
func (c *Client) NewCommand(server, typ, id string, payload any) (*events.Envelope, error) {
	if !ValidToken(server) {
		return nil, fmt.Errorf("bad server name %q", server)
	}
	env, err := events.New(typ, c.source, server, payload)
	if err != nil {
		return nil, err
	}
	env.Fresh = true
	if id != "" {
		if !ValidToken(id) || len(id) > 128 || !idSafe(id) {
			return nil, fmt.Errorf("bad command id %q: use up to 128 of A-Z a-z 0-9 _ -", id)
		}
		env.ID, env.Fresh = id, false
	}
	return env, nil
}

// HeaderFreshID marks a command whose id its client made for it: the agent
// then needs not look for an earlier result of it on its first delivery.
const HeaderFreshID = "Skein-Fresh-Id"

// commandMsg is the message that carries a command.
func commandMsg(env *events.Envelope, raw []byte) *nats.Msg {
	m := nats.NewMsg(CommandSubject(env.Server, env.Type))
	m.Data = raw
	if env.Fresh {
		m.Header.Set(HeaderFreshID, "1")
	}
	return m
}

// Send publishes a command and returns once JetStream has stored it.
func (c *Client) Send(ctx context.Context, env *events.Envelope) error {
	raw, err := env.Marshal()
	if err != nil {
		return err
	}
	_, err = c.conn.JS.PublishMsg(ctx, commandMsg(env, raw), jetstream.WithMsgID(env.ID))
	if err != nil {
		return fmt.Errorf("publish %s: %w", env.Type, err)
	}
	return nil
}

// Do publishes a command and waits for its result. A result that says the command
// failed is returned along with a *CommandError.
func (c *Client) Do(ctx context.Context, call Call) (*events.Result, error) {
	env := call.Envelope
	w, err := c.watchResult(env.Server, env.ID)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	if call.Progress != nil {
		psub, err := c.conn.NC.Subscribe(ProgressSubject(env.Server, env.ID), func(m *nats.Msg) {
			if pe, err := events.Decode(m.Data); err == nil {
				var p events.Progress
				if pe.Payload(&p) == nil {
					call.Progress(p)
				}
			}
		})
		if err != nil {
			return nil, err
		}
		defer psub.Unsubscribe()
	}
	raw, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	// Publish without blocking on the ack: the ack and the result travel in parallel.
	fut, err := c.conn.JS.PublishMsgAsync(commandMsg(env, raw), jetstream.WithMsgID(env.ID))
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", env.Type, err)
	}
	acked := false
	// The live result can be missed across a reconnect: look in the stream now and then.
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for {
		select {
		case m := <-w.data:
			if raw := w.saw(m); raw != nil {
				return decodeResult(raw)
			}
		case m := <-w.acks:
			raw, lookup := w.stored(m)
			if raw != nil {
				return decodeResult(raw)
			}
			if lookup {
				if res, ok, _ := c.LookupResult(ctx, env.ID); ok {
					return res, resultErr(res)
				}
			}
		case <-futOk(fut):
			acked = true
			fut = nil
		case err := <-futErr(fut):
			// The ack was lost in a disconnect; publish again: the id makes it idempotent.
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
				time.Sleep(250 * time.Millisecond)
			}
			fut, err = c.conn.JS.PublishMsgAsync(commandMsg(env, raw), jetstream.WithMsgID(env.ID))
			if err != nil {
				return nil, fmt.Errorf("publish %s: %w", env.Type, err)
			}
		case <-poll.C:
			if res, ok, _ := c.LookupResult(ctx, env.ID); ok {
				return res, resultErr(res)
			}
		case <-ctx.Done():
			if !acked {
				return nil, fmt.Errorf("command %s was not confirmed by NATS: %w", env.ID, ctx.Err())
			}
			return nil, fmt.Errorf("%w for command %s (%s): it stays queued for server %s", ErrNoResult, env.ID, env.Type, env.Server)
		}
	}
}

func idSafe(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func futOk(f jetstream.PubAckFuture) <-chan *jetstream.PubAck {
	if f == nil {
		return nil
	}
	return f.Ok()
}

func futErr(f jetstream.PubAckFuture) <-chan error {
	if f == nil {
		return nil
	}
	return f.Err()
}

// Query sends a query to an agent over core request/reply and returns its result.
// Nothing is stored: an agent that is down answers nothing, at once.
func (c *Client) Query(ctx context.Context, env *events.Envelope) (*events.Result, error) {
	raw, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	m, err := c.conn.NC.RequestMsgWithContext(ctx, &nats.Msg{Subject: QuerySubject(env.Server, env.Type), Data: raw})
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("no agent of server %s answers: is it running? (`skein servers`)", env.Server)
	}
	if err != nil {
		return nil, fmt.Errorf("%s to %s: %w", env.Type, env.Server, err)
	}
	return decodeResult(m.Data)
}

// WaitResult waits for the result of a command that was sent earlier; waiting,
// if not nil, is called once the live result can no longer be missed.
func (c *Client) WaitResult(ctx context.Context, id string, waiting func()) (*events.Result, error) {
	w, err := c.watchResult("", id)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	if waiting != nil {
		waiting()
	}
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	// Look in the stream first, then whenever an acknowledgement or the poll says so.
	look := true
	for {
		if look {
			if res, ok, _ := c.LookupResult(ctx, id); ok {
				return res, resultErr(res)
			}
		}
		look = false
		select {
		case m := <-w.data:
			if raw := w.saw(m); raw != nil {
				return decodeResult(raw)
			}
		case m := <-w.acks:
			raw, lookup := w.stored(m)
			if raw != nil {
				return decodeResult(raw)
			}
			look = lookup
		case <-poll.C:
			look = true
		case <-ctx.Done():
			return nil, fmt.Errorf("%w for command %s", ErrNoResult, id)
		}
	}
}

// LookupResult reads the stored result of command id, if there is one.
func (c *Client) LookupResult(ctx context.Context, id string) (*events.Result, bool, error) {
	// A request in flight when the server dies is never answered: bound each look.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.resultsStream(ctx)
	if err != nil {
		return nil, false, err
	}
	m, err := st.GetLastMsgForSubject(ctx, AnyResultSubject(id))
	if err != nil {
		if IsNotFound(err) {
			return nil, false, nil
		}
		return nil, false, err
	}
	res, err := decodeResult(m.Data)
	if res == nil {
		return nil, false, err
	}
	return res, true, nil
}

func (c *Client) resultsStream(ctx context.Context) (jetstream.Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.results != nil {
		return c.results, nil
	}
	st, err := c.conn.JS.Stream(ctx, StreamResults)
	if err != nil {
		return nil, err
	}
	c.results = st
	return st, nil
}

func decodeResult(raw []byte) (*events.Result, error) {
	res, err := events.DecodeResult(raw)
	if err != nil {
		return nil, fmt.Errorf("bad result: %w", err)
	}
	if res.OK {
		if err := events.ValidateOutput(res.CommandType, res.Output); err != nil {
			return nil, fmt.Errorf("bad result output: %w", err)
		}
	}
	return res, resultErr(res)
}

func resultErr(res *events.Result) error {
	if res.OK {
		return nil
	}
	if res.Error == nil {
		return &CommandError{Code: "internal", Message: "command failed without a reason"}
	}
	return &CommandError{Code: res.Error.Code, Message: res.Error.Message}
}
