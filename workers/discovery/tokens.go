package discovery

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/consul"
	"github.com/skeinhq/skein/internal/seal"
)

// The endpoints run Consul with ACLs on and default deny. Anonymous requests
// (DNS included) may read the catalog and nothing else. The agent of a server
// that hosts an endpoint holds the management token (sealed to it) and mints
// every server's agent a token of its own, limited to the catalog nodes named
// "<server>.*"; the token travels sealed to that agent in the tokens bucket.

// mintEvery is how often an endpoint's agent looks for servers without a token.
const mintEvery = 5 * time.Second

// verifyEvery is how often a minted token is checked to still exist in Consul.
const verifyEvery = time.Minute

// tokens is the worker's Consul token state.
type tokens struct {
	mu       sync.Mutex
	mine     map[string]events.ConsulToken // key → records made for this server
	current  string                        // the secret in use
	mintMu   sync.Mutex                    // one minting pass at a time
	verified map[string]time.Time          // endpoint/IP/accessor → when the token was last seen there
}

// catalogToken is the token the catalog client presents.
func (w *Worker) catalogToken() string {
	w.tok.mu.Lock()
	defer w.tok.mu.Unlock()
	return w.tok.current
}

// followTokens keeps the agent's catalog token: the newest record made for
// this server that its key opens.
func (w *Worker) followTokens(ctx context.Context) {
	for c := range w.tokens.Follow(ctx, ">", nil) {
		if c.Synced {
			continue
		}
		w.tok.mu.Lock()
		if c.Value == nil || c.Value.For != w.host.Server {
			delete(w.tok.mine, c.Key)
		} else {
			w.tok.mine[c.Key] = *c.Value
		}
		changed := w.pickToken()
		w.tok.mu.Unlock()
		if changed {
			w.cfg.Log.Info().Msg("consul token received")
			w.poked()
		}
	}
}

// pickToken sets the current token from the records; it reports a change.
// The caller holds w.tok.mu.
func (w *Worker) pickToken() bool {
	var best *events.ConsulToken
	secret := ""
	for _, t := range w.tok.mine {
		if best != nil && !t.Updated.After(best.Updated) {
			continue
		}
		if w.host.Secrets == nil {
			continue
		}
		s, err := w.host.Secrets.Open(t.Token)
		if err != nil {
			continue // sealed to an earlier key of this agent: a new one is on its way
		}
		t := t
		best, secret = &t, string(s)
	}
	if secret == w.tok.current {
		return false
	}
	w.tok.current = secret
	return true
}

// runMinter keeps a token for every server while this server hosts an endpoint.
func (w *Worker) runMinter(ctx context.Context) {
	tick := time.NewTicker(mintEvery)
	defer tick.Stop()
	for {
		if ep := w.hostedEndpoint(); ep != nil {
			if err := w.mint(ctx, *ep); err != nil && ctx.Err() == nil {
				w.cfg.Log.Warn().Err(err).Msg("minting consul tokens")
			}
		} else if w.endpointsLoaded() {
			w.dropTokens(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// hostedEndpoint is a ready endpoint of this server holding the management token.
func (w *Worker) hostedEndpoint() *events.Endpoint {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.eps {
		if e.Server == w.host.Server && e.Status == events.StatusReady && e.Management != nil {
			e := e
			return &e
		}
	}
	return nil
}

// endpointsLoaded reports whether every endpoint record was read, and none is this server's.
func (w *Worker) endpointsLoaded() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.loaded[w.endpoints.Store.Bucket()] {
		return false
	}
	for _, e := range w.eps {
		if e.Server == w.host.Server {
			return false
		}
	}
	return true
}

// dropTokens deletes the token records this server made: it hosts no
// endpoint any more, and the servers use those the other hosts make.
func (w *Worker) dropTokens(ctx context.Context) {
	recs, err := w.tokens.ListServer(ctx, w.host.Server)
	if err != nil {
		return
	}
	for _, r := range recs {
		_ = w.tokens.Delete(ctx, r.Key, r.Revision)
	}
	w.tok.mu.Lock()
	w.tok.verified = map[string]time.Time{}
	w.tok.mu.Unlock()
}

// mint gives every server with a sealing key a token of its own, through the
// endpoint ep of this server, and seals it to that server's agent.
func (w *Worker) mint(ctx context.Context, ep events.Endpoint) error {
	w.tok.mintMu.Lock()
	defer w.tok.mintMu.Unlock()
	if w.host.Secrets == nil {
		return fmt.Errorf("this agent has no key to open the management token")
	}
	mgmt, err := w.host.Secrets.Open(*ep.Management)
	if err != nil {
		return fmt.Errorf("opening the management token: %w", err)
	}
	acl, err := consul.NewACL(fmt.Sprintf("%s:%d", ep.IP, HTTPPort), string(mgmt))
	if err != nil {
		return err
	}
	hbs, err := w.hbs.Values(ctx)
	if err != nil {
		return err
	}
	recs, err := w.tokens.ListServer(ctx, w.host.Server)
	if err != nil {
		return err
	}
	made := map[string]events.ConsulToken{}
	for _, r := range recs {
		made[r.Value.For] = r.Value
	}
	var errs []string
	for _, hb := range hbs {
		if hb.SealKey == "" {
			continue
		}
		if err := w.mintFor(ctx, acl, ep, hb, made); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// mintFor makes sure server hb.Name has a live token sealed to its current key.
func (w *Worker) mintFor(ctx context.Context, acl *consul.ACL, ep events.Endpoint, hb events.Heartbeat, made map[string]events.ConsulToken) error {
	rec, had := made[hb.Name]
	// Seen through this endpoint: the endpoints may have been made anew since.
	seen := ep.Name + "/" + ep.IP + "/" + rec.Accessor
	if had && rec.To == hb.SealKey {
		w.tok.mu.Lock()
		fresh := time.Since(w.tok.verified[seen]) < verifyEvery
		w.tok.mu.Unlock()
		if fresh {
			return nil
		}
		ok, err := acl.TokenExists(ctx, rec.Accessor)
		if err != nil {
			return fmt.Errorf("checking the token of %s: %w", hb.Name, err)
		}
		if ok {
			// The rules may have changed since it was made: give them again.
			if err := w.ensureServerPolicy(ctx, acl, hb.Name); err != nil {
				return err
			}
			w.tok.mu.Lock()
			w.tok.verified[seen] = time.Now()
			w.tok.mu.Unlock()
			return nil
		}
	}
	if err := w.ensureServerPolicy(ctx, acl, hb.Name); err != nil {
		return err
	}
	accessor, secret := NewUUID(), NewUUID()
	policy, _ := ServerPolicy(hb.Name)
	if err := acl.EnsureToken(ctx, accessor, secret, "skein agent of "+hb.Name, policy.Name); err != nil {
		return err
	}
	sealed, err := seal.To(hb.SealKey, []byte(secret))
	if err != nil {
		return fmt.Errorf("sealing the token of %s: %w", hb.Name, err)
	}
	t := events.ConsulToken{For: hb.Name, Holder: w.host.Server, Accessor: accessor, To: hb.SealKey, Token: sealed, Updated: time.Now().UTC()}
	if _, err := w.tokens.Put(ctx, bus.Key(w.host.Server, hb.Name), t); err != nil {
		_ = acl.DeleteToken(ctx, accessor)
		return fmt.Errorf("storing the token of %s: %w", hb.Name, err)
	}
	if had {
		_ = acl.DeleteToken(ctx, rec.Accessor) // sealed to a key its agent no longer has
	}
	w.tok.mu.Lock()
	w.tok.verified[ep.Name+"/"+ep.IP+"/"+accessor] = time.Now()
	w.tok.mu.Unlock()
	w.cfg.Log.Info().Str("for", hb.Name).Str("accessor", accessor).Msg("consul token made")
	return nil
}

func (w *Worker) ensureServerPolicy(ctx context.Context, acl *consul.ACL, server string) error {
	p, err := ServerPolicy(server)
	if err != nil {
		return err
	}
	return acl.EnsurePolicy(ctx, p)
}

// NewUUID returns a random (version 4) UUID: a Consul token's accessor or secret.
func NewUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("discovery: no randomness: %v", err))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// prefixed is the catalog as one server's agent sees it: its node names carry
// the server's prefix at the Consul boundary, where its token may write those
// only, and nodes of other servers are not its business.
type prefixed struct {
	Catalog
	prefix string
}

func (p prefixed) Register(ctx context.Context, n consul.Node) error {
	n.Name = p.prefix + n.Name
	return p.Catalog.Register(ctx, n)
}

func (p prefixed) UpdateChecks(ctx context.Context, node, address string, checks []consul.Check) error {
	return p.Catalog.UpdateChecks(ctx, p.prefix+node, address, checks)
}

func (p prefixed) Deregister(ctx context.Context, node string) error {
	return p.Catalog.Deregister(ctx, p.prefix+node)
}

func (p prefixed) Nodes(ctx context.Context, meta map[string]string) (map[string][]string, error) {
	all, err := p.Catalog.Nodes(ctx, meta)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for n, ids := range all {
		if name, ok := strings.CutPrefix(n, p.prefix); ok {
			out[name] = ids
		}
	}
	return out, nil
}

func (p prefixed) NodeChecks(ctx context.Context, meta map[string]string) ([]consul.Node, error) {
	all, err := p.Catalog.NodeChecks(ctx, meta)
	if err != nil {
		return nil, err
	}
	var out []consul.Node
	for _, n := range all {
		if name, ok := strings.CutPrefix(n.Name, p.prefix); ok {
			n.Name = name
			out = append(out, n)
		}
	}
	return out, nil
}
