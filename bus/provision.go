package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ProvisionRoles makes, with an admin's js, what the roles consume but may
// not make themselves, and puts back what differs: each agent's command
// consumer (filtered on its own commands) and backups object store (storing
// its own subjects), and the scheduler's command consumer. A consumer's
// filter and a stream's subjects are their config: a role that may make them
// may take another server's commands or store every reply on the bus.
func ProvisionRoles(ctx context.Context, js jetstream.JetStream, roles []Role) error {
	var errs []error
	for _, r := range roles {
		switch r.Kind {
		case "agent":
			if _, err := EnsureAgentConsumer(ctx, js, r.Server); err != nil {
				errs = append(errs, fmt.Errorf("bus: the command consumer of %s: %w", r.Server, err))
			}
			if _, err := EnsureBackupsStore(ctx, js, r.Server); err != nil {
				errs = append(errs, fmt.Errorf("bus: the backups store of %s: %w", r.Server, err))
			}
		case "scheduler":
			if _, err := EnsureAgentConsumer(ctx, js, SchedulerName); err != nil {
				errs = append(errs, fmt.Errorf("bus: the scheduler's command consumer: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// FollowAuthority keeps the running server ns in step with the authority's
// ledger until ctx ends: it applies revocations and provisions every role
// issued (ProvisionRoles, with an admin's js), at start, at once when this
// process issues or revokes, within a second when `skein creds` in another
// process does, and again every second while provisioning fails. It also
// guards the consumers roles make (guard).
func FollowAuthority(ctx context.Context, a *Authority, ns *server.Server, js jetstream.JetStream, log zerolog.Logger) {
	guarded := make(chan struct{})
	go func() { defer close(guarded); guard(ctx, a, js, log) }()
	defer func() { <-guarded }()
	last := a.LedgerModified()
	// Read again after taking its time: credentials issued by another process
	// since the authority was loaded would otherwise wait for the next write.
	a.mu.Lock()
	if err := a.readLedger(); err != nil {
		log.Warn().Err(err).Msg("reading the credentials ledger")
	}
	a.mu.Unlock()
	var done []Role
	var failed string
	provision := func() bool {
		roles := a.Issued()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := ProvisionRoles(pctx, js, roles); err != nil {
			// Said once while it fails the same way: it is tried every second.
			ev := log.Debug()
			if err.Error() != failed {
				ev, failed = log.Warn(), err.Error()
			}
			ev.Err(err).Msg("provisioning the roles' consumers and stores; trying again every second")
			return false
		}
		failed = ""
		if !slices.Equal(roles, done) {
			log.Debug().Int("roles", len(roles)).Msg("the roles' command consumers and backups stores are made")
			done = roles
		}
		return true
	}
	revoked := len(a.Revoked())
	apply := func() {
		if err := a.ApplyRevocations(ns); err != nil {
			log.Warn().Err(err).Msg("applying revocations")
			return
		}
		if n := len(a.Revoked()); n != revoked {
			revoked = n
			log.Info().Int("revoked", n).Msg("revocations applied")
		}
	}
	pending := !provision()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.changed:
			apply()
			pending = true
		case <-t.C:
			if m := a.LedgerModified(); !m.Equal(last) {
				last = m
				apply()
				pending = true
			}
		}
		if pending {
			pending = !provision()
		}
	}
}

// CommandConsumer returns the durable consumer of server's commands. On a
// bus that asks for credentials the bus's server makes it (no agent may make
// or change one), and this waits for it until ctx ends, telling log once what
// makes it; on a bus without authentication it makes it.
func CommandConsumer(ctx context.Context, conn *Conn, server string, log zerolog.Logger) (jetstream.Consumer, error) {
	if !conn.NC.AuthRequired() {
		return EnsureAgentConsumer(ctx, conn.JS, server)
	}
	name := AgentConsumerName(server)
	told := false
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		cons, err := conn.JS.Consumer(cctx, StreamCommands, name)
		cancel()
		if err == nil {
			cfg := cons.CachedInfo().Config
			if cfg.FilterSubject == ServerCommands(server) && len(cfg.FilterSubjects) == 0 {
				return cons, nil
			}
			// Not this server's commands only: taking them would answer others' as invalid.
			err = fmt.Errorf("it takes %q %v, not %s only", cfg.FilterSubject, cfg.FilterSubjects, ServerCommands(server))
		}
		if !told && ctx.Err() == nil {
			log.Warn().Err(err).Str("consumer", name).Msg("waiting for this server's command consumer: the bus's server makes it for every agent it issued credentials to; " +
				"if it does not come within seconds, restart `skein server` (or run `skein init` against an external NATS), or issue this agent's credentials again there: `skein creds agent " + server + "`")
			told = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bus: waiting for the command consumer %s (made by `skein server` for each agent it issued credentials to): %w", name, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
