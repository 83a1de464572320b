package bus

import (
	"context"
	"errors"
	"fmt"
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
	// lookup reads a command's stored result (LookupResult; tests slow it).
	lookup func(ctx context.Context, server, id string) (*events.Result, bool, error)
}

// NewClient returns a client whose messages name source as their sender.
func NewClient(conn *Conn, source string) *Client {
	c := &Client{conn: conn, source: source}
	c.lookup = c.LookupResult
	return c
}

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

// CommandMsg is the message that carries a command, with its MAC under its
// server's key when the bus asks for credentials.
func (c *Client) CommandMsg(env *events.Envelope, raw []byte) (*nats.Msg, error) {
	m := nats.NewMsg(CommandSubject(env.Server, env.Type))
	m.Data = raw
	if env.Fresh {
		m.Header.Set(HeaderFreshID, "1")
	}
	if k := c.conn.Keys; k.Signs() {
		mac, err := k.CommandMAC(env.Server, m.Subject, env.Fresh, raw)
		if err != nil {
			return nil, fmt.Errorf("%s to %s: %w (only the admin's and the scheduler's credentials command servers)", env.Type, env.Server, err)
		}
		m.Header.Set(HeaderMAC, mac)
	}
	return m, nil
}

// commandMsgID is the id JetStream deduplicates a command by: on a bus
// with credentials one keyed by its server's key (JetStream's duplicate
// window is shared by every publisher: an id chosen with --id could
// otherwise be taken first by another's copy, which the agent drops, and
// the real command dropped as its duplicate); else the command's id.
func (c *Client) commandMsgID(env *events.Envelope) (string, error) {
	if k := c.conn.Keys; k.Signs() {
		return k.DedupID(env.Server, env.ID)
	}
	return env.ID, nil
}

// Send publishes a command and returns once JetStream has stored it.
func (c *Client) Send(ctx context.Context, env *events.Envelope) error {
	raw, err := env.Marshal()
	if err != nil {
		return err
	}
	m, err := c.CommandMsg(env, raw)
	if err != nil {
		return err
	}
	msgID, err := c.commandMsgID(env)
	if err != nil {
		return err
	}
	_, err = c.conn.JS.PublishMsg(ctx, m, jetstream.WithMsgID(msgID))
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
	p := newPublication(c, env, raw)
	if err := p.publish(); err != nil {
		return nil, err
	}
	return c.await(ctx, w, false, p)
}

// publication is a command on its way to JetStream: published without
// blocking on the ack (the ack and the result travel in parallel), and
// published again when its ack is lost or late. Copies share the message
// id: JetStream stores one, and the ack of any copy is the command's.
type publication struct {
	c       *Client
	env     *events.Envelope
	raw     []byte
	acks    chan *jetstream.PubAck
	fails   chan error
	pending int // copies whose ack is awaited
	acked   bool
	sent    time.Time
}

// maxCopies bounds the copies of one command awaiting their ack: each holds
// a place among the connection's pending async publishes until it times out.
const maxCopies = 3

func newPublication(c *Client, env *events.Envelope, raw []byte) *publication {
	return &publication{c: c, env: env, raw: raw, acks: make(chan *jetstream.PubAck, maxCopies), fails: make(chan error, maxCopies)}
}

func (p *publication) publish() error {
	m, err := p.c.CommandMsg(p.env, p.raw)
	if err != nil {
		return err
	}
	msgID, err := p.c.commandMsgID(p.env)
	if err != nil {
		return err
	}
	fut, err := p.c.conn.JS.PublishMsgAsync(m, jetstream.WithMsgID(msgID))
	if err != nil {
		return fmt.Errorf("publish %s: %w", p.env.Type, err)
	}
	p.pending++
	p.sent = time.Now()
	// Every future ends, acked or timed out (WithPublishAsyncTimeout).
	go func() {
		select {
		case a := <-fut.Ok():
			p.acks <- a
		case err := <-fut.Err():
			p.fails <- err
		}
	}()
	return nil
}

// resendDue says whether another copy should go: not acknowledged a look
// after the last was sent (a commands stream between leaders drops what it
// is sent without a word), and room for one more.
func (p *publication) resendDue() bool {
	return p != nil && !p.acked && p.pending > 0 && p.pending < maxCopies && time.Since(p.sent) >= FirstReadAttempt
}

// ok and failed are the copies' acks and failures; nil (never ready) when
// there is nothing to wait for.
func (p *publication) ok() <-chan *jetstream.PubAck {
	if p == nil {
		return nil
	}
	return p.acks
}

func (p *publication) failed() <-chan error {
	if p == nil {
		return nil
	}
	return p.fails
}

// await waits for the stored result of w's command: taken as the results
// stream republishes it, or read from the stream (at once when look, when
// something else comes on its subject, and every second, since a live result
// can be missed across a reconnect). p is the command's publication, nil
// when it was sent earlier.
func (c *Client) await(ctx context.Context, w *resultWatch, look bool, p *publication) (*events.Result, error) {
	// Every 250 ms for the first seconds, when a result is most often
	// missed: republished by a results stream leader that was then lost
	// (a NATS node's loss, found in BenchmarkNATSNodeLoss's slow rounds).
	poll := time.NewTicker(FirstReadAttempt)
	defer poll.Stop()
	often := time.Now().Add(2 * electionWindow)
	// Reads run beside the wait: one held by a results stream between
	// leaders must not hold up the result that arrives meanwhile.
	lctx, stopLooking := context.WithCancel(ctx)
	defer stopLooking()
	var reading chan lookedUp
	for {
		if look && reading == nil {
			reading = make(chan lookedUp, 1)
			go func(out chan<- lookedUp) {
				res, ok, err := c.lookup(lctx, w.server, w.id)
				out <- lookedUp{res, ok, err}
			}(reading)
			look = false
		}
		select {
		case m := <-w.ch:
			res, ok, err := w.take(m)
			if ok {
				return res, err
			}
			look = true
		case r := <-reading:
			reading = nil
			if r.ok {
				return r.res, resultErr(r.res)
			}
		case a := <-p.ok():
			p.pending--
			if p.acked {
				continue
			}
			p.acked = true
			// The id was sent before, within JetStream's duplicate window (this
			// copy is not delivered), or it is the caller's and may have been
			// answered before: its stored result then is not republished.
			look = a.Duplicate || !p.env.Fresh
		case err := <-p.failed():
			p.pending--
			if p.acked || p.pending > 0 {
				continue
			}
			// Every copy's ack was lost (a disconnect); publish again: the id makes it idempotent.
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
				time.Sleep(250 * time.Millisecond)
			}
			if err := p.publish(); err != nil {
				return nil, err
			}
		case <-poll.C:
			look = true
			if p.resendDue() {
				// One refused (too many pending) waits for the next look.
				_ = p.publish()
			}
			if !often.IsZero() && time.Now().After(often) {
				poll.Reset(time.Second)
				often = time.Time{}
			}
		case <-ctx.Done():
			switch {
			case p == nil:
				return nil, fmt.Errorf("%w for command %s", ErrNoResult, w.id)
			case !p.acked:
				return nil, fmt.Errorf("command %s was not confirmed by NATS: %w", w.id, ctx.Err())
			}
			return nil, fmt.Errorf("%w for command %s (%s): it stays queued for server %s", ErrNoResult, w.id, p.env.Type, p.env.Server)
		}
	}
}

// lookedUp is what a read of a stored result found.
type lookedUp struct {
	res *events.Result
	ok  bool
	err error
}

func idSafe(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
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

// WaitResult waits for the result of a command that was sent earlier to
// server ("" takes any server's: trusting every agent not to answer for
// another); waiting, if not nil, is called once the live result can no
// longer be missed.
func (c *Client) WaitResult(ctx context.Context, server, id string, waiting func()) (*events.Result, error) {
	if server == "" && c.conn.Keys.Signs() {
		// Any agent may answer for an id with its own server's MAC: only
		// the command's server tells which answer is its.
		return nil, fmt.Errorf("waiting for %s: name the server it was sent to (skein wait %s -s SERVER)", id, id)
	}
	w, err := c.watchResult(server, id)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	if waiting != nil {
		waiting()
	}
	// Look in the stream first: it may have been answered before.
	return c.await(ctx, w, true, nil)
}

// LookupResult reads the stored result of command id from server ("" for any
// server's), if there is one.
func (c *Client) LookupResult(ctx context.Context, server, id string) (*events.Result, bool, error) {
	// A request in flight when the server dies is never answered: bound each look.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	subject := AnyResultSubject(id)
	if server != "" {
		// Only server's agent may publish there.
		subject = ResultSubject(server, id)
	}
	// From the stream's leader: a replica catching up after a restart answers
	// a direct get with what it has, and the node a client is connected to
	// answers first (found by TestNATSCluster: a stored result not found for
	// the command's whole minute).
	// Only its agent's: others can have copies stored there too.
	m, err := AuthenticResult(ctx, c.conn.NC, c.conn.Keys, subject)
	if err != nil || m == nil {
		return nil, false, err
	}
	res, err := decodeResult(m.Data)
	if res == nil {
		return nil, false, err
	}
	return res, true, nil
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
