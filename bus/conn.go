package bus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// DefaultURL is where `skein server` listens unless told otherwise.
const DefaultURL = "nats://127.0.0.1:4222"

// ConnOptions configures a connection to NATS.
type ConnOptions struct {
	// URL is one or more comma-separated NATS URLs (all members of a cluster, ideally).
	URL string
	// Name identifies the client in the server's monitoring.
	Name string
	// Wait keeps retrying the first connection instead of failing at once (agents do).
	Wait bool
	// Log receives connection state changes.
	Log zerolog.Logger
	// Creds are the client's credentials (a NATS creds file's content); none
	// for a server that asks for none.
	Creds []byte
	// CA is the PEM certificate of the CA that signed the server's TLS
	// certificate; with it the connection uses TLS.
	CA []byte
}

// Conn is a NATS connection with its JetStream context.
type Conn struct {
	// NC is the core NATS connection.
	NC *nats.Conn
	// JS is the JetStream API on it.
	JS jetstream.JetStream
	// Keys make and check the MACs of commands and results; nil on a bus
	// that asks for no credentials.
	Keys *Keys

	stranded *stranded
}

// Connect dials NATS; the connection reconnects forever, since a restarted server
// must find its agents and waiting clients again without a manual step.
func Connect(o ConnOptions) (*Conn, error) {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	log := o.Log
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, 100*time.Millisecond),
		nats.ReconnectBufSize(32 << 20),
		nats.PingInterval(5 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn().Err(err).Msg("nats")
		}),
	}
	if o.Wait {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	var keys *Keys
	if len(o.Creds) > 0 {
		var err error
		if keys, err = ParseKeys(o.Creds); err != nil {
			return nil, err
		}
		token, err := jwt.ParseDecoratedJWT(o.Creds)
		if err != nil {
			return nil, fmt.Errorf("bus: the credentials hold no JWT: %w", err)
		}
		kp, err := nkeys.ParseDecoratedNKey(o.Creds)
		if err != nil {
			return nil, fmt.Errorf("bus: the credentials hold no key: %w", err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserJWTAndSeed(token, string(seed)))
		// Replies go to the role's own inbox, the one subject it may read them on.
		if uc, err := jwt.DecodeUserClaims(token); err == nil {
			for _, tag := range uc.Tags {
				kind, ok := strings.CutPrefix(tag, "skein-role:")
				if ok && kind != "admin" {
					opts = append(opts, nats.CustomInboxPrefix("_INBOX."+uc.Name))
				}
				if ok && kind != "observer" && !keys.Signs() {
					return nil, fmt.Errorf("bus: these %s credentials hold no key to sign commands and results (made by an older skein): issue them again with `skein creds %s`", uc.Name, strings.Replace(uc.Name, "-", " ", 1))
				}
			}
		}
	}
	if len(o.CA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CA) {
			return nil, fmt.Errorf("bus: the CA holds no PEM certificate")
		}
		opts = append(opts, nats.Secure(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	nc, err := nats.Connect(o.URL, opts...)
	if errors.Is(err, nats.ErrAuthorization) || (err != nil && strings.Contains(strings.ToLower(err.Error()), "authorization")) {
		return nil, fmt.Errorf("the bus at %s refused these credentials (%v): pass --creds FILE or SKEIN_CREDS; `skein creds` on the server's machine makes them", o.URL, err)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot reach NATS at %s: %w (start one with `skein server` or `skein up`, or pass --nats / SKEIN_NATS)", o.URL, err)
	}
	// An async publish not acknowledged within 2 s fails, and is published again
	// by its caller (the message id makes it once): a stream whose leader was
	// lost answers again after the election, not never.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(2*time.Second))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	return &Conn{NC: nc, JS: js, Keys: keys, stranded: &stranded{}}, nil
}

// Close drains nothing and closes the connection.
func (c *Conn) Close() { c.NC.Close() }
