package bus

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
)

// Publisher publishes the events of one server, stored in the events stream.
type Publisher struct {
	js     jetstream.JetStream
	source string
	server string
	// counted, when set, is told the type of each event stored.
	counted func(typ string)
}

// CountWith has f told the type of every event this publisher stores (metrics).
func (p *Publisher) CountWith(f func(typ string)) { p.counted = f }

// NewPublisher returns a publisher of events about server, sent by source.
func NewPublisher(js jetstream.JetStream, source, server string) *Publisher {
	return &Publisher{js: js, source: source, server: server}
}

// Publish validates payload against the schema of typ and publishes it as an
// event with a fresh id, retrying as Tell does.
func (p *Publisher) Publish(ctx context.Context, typ string, payload any) error {
	return p.Tell(ctx, events.NewID(), typ, payload)
}

// Tell publishes an event under id until the events stream has stored it or ctx
// ends: at least once, and always under the same id, so that JetStream and
// subscribers drop a repeat. Events about one thing are told in order by
// telling them one after the other.
func (p *Publisher) Tell(ctx context.Context, id, typ string, payload any) error {
	env, err := events.New(typ, p.source, p.server, payload)
	if err != nil {
		return err
	}
	env.ID = id
	raw, err := env.Marshal()
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: EventSubject(p.server, typ), Data: raw}
	msgID, err := p.msgID(msg.Subject, id)
	if err != nil {
		return err
	}
	wait := 50 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = p.js.PublishMsg(pctx, msg, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			if p.counted != nil {
				p.counted(typ)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("publish event %s %s: %w", typ, id, err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// msgID is the id JetStream deduplicates an event by: the same for every
// repeat of it, and one no other server can foresee (the stream's
// duplicate window is shared by every publisher: another agent publishing
// first under an id this event will use would have it dropped). Keyed by
// the publisher's credentials' signature, deterministic for ed25519; the
// event's own id on a bus that asks for no credentials.
func (p *Publisher) msgID(subject, id string) (string, error) {
	nc := p.js.Conn()
	if nc == nil || nc.Opts.SignatureCB == nil {
		return id, nil
	}
	sig, err := nc.Opts.SignatureCB([]byte("skein-event-id\n" + subject + "\n" + id))
	if err != nil {
		return "", fmt.Errorf("event %s: %w", id, err)
	}
	sum := sha256.Sum256(sig)
	return "e-" + base64.RawURLEncoding.EncodeToString(sum[:18]), nil
}
