package bus

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// auditSubject is where nats-server audits each JetStream API request of
// the account, with who made it.
const auditSubject = "$JS.EVENT.ADVISORY.API"

// guard follows the audit of the account's JetStream API requests until ctx
// ends. A consumer made by a role other than the admin that delivers where
// the role may not subscribe (another server's subjects, an API subject:
// the server publishes every message it takes there, as itself) is deleted
// at once, and the role revoked: no skein component makes one. A durable
// consumer such a role makes is recorded with its maker, and deleted once
// the maker's credentials are revoked, with every other it made.
func guard(ctx context.Context, a *Authority, js jetstream.JetStream, log zerolog.Logger) {
	ch := make(chan *nats.Msg, 256)
	sub, err := js.Conn().ChanSubscribe(auditSubject, ch)
	if err != nil {
		log.Error().Err(err).Msg("following the JetStream API's audit: consumers roles make are not checked")
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-ch:
			checkAudit(ctx, a, js, m.Data, log)
		case <-t.C:
			for _, c := range a.madeByRevoked() {
				deleteMade(ctx, a, js, c, log)
			}
		}
	}
}

// checkAudit acts on one audited request: a consumer made or deleted.
func checkAudit(ctx context.Context, a *Authority, js jetstream.JetStream, data []byte, log zerolog.Logger) {
	var audit server.JSAPIAudit
	if err := json.Unmarshal(data, &audit); err != nil || audit.Client == nil {
		return
	}
	if rest, ok := strings.CutPrefix(audit.Subject, "$JS.API.CONSUMER.DELETE."); ok {
		if stream, name, ok := strings.Cut(rest, "."); ok {
			_ = a.setMade(stream+"/"+name, "")
		}
		return
	}
	if !strings.HasPrefix(audit.Subject, "$JS.API.CONSUMER.CREATE.") && !strings.HasPrefix(audit.Subject, "$JS.API.CONSUMER.DURABLE.CREATE.") {
		return
	}
	var resp server.JSApiConsumerCreateResponse
	if err := json.Unmarshal([]byte(audit.Response), &resp); err != nil || resp.Error != nil || resp.ConsumerInfo == nil || resp.Config == nil {
		return // not made
	}
	role, ok := a.roleOfUser(audit.Client.User)
	if !ok || role.Kind == "admin" {
		return
	}
	consumer := resp.Stream + "/" + resp.Name
	if d := resp.Config.DeliverSubject; d != "" && !role.mayReceive(d) {
		log.Error().Str("role", role.Name()).Str("consumer", consumer).Str("deliver", d).
			Msg("a consumer delivering where its maker may not subscribe: deleted, and the role revoked; issue it new credentials once the server is trusted again")
		deleteConsumer(ctx, js, resp.Stream, resp.Name, log)
		if _, err := a.Revoke(role); err != nil {
			log.Error().Err(err).Str("role", role.Name()).Msg("revoking")
		}
		return
	}
	if resp.Config.Durable != "" {
		if err := a.setMade(consumer, audit.Client.User); err != nil {
			log.Warn().Err(err).Str("consumer", consumer).Msg("recording who made a durable consumer")
		}
	}
}

// deleteMade deletes a recorded consumer whose maker was revoked.
func deleteMade(ctx context.Context, a *Authority, js jetstream.JetStream, consumer string, log zerolog.Logger) {
	stream, name, _ := strings.Cut(consumer, "/")
	if deleteConsumer(ctx, js, stream, name, log) {
		log.Info().Str("consumer", consumer).Msg("a consumer its revoked maker made: deleted")
		_ = a.setMade(consumer, "")
	}
}

// deleteConsumer deletes a consumer; true when it is gone.
func deleteConsumer(ctx context.Context, js jetstream.JetStream, stream, name string, log zerolog.Logger) bool {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := js.DeleteConsumer(dctx, stream, name)
	if err != nil && !IsNotFound(err) {
		log.Warn().Err(err).Str("stream", stream).Str("consumer", name).Msg("deleting a consumer")
		return false
	}
	return true
}

// mayReceive says whether the role may subscribe to subject.
func (r Role) mayReceive(subject string) bool {
	p := r.Permissions()
	if p.Sub.Deny.Contains(subject) {
		return false
	}
	for _, allow := range p.Sub.Allow {
		if server.SubjectMatchesFilter(subject, allow) {
			for _, deny := range p.Sub.Deny {
				if server.SubjectMatchesFilter(subject, deny) {
					return false
				}
			}
			return true
		}
	}
	return false
}
