package bus

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// A NATS node cut from its cluster keeps its clients' connections and
// answers none of their JetStream requests: nats.go moves a connection to
// another server only when it breaks. The machines' soak measured it: the
// first command after a node's cut done 8.2 s and 14.5 s later, its
// server's agent stuck with the node until the cut ended.
const (
	// strandedAfter is how many failed checks in a row move a connection:
	// more than a leader election lasts (1-2 s on skein's nodes).
	strandedAfter = 3
	// strandedWithin is how close together those failures must come.
	strandedWithin = 5 * time.Second
	// movedAtMost is the least time between two moves: when no node
	// answers (the whole cluster electing), the connection stays.
	movedAtMost = 10 * time.Second
	// strandedCheck bounds one check.
	strandedCheck = 750 * time.Millisecond
)

// stranded counts a connection's failed JetStream checks.
type stranded struct {
	mu       sync.Mutex
	checking bool
	fails    int
	lastFail time.Time
	moved    time.Time
}

// Stranded tells c that JetStream did not answer it as it should (a pull's
// heartbeats missed): it asks the JetStream API once (bounded), and when
// strandedAfter such asks in a row go unanswered and another server the
// connection knows answers the same ask, it moves the connection there
// (when none does, the whole cluster is without a leader: it stays).
// Calls made while a check runs are dropped.
func (c *Conn) Stranded(log zerolog.Logger) {
	s := c.stranded
	if s == nil {
		return // not made by Connect
	}
	s.mu.Lock()
	if s.checking {
		s.mu.Unlock()
		return
	}
	s.checking = true
	s.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), strandedCheck)
		_, err := c.JS.AccountInfo(ctx)
		cancel()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.checking = false
		now := time.Now()
		if err == nil {
			s.fails = 0
			return
		}
		if now.Sub(s.lastFail) > strandedWithin {
			s.fails = 0
		}
		s.fails++
		s.lastFail = now
		if s.fails < strandedAfter || now.Sub(s.moved) < movedAtMost || len(c.NC.Servers()) < 2 {
			return
		}
		s.fails = 0
		other := c.answeringElsewhere()
		if other == "" {
			log.Debug().Err(err).Msg("JetStream answers through no NATS server: staying")
			return
		}
		s.moved = now
		log.Warn().Err(err).Str("url", c.NC.ConnectedUrlRedacted()).Str("answers", other).Msg("JetStream does not answer through this NATS server (cut from its cluster?): moving to another")
		if err := c.NC.ForceReconnect(); err != nil {
			log.Warn().Err(err).Msg("moving to another NATS server")
		}
	}()
}

// answeringElsewhere returns a server of c's, other than the one it is
// connected to, whose JetStream API answers a connection made with c's
// options; "" when none does.
func (c *Conn) answeringElsewhere() string {
	current := c.NC.ConnectedUrl()
	for _, u := range c.NC.Servers() {
		if u == current {
			continue
		}
		o := c.NC.Opts
		o.Url, o.Servers = u, nil
		o.AllowReconnect, o.RetryOnFailedConnect = false, false
		o.Timeout = strandedCheck
		o.Name += " (checking " + u + ")"
		o.DisconnectedErrCB, o.ReconnectedCB, o.ClosedCB, o.AsyncErrorCB, o.ConnectedCB = nil, nil, nil, nil, nil
		nc, err := o.Connect()
		if err != nil {
			continue
		}
		ok := false
		if js, err := jetstream.New(nc); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), strandedCheck)
			_, err = js.AccountInfo(ctx)
			cancel()
			ok = err == nil
		}
		nc.Close()
		if ok {
			return u
		}
	}
	return ""
}
