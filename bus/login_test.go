package bus_test

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/skeinhq/skein/bus"
)

// TestLoginToken: a token signed with credentials the authority issued
// names the user and role, for the address it was made for, within its
// time; anything else is refused with why.
func TestLoginToken(t *testing.T) {
	a, err := bus.LoadAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := bus.LoadAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	obs, _ := a.Creds(bus.Role{Kind: "observer"})
	foreign, _ := other.Creds(bus.Role{Kind: "admin"})
	now := time.Now()
	tok, err := bus.SignLogin(obs, "s1:8474", now)
	if err != nil {
		t.Fatal(err)
	}
	seed := regexp.MustCompile(`SU[A-Z2-7]{50,}`).FindString(string(obs))
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if seed == "" || strings.Contains(string(payload), seed) || strings.Contains(tok, seed) {
		t.Fatalf("the token carries the seed (or no seed found: %q)", seed)
	}
	l, err := a.VerifyLogin(tok, "s1:8474", now.Add(time.Minute))
	if err != nil || l.Role != "observer" || l.User == "" || l.Nonce == "" {
		t.Fatalf("VerifyLogin = %+v, %v", l, err)
	}
	ftok, _ := bus.SignLogin(foreign, "s1:8474", now)
	// A token signed with another key than the JWT's user: the signature part swapped.
	other2, _ := a.Creds(bus.Role{Kind: "admin"})
	tok2, _ := bus.SignLogin(other2, "s1:8474", now)
	forged := strings.Split(tok, ".")[0] + "." + strings.Split(tok2, ".")[1]
	for name, c := range map[string]struct {
		token, aud string
		at         time.Time
		want       string
	}{
		"another address":   {tok, "s2:8474", now, "another address"},
		"expired":           {tok, "s1:8474", now.Add(bus.LoginTTL + time.Second), "expired"},
		"from the future":   {tok, "s1:8474", now.Add(-time.Hour), "future"},
		"another cluster's": {ftok, "s1:8474", now, "not this cluster's"},
		"garbage":           {"nonsense", "s1:8474", now, "malformed"},
		"bad base64":        {"!!.!!", "s1:8474", now, "malformed"},
		"signature swapped": {forged, "s1:8474", now, "signature"},
		"empty":             {"", "s1:8474", now, "malformed"},
	} {
		if _, err := a.VerifyLogin(c.token, c.aud, c.at); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
	// The JWT's role edited (its signature no longer holds).
	payload0, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	var claims map[string]any
	_ = json.Unmarshal(payload0, &claims)
	parts := strings.Split(claims["jwt"].(string), ".")
	body, _ := base64.RawURLEncoding.DecodeString(parts[1])
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(body), "skein-role:observer", "skein-role:admin", 1)))
	claims["jwt"] = strings.Join(parts, ".")
	kp, _ := jwt.ParseDecoratedNKey(obs)
	resign := func(c map[string]any) string {
		b, _ := json.Marshal(c)
		sig, _ := kp.Sign(b)
		return base64.RawURLEncoding.EncodeToString(b) + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	if _, err := a.VerifyLogin(resign(claims), "s1:8474", now); err == nil || !strings.Contains(err.Error(), "not a user's") {
		t.Errorf("a JWT with its role edited: %v", err)
	}
	// No nonce: it could not be used once only.
	_ = json.Unmarshal(payload0, &claims)
	claims["nonce"] = ""
	if _, err := a.VerifyLogin(resign(claims), "s1:8474", now); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("a token without a nonce: %v", err)
	}
	// One spelling of an address: case, a final dot and the default port.
	for made, asked := range map[string]string{"S1.Example.:8474": "s1.example:8474", "h.example": "h.example:443"} {
		tk, _ := bus.SignLogin(obs, made, now)
		if _, err := a.VerifyLogin(tk, bus.LoginAudience(asked), now); err != nil {
			t.Errorf("a token made for %s, asked at %s: %v", made, asked, err)
		}
	}

	if _, err := a.Revoke(bus.Role{Kind: "observer"}); err != nil {
		t.Fatal(err)
	}
	if !a.IsRevoked(l.User) {
		t.Fatal("the revoked user is not revoked")
	}
	if _, err := a.VerifyLogin(tok, "s1:8474", now); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("a revoked user's token: %v", err)
	}
	if _, err := bus.SignLogin([]byte("not creds"), "s1:8474", now); err == nil {
		t.Error("SignLogin took garbage credentials")
	}
}
