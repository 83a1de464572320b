package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
)

// Publisher publishes the events of one server, stored in the events stream.
type Publisher struct {
	js     jetstream.JetStream
	source string
	server string
}

// NewPublisher returns a publisher of events about server, sent by source.
func NewPublisher(js jetstream.JetStream, source, server string) *Publisher {
	return &Publisher{js: js, source: source, server: server}
}

// Publish validates payload against the schema of typ and publishes it as an event.
func (p *Publisher) Publish(ctx context.Context, typ string, payload any) error {
	env, err := events.New(typ, p.source, p.server, payload)
	if err != nil {
		return err
	}
	raw, err := env.Marshal()
	if err != nil {
		return err
	}
	if _, err := p.js.PublishMsg(ctx, &nats.Msg{Subject: EventSubject(p.server, typ), Data: raw}, jetstream.WithMsgID(env.ID)); err != nil {
		return fmt.Errorf("publish event %s: %w", typ, err)
	}
	return nil
}
