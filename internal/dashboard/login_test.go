package dashboard

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
)

// TestLogin: without a session every page but /login answers 401 with how to
// log in; a token from `skein dashboard` (observer or admin) opens a
// session once; bad, reused, foreign-role tokens are refused; a revoked
// user's session ends.
func TestLogin(t *testing.T) {
	a, err := bus.LoadAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/stream" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done() // a stream: until the client or the guard ends it
			return
		}
		_, _ = io.WriteString(w, "the dashboard")
	})
	srv := httptest.NewUnstartedServer(nil)
	host := srv.Listener.Addr().String()
	srv.Config.Handler = Guard(inner, a, []string{host}, "", zerolog.Nop())
	srv.StartTLS()
	defer srv.Close()
	client := func() *http.Client {
		c := *srv.Client() // a copy: each client its own cookies
		c.Jar, _ = cookiejar.New(nil)
		return &c
	}
	get := func(c *http.Client, path string) (int, string) {
		t.Helper()
		r, err := c.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	token := func(role string) string {
		creds, err := a.Creds(bus.Role{Kind: role, Server: "s1"})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := bus.SignLogin(creds, host, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return url.QueryEscape(tok)
	}

	anon := client()
	for _, p := range []string{"/", "/api/state", "/api/stream", "/nope"} {
		if code, body := get(anon, p); code != http.StatusUnauthorized || !strings.Contains(body, "skein dashboard https://"+host+"/") {
			t.Errorf("GET %s without a session: %d %.200q, want 401 naming the fix", p, code, body)
		}
	}
	for name, q := range map[string]string{"no token": "", "garbage": "?token=abc.def", "another address": "?token=" + url.QueryEscape(mustSign(t, a, "elsewhere:1"))} {
		if code, body := get(anon, "/login"+q); code != http.StatusUnauthorized || strings.Contains(body, "goroutine") {
			t.Errorf("login with %s: %d %.200q, want 401", name, code, body)
		}
	}
	if code, body := get(anon, "/login?token="+token("agent")); code != http.StatusForbidden || !strings.Contains(body, "observer") {
		t.Errorf("login with an agent's credentials: %d %.200q, want 403 naming observer", code, body)
	}
	if code, _ := get(anon, "/"); code != http.StatusUnauthorized {
		t.Errorf("refused logins opened a session: %d", code)
	}

	obs := client()
	tok := token("observer")
	if code, body := get(obs, "/login?token="+tok); code != http.StatusOK || body != "the dashboard" {
		t.Fatalf("login: %d %.200q, want the dashboard after the redirect", code, body)
	}
	if code, body := get(obs, "/api/state"); code != http.StatusOK || body != "the dashboard" {
		t.Errorf("a logged-in request: %d %q", code, body)
	}
	if code, body := get(client(), "/login?token="+tok); code != http.StatusUnauthorized || !strings.Contains(body, "used already") {
		t.Errorf("a token used twice: %d %.200q", code, body)
	}
	forged := &http.Cookie{Name: sessionCookie, Value: "eyJ1IjoiVVgiLCJyIjoiYWRtaW4iLCJlIjo5OTk5OTk5OTk5fQ.AAAA"}
	u, _ := url.Parse(srv.URL)
	other := client()
	other.Jar.SetCookies(u, []*http.Cookie{forged})
	if code, _ := get(other, "/"); code != http.StatusUnauthorized {
		t.Errorf("a forged session: %d, want 401", code)
	}

	stream, err := obs.Get(srv.URL + "/api/stream")
	if err != nil || stream.StatusCode != http.StatusOK {
		t.Fatalf("a logged-in stream: %v %v", err, stream)
	}
	ended := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, stream.Body); close(ended) }()
	select {
	case <-ended:
		t.Fatal("the stream ended before the revocation")
	case <-time.After(1500 * time.Millisecond):
	}
	if _, err := a.Revoke(bus.Role{Kind: "observer"}); err != nil {
		t.Fatal(err)
	}
	if code, body := get(obs, "/"); code != http.StatusUnauthorized || !strings.Contains(body, "revoked") {
		t.Errorf("a revoked user's session: %d %q, want 401", code, body)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Error("a revoked user's stream goes on")
	}
	adm := client()
	if code, _ := get(adm, "/login?token="+token("admin")); code != http.StatusOK {
		t.Errorf("an admin's login: %d", code)
	}
}

// TestLoginAddressAndSession: a request naming another address than the
// dashboard's is refused, so a token made for a phishing address opens
// nothing even sent with that Host; an address in a token reaches the page
// escaped; the cookie is __Host-, Secure, HttpOnly; a session ends when it
// expires; /login takes GET only.
func TestLoginAddressAndSession(t *testing.T) {
	a, err := bus.LoadAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "the dashboard") })
	srv := httptest.NewUnstartedServer(nil)
	host := srv.Listener.Addr().String()
	gh := Guard(inner, a, []string{host}, "", zerolog.Nop())
	srv.Config.Handler = gh
	srv.StartTLS()
	defer srv.Close()
	creds, _ := a.Creds(bus.Role{Kind: "admin"})
	sign := func(aud string) string {
		tok, err := bus.SignLogin(creds, aud, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return url.QueryEscape(tok)
	}
	do := func(method, hostHdr, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		if hostHdr != "" {
			req.Host = hostHdr
		}
		c := *srv.Client()
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		r, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	body := func(r *http.Response) string {
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return string(b)
	}

	// The phishing case: a token made for evil.example, sent here naming evil.example.
	r := do("GET", "evil.example:443", "/login?token="+sign("evil.example:443"))
	if b := body(r); r.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(b, "https://"+host+"/") || len(r.Cookies()) > 0 {
		t.Errorf("a token for another address, with its Host: %d %.300q %v", r.StatusCode, b, r.Cookies())
	}
	// The same token with this dashboard's Host: made for another address.
	r = do("GET", "", "/login?token="+sign("evil.example:443"))
	if b := body(r); r.StatusCode != http.StatusUnauthorized || !strings.Contains(b, "another address") {
		t.Errorf("a token for another address: %d %.300q", r.StatusCode, b)
	}
	r = do("GET", "", "/login?token="+sign("<script>x</script>:1"))
	if b := body(r); r.StatusCode != http.StatusUnauthorized || strings.Contains(b, "<script>x") || !strings.Contains(b, "&lt;script&gt;") {
		t.Errorf("an address with markup reached the page unescaped: %d %.400q", r.StatusCode, b)
	}
	if r := do("POST", "", "/login?token="+sign(host)); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /login: %d", r.StatusCode)
	}

	r = do("GET", "", "/login?token="+sign(host))
	body(r)
	if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
		t.Fatalf("login: %d %v", r.StatusCode, r.Cookies())
	}
	c := r.Cookies()[0]
	if c.Name != "__Host-skein_session" || !c.Secure || !c.HttpOnly || c.Path != "/" || c.Domain != "" {
		t.Errorf("the session cookie: %+v", c)
	}
	get := func() (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+"/", nil)
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		r, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return r.StatusCode, body(r)
	}
	if code, b := get(); code != http.StatusOK || b != "the dashboard" {
		t.Fatalf("with the session: %d %q", code, b)
	}
	gh.(*guard).now = func() time.Time { return time.Now().Add(SessionTTL + time.Minute) }
	if code, b := get(); code != http.StatusUnauthorized || !strings.Contains(b, "expired") {
		t.Errorf("an expired session: %d %.300q", code, b)
	}
}

func mustSign(t *testing.T, a *bus.Authority, aud string) string {
	creds, err := a.Creds(bus.Role{Kind: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := bus.SignLogin(creds, aud, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A link used once opens nothing after the dashboard restarts either: the
// used nonces are kept in a file (mode 0600) until they expire.
func TestUsedLinkStaysUsedAcrossARestart(t *testing.T) {
	a, err := bus.LoadAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "the dashboard") })
	used := filepath.Join(t.TempDir(), "dashboard-logins.json")
	const host = "dash.test:8474"
	creds, err := a.Creds(bus.Role{Kind: "observer"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := bus.SignLogin(creds, host, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	login := func(h http.Handler) int {
		r := httptest.NewRequest(http.MethodGet, "https://"+host+"/login?token="+url.QueryEscape(tok), nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if code := login(Guard(inner, a, []string{host}, used, zerolog.Nop())); code != http.StatusSeeOther {
		t.Fatalf("the first use: %d, want 303 to the dashboard", code)
	}
	if fi, err := os.Stat(used); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the used links' file: %v %v, want mode 0600", fi, err)
	}
	if code := login(Guard(inner, a, []string{host}, used, zerolog.Nop())); code != http.StatusUnauthorized {
		t.Errorf("the same link after a restart: %d, want 401", code)
	}
}
