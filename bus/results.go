package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
)

// HeaderResultToken names one publication of a result; the same token ends
// the reply subject (StoredSubject) that JetStream acknowledges it on.
const HeaderResultToken = "Skein-Result-Token"

// storedAck is JetStream's answer to a publication: where it was stored, or why not.
type storedAck struct {
	Stream string `json:"stream"`
	Error  *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// storedBefore says whether a JetStream error code refuses a result because
// its subject holds one already (ExpectedLastSubjSeqHeader: 10071, or 10164
// from a replicated stream): a copy published before it was stored.
func storedBefore(code int) bool {
	return code == int(jetstream.JSErrCodeStreamWrongLastSequence) || code == int(jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// ResultSlots is how many messages the subject of a command's result keeps:
// its agent's result and what others had stored there before it. The
// stream refuses more, so what is stored after the result cannot push it
// out; readers take the one its agent published (AuthenticResult).
const ResultSlots = 4

// AuthenticResult reads the result stored on subject (one server's, or
// AnyResultSubject) that its server's agent published, from the results
// stream's leader; nil when none is stored.
func AuthenticResult(ctx context.Context, nc *nats.Conn, keys *Keys, subject string) (*StoredMsg, error) {
	m, err := LastStored(ctx, nc, StreamResults, subject)
	if err != nil || m == nil || authenticResult(keys, m) {
		return m, err
	}
	// Others' messages are stored there too: look at each the subject keeps.
	seq := uint64(1)
	for range ResultSlots {
		if m, err = NextStored(ctx, nc, StreamResults, subject, seq); err != nil || m == nil {
			return nil, err
		}
		if authenticResult(keys, m) {
			return m, nil
		}
		seq = m.Seq + 1
	}
	return nil, nil
}

// authenticResult says whether m, stored on a result subject, carries the
// MAC of the server that subject names.
func authenticResult(keys *Keys, m *StoredMsg) bool {
	server, ok := strings.CutPrefix(m.Subject, Prefix+".result.")
	server, _, ok2 := strings.Cut(server, ".")
	return ok && ok2 && keys.Authentic(server, m.Subject, m.Data, m.Header)
}

// ErrResultSubjectFull is a result refused because its subject holds
// ResultSlots messages already, none of them its server's: others had them
// stored there before it (a command id they could guess). Publishing again
// cannot store it.
var ErrResultSubjectFull = errors.New("the result's subject is full of messages others stored there")

// errStoredBefore is a result refused because its subject holds one already.
var errStoredBefore = errors.New("a result is stored there already")

// parseStoredAck reads JetStream's acknowledgement of a result: err when it
// was not stored, errStoredBefore when its subject holds one already.
func parseStoredAck(data []byte) error {
	var a storedAck
	if err := json.Unmarshal(data, &a); err != nil {
		return fmt.Errorf("storing the result: an unreadable acknowledgement: %w", err)
	}
	if a.Error != nil && storedBefore(a.Error.ErrCode) {
		return errStoredBefore
	}
	// nats-server's ErrMaxMsgsPerSubject, refused by DiscardNewPerSubject
	// (TestAFullResultSubjectEndsTheCommand fails if the words change).
	if a.Error != nil && strings.Contains(a.Error.Description, "maximum messages per subject exceeded") {
		return ErrResultSubjectFull
	}
	if a.Error != nil {
		return fmt.Errorf("storing the result: %s (%d)", a.Error.Description, a.Error.Code)
	}
	if a.Stream != StreamResults {
		return fmt.Errorf("storing the result: acknowledged by stream %q, not %s", a.Stream, StreamResults)
	}
	return nil
}

// ResultPublisher publishes an agent's results into the results stream with
// StoredSubject as the reply and waits there for JetStream's acknowledgement
// of storing it: one subscription for all the agent's results.
type ResultPublisher struct {
	conn   *Conn
	server string
	sub    *nats.Subscription

	mu      sync.Mutex
	waiting map[string]chan []byte
}

// NewResultPublisher listens for the storage acknowledgements of server's results.
func NewResultPublisher(conn *Conn, server string) (*ResultPublisher, error) {
	p := &ResultPublisher{conn: conn, server: server, waiting: map[string]chan []byte{}}
	sub, err := conn.NC.Subscribe(ServerStoredAcks(server), func(m *nats.Msg) {
		token := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		p.mu.Lock()
		ch := p.waiting[token]
		delete(p.waiting, token)
		p.mu.Unlock()
		if ch != nil {
			ch <- m.Data
		}
	})
	if err != nil {
		return nil, fmt.Errorf("bus: storage acknowledgements of %s: %w", server, err)
	}
	p.sub = sub
	return p, nil
}

// Close stops listening.
func (p *ResultPublisher) Close() { _ = p.sub.Unsubscribe() }

// Publish publishes raw as the result of command id and returns once the
// results stream has it: stored once, on a subject that holds no result of
// id yet; a copy published again is refused and counts as stored. What
// another stored there (the server can be made to publish anywhere) is not
// this server's result: it is replaced.
func (p *ResultPublisher) Publish(ctx context.Context, id string, raw []byte) error {
	subject := ResultSubject(p.server, id)
	var mac string
	if k := p.conn.Keys; k.Signs() {
		var err error
		if mac, err = k.ResultMAC(p.server, subject, raw); err != nil {
			return fmt.Errorf("the result of %s: %w", id, err)
		}
	}
	var after uint64
	for try := 1; ; try++ {
		err := p.publishOnce(ctx, subject, raw, mac, after)
		if !errors.Is(err, errStoredBefore) {
			return err
		}
		if mac == "" {
			return nil
		}
		if m, err := AuthenticResult(ctx, p.conn.NC, p.conn.Keys, subject); err != nil || m != nil {
			return err
		}
		m, err := LastStored(ctx, p.conn.NC, StreamResults, subject)
		switch {
		case err != nil:
			return fmt.Errorf("the result of %s: %w", id, err)
		case m == nil:
			after = 0
		case try >= 3:
			return fmt.Errorf("the result of %s: what others store on its subject keeps taking its place", id)
		default:
			after = m.Seq
		}
	}
}

// publishOnce publishes a result on subject if the subject's last message is
// after (0: none), and waits for JetStream to store it.
func (p *ResultPublisher) publishOnce(ctx context.Context, subject string, raw []byte, mac string, after uint64) error {
	// Random: another agent, which may read stored results, cannot guess the
	// next one and have JetStream acknowledge its own message there.
	token := events.NewID()
	m := nats.NewMsg(subject)
	m.Data = raw
	// Once per subject, which only this server may publish on: a message id
	// is deduplicated across the stream, so another agent publishing first
	// under the same id would have this result dropped.
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(after, 10))
	m.Header.Set(HeaderResultToken, token)
	if mac != "" {
		m.Header.Set(HeaderMAC, mac)
	}
	ch := make(chan []byte, 1)
	p.mu.Lock()
	p.waiting[token] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.waiting, token)
		p.mu.Unlock()
	}()
	id := subject[strings.LastIndexByte(subject, '.')+1:]
	m.Reply = StoredSubject(p.server, id, token)
	if err := p.conn.NC.PublishMsg(m); err != nil {
		return fmt.Errorf("publishing the result of %s: %w", id, err)
	}
	select {
	case data := <-ch:
		return parseStoredAck(data)
	case <-ctx.Done():
		return fmt.Errorf("the result of %s was not confirmed stored: %w", id, ctx.Err())
	}
}

// resultWatch follows the stored result of one command as a client waits for it.
type resultWatch struct {
	// server is the command's server; "" takes any server's result.
	server, id string
	keys       *Keys
	ch         chan *nats.Msg
	sub        *nats.Subscription
}

// watchResult starts following command id's stored result; server "" for any server's.
func (c *Client) watchResult(server, id string) (*resultWatch, error) {
	subject := AnyStoredResult(id)
	if server != "" {
		subject = StoredResultSubject(server, id)
	}
	w := &resultWatch{server: server, id: id, keys: c.conn.Keys, ch: make(chan *nats.Msg, 4)}
	sub, err := c.conn.NC.ChanSubscribe(subject, w.ch)
	if err != nil {
		return nil, err
	}
	w.sub = sub
	return w, nil
}

func (w *resultWatch) stop() { _ = w.sub.Unsubscribe() }

// take reads a stored result of the command as the results stream
// republished it (ok, and err when it is unreadable or says the command
// failed); not ok for anything else on its subject, which the caller answers
// by reading the stream. Others can have the server send there too (no
// permission covers where a JetStream reply or a push consumer's delivery
// goes): a push delivery has a reply subject; a direct get's answer of
// another stream's message, or a republish by another stream, has that
// stream's headers, added after any a forger stored; the server's own
// results stream's copy of another server's result names that subject.
func (w *resultWatch) take(m *nats.Msg) (res *events.Result, ok bool, err error) {
	server, found := strings.CutPrefix(m.Subject, Prefix+".stored.")
	server, found2 := strings.CutSuffix(server, "."+w.id)
	if !found || !found2 || !ValidToken(server) || (w.server != "" && server != w.server) || m.Reply != "" {
		return nil, false, nil
	}
	if !onlyValue(m.Header, jetstream.StreamHeader, StreamResults) ||
		!onlyValue(m.Header, jetstream.SubjectHeader, ResultSubject(server, w.id)) ||
		len(m.Header.Values(jetstream.SequenceHeader)) != 1 ||
		!w.keys.Authentic(server, ResultSubject(server, w.id), m.Data, m.Header) {
		return nil, false, nil
	}
	res, err = decodeResult(m.Data)
	if res != nil && res.Command != w.id {
		return nil, false, nil
	}
	return res, true, err
}

// onlyValue says whether header key has one value, want.
func onlyValue(h nats.Header, key, want string) bool {
	v := h.Values(key)
	return len(v) == 1 && v[0] == want
}

// Authentic says whether a result's MAC is server's, as stored on subject;
// every result is, on a bus that asks for no credentials.
func (k *Keys) Authentic(server, subject string, data []byte, h nats.Header) bool {
	if !k.Signs() {
		return true
	}
	macs := h.Values(HeaderMAC)
	return len(macs) == 1 && k.VerifyResult(server, subject, data, macs[0])
}
