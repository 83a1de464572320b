package dashboard

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
)

// Verifier checks logins against the bus's credentials: the authority that
// issues and revokes them (bus.Authority).
type Verifier interface {
	// VerifyLogin checks a token made by `skein dashboard` for aud, one of
	// the dashboard's own addresses.
	VerifyLogin(token, aud string, now time.Time) (bus.Login, error)
	// IsRevoked tells whether a user was revoked since logging in.
	IsRevoked(user string) bool
}

// SessionTTL is how long a login lasts in the browser.
const SessionTTL = 12 * time.Hour

// sessionCookie is the name of the session's cookie: the __Host- prefix
// makes browsers refuse one set by another host or for another path.
const sessionCookie = "__Host-skein_session"

// canLogIn are the roles whose credentials open the dashboard.
var canLogIn = map[string]bool{"admin": true, "observer": true}

// guard lets through only requests with a session, made at /login from a
// token that `skein dashboard URL` signs with the user's credentials. A
// revoked user's session ends at its next request.
type guard struct {
	next  http.Handler
	v     Verifier
	names map[string]bool // the dashboard's addresses, as bus.LoginAudience spells them
	log   zerolog.Logger
	now   func() time.Time
	key   []byte

	mu   sync.Mutex
	used map[string]time.Time // nonces of tokens used, until they expire
	// usedFile keeps used across restarts ("": in memory only).
	usedFile string
}

// Guard wraps h with the login. names are the addresses (HOST:PORT) the
// dashboard answers to: a request naming another is refused, and a token
// counts only for the address the request names, so that one made for
// another dashboard (or a phishing address) opens nothing here.
//
// usedFile, when set, keeps the used links' nonces until they expire, so
// that a link used once opens nothing after a restart either.
func Guard(h http.Handler, v Verifier, names []string, usedFile string, log zerolog.Logger) http.Handler {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	g := &guard{next: h, v: v, names: map[string]bool{}, log: log, now: time.Now, key: key, used: map[string]time.Time{}, usedFile: usedFile}
	if usedFile != "" {
		if b, err := os.ReadFile(usedFile); err == nil {
			if err := json.Unmarshal(b, &g.used); err != nil {
				log.Warn().Err(err).Str("file", usedFile).Msg("the used dashboard links are unreadable: starting without them")
				g.used = map[string]time.Time{}
			}
		}
	}
	for _, n := range names {
		g.names[bus.LoginAudience(n)] = true
	}
	return g
}

// session is what the cookie carries, signed with the guard's key.
type session struct {
	User    string `json:"u"`
	Role    string `json:"r"`
	Expires int64  `json:"e"`
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.names[bus.LoginAudience(r.Host)] {
		var names []string
		for n := range g.names {
			names = append(names, "https://"+n+"/")
		}
		sort.Strings(names)
		page(w, http.StatusMisdirectedRequest, "Not this address", "This dashboard answers at "+html.EscapeString(strings.Join(names, ", "))+" only.")
		return
	}
	if r.URL.Path == "/login" {
		g.login(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/static/") {
		g.next.ServeHTTP(w, r) // the page's files: nothing of the cluster's
		return
	}
	s, why := g.session(r)
	if why != "" {
		page(w, http.StatusUnauthorized, "Log in to skein", why+` To log in, run <code>skein dashboard https://`+html.EscapeString(r.Host)+`/</code> on a machine with your skein credentials (an observer's from <code>skein creds observer</code>, or an admin's) and open the link it prints within 2 minutes.`)
		return
	}
	if g.v.IsRevoked(s.User) {
		page(w, http.StatusUnauthorized, "Credentials revoked", "The credentials you logged in with were revoked (skein creds revoke). Log in again with new ones.")
		return
	}
	if r.URL.Path == "/api/stream" {
		// A stream lasts: it ends when the session does.
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		go g.watch(ctx, cancel, s)
		r = r.WithContext(ctx)
	}
	g.next.ServeHTTP(w, r)
}

// watch ends a stream (cancel) when its session expires or its user is revoked.
func (g *guard) watch(ctx context.Context, cancel func(), s session) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if g.v.IsRevoked(s.User) || g.now().Unix() > s.Expires {
				cancel()
				return
			}
		}
	}
}

// login turns a token into a session and sends the browser to the page.
func (g *guard) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		page(w, http.StatusMethodNotAllowed, "Log in to skein", "Open the link `skein dashboard URL` prints.")
		return
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		page(w, http.StatusUnauthorized, "Log in to skein", "The link has no token. Run <code>skein dashboard https://"+html.EscapeString(r.Host)+"/</code> with your skein credentials and open the link it prints within 2 minutes.")
		return
	}
	now := g.now()
	l, err := g.v.VerifyLogin(token, bus.LoginAudience(r.Host), now)
	if err != nil {
		g.log.Warn().Err(err).Str("from", r.RemoteAddr).Msg("dashboard login refused")
		page(w, http.StatusUnauthorized, "Login refused", html.EscapeString(err.Error()))
		return
	}
	if !canLogIn[l.Role] {
		g.log.Warn().Str("role", l.Role).Str("from", r.RemoteAddr).Msg("dashboard login refused")
		page(w, http.StatusForbidden, "Login refused", "Credentials of role "+html.EscapeString(fmt.Sprintf("%q", l.Role))+" do not open the dashboard: use an observer's (<code>skein creds observer</code>) or an admin's.")
		return
	}
	g.mu.Lock()
	for n, exp := range g.used {
		if now.After(exp) {
			delete(g.used, n)
		}
	}
	_, seen := g.used[l.Nonce]
	g.used[l.Nonce] = l.Expires
	err = g.keepUsed()
	g.mu.Unlock()
	if err != nil {
		g.log.Error().Err(err).Msg("dashboard login refused: the used links cannot be kept")
		page(w, http.StatusServiceUnavailable, "Login refused", "The dashboard cannot record the link as used: see the server's log.")
		return
	}
	if seen {
		page(w, http.StatusUnauthorized, "Login refused", "This link was used already: each works once. Run <code>skein dashboard URL</code> again.")
		return
	}
	until := now.Add(SessionTTL)
	if !l.Until.IsZero() && l.Until.Before(until) {
		until = l.Until // not beyond the credentials' own expiry
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: g.sign(session{User: l.User, Role: l.Role, Expires: until.Unix()}),
		Path: "/", MaxAge: int(until.Sub(now) / time.Second), Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	g.log.Info().Str("user", l.User).Str("role", l.Role).Str("from", r.RemoteAddr).Msg("dashboard login")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// keepUsed writes the used nonces to usedFile (mode 0600), whole or not at
// all. The caller holds g.mu.
func (g *guard) keepUsed() error {
	if g.usedFile == "" {
		return nil
	}
	b, err := json.Marshal(g.used)
	if err != nil {
		return err
	}
	tmp := g.usedFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, g.usedFile)
}

// session reads the request's session; why says what is wrong when none.
func (g *guard) session(r *http.Request) (session, string) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, "You are not logged in."
	}
	p64, m64, ok := strings.Cut(c.Value, ".")
	mac, err := base64.RawURLEncoding.DecodeString(m64)
	if !ok || err != nil || !hmac.Equal(mac, g.mac([]byte(p64))) {
		return session{}, "Your session is not valid (the server restarted, or it was altered)."
	}
	var s session
	b, err := base64.RawURLEncoding.DecodeString(p64)
	if err != nil || json.Unmarshal(b, &s) != nil {
		return session{}, "Your session is not valid."
	}
	if g.now().Unix() > s.Expires {
		return session{}, "Your session has expired."
	}
	return s, ""
}

func (g *guard) sign(s session) string {
	b, _ := json.Marshal(s)
	p64 := base64.RawURLEncoding.EncodeToString(b)
	return p64 + "." + base64.RawURLEncoding.EncodeToString(g.mac([]byte(p64)))
}

func (g *guard) mac(b []byte) []byte {
	m := hmac.New(sha256.New, g.key)
	m.Write(b)
	return m.Sum(nil)
}

// page answers a small HTML page; msg is HTML the caller escaped.
func page(w http.ResponseWriter, code int, title, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintf(w, `<!doctype html><html><head><meta charset="utf-8"><title>%s</title><link rel="stylesheet" href="/static/style.css"></head><body><main class="error"><h1>%s</h1><p>%s</p></main></body></html>`,
		html.EscapeString(title), html.EscapeString(title), msg)
}
