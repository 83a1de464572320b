package dashboard

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
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
	srv := httptest.NewTLSServer(Guard(inner, a, zerolog.Nop()))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
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
