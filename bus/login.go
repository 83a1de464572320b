package bus

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// LoginTTL is how long a login token is good for: long enough to open a
// link, short enough that one seen later is worthless.
const LoginTTL = 2 * time.Minute

// loginClaims are what a login token says: who (the user's JWT, as the bus
// sees it), for which dashboard (its HOST:PORT), when, and a nonce that
// makes it usable once.
type loginClaims struct {
	JWT   string `json:"jwt"`
	Aud   string `json:"aud"`
	IAt   int64  `json:"iat"`
	Nonce string `json:"nonce"`
}

// LoginAudience is the one spelling of a dashboard's address in tokens:
// HOST:PORT, the host in lower case without a final dot, 443 when no port.
func LoginAudience(hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), "443"
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.ToLower(host), "."), port)
}

// SignLogin makes a login token for the dashboard at aud (HOST:PORT) from a
// creds file: the claims signed by the user's key. The seed never leaves.
func SignLogin(creds []byte, aud string, now time.Time) (string, error) {
	token, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return "", fmt.Errorf("the credentials: %w", err)
	}
	kp, err := jwt.ParseDecoratedNKey(creds)
	if err != nil {
		return "", fmt.Errorf("the credentials: %w", err)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	payload, err := json.Marshal(loginClaims{JWT: token, Aud: LoginAudience(aud), IAt: now.Unix(), Nonce: base64.RawURLEncoding.EncodeToString(nonce)})
	if err != nil {
		return "", err
	}
	sig, err := kp.Sign(payload)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Login is who a verified login token names.
type Login struct {
	// User is the user's public key; Role its role's kind (admin, observer...).
	User, Role string
	// Nonce makes the token single-use; Expires is when it stops being good.
	Nonce   string
	Expires time.Time
	// Until is when the credentials expire (zero: they do not); a session
	// made from them ends then at the latest.
	Until time.Time
}

// ErrLoginExpired is a login token past LoginTTL.
var ErrLoginExpired = errors.New("the login link has expired (links last 2 minutes): run `skein dashboard URL` again")

// VerifyLogin checks a login token made for aud (the dashboard's own
// address, as LoginAudience spells it, never one a request names): signed by
// the key of a user this authority issued and has not revoked, within
// LoginTTL of now.
func (a *Authority) VerifyLogin(token, aud string, now time.Time) (Login, error) {
	bad := func(why string) (Login, error) {
		return Login{}, fmt.Errorf("not a valid login token (%s): run `skein dashboard URL` with your credentials and open the link it prints", why)
	}
	p64, s64, ok := strings.Cut(token, ".")
	if !ok {
		return bad("malformed")
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sig, err2 := base64.RawURLEncoding.DecodeString(s64)
	var c loginClaims
	if err1 != nil || err2 != nil || json.Unmarshal(payload, &c) != nil || c.Nonce == "" {
		return bad("malformed")
	}
	if LoginAudience(c.Aud) != aud {
		return bad("made for another address: " + c.Aud)
	}
	iat := time.Unix(c.IAt, 0)
	if now.Sub(iat) > LoginTTL {
		return Login{}, ErrLoginExpired
	}
	if iat.Sub(now) > 30*time.Second {
		return bad("made in the future: check the clocks")
	}
	uc, err := jwt.DecodeUserClaims(c.JWT)
	if err != nil {
		return bad("its credentials are not a user's")
	}
	if uc.Issuer != pub(a.account) {
		return bad("its credentials are not this cluster's")
	}
	var vr jwt.ValidationResults
	uc.Validate(&vr)
	if vr.IsBlocking(true) {
		return bad("its credentials are not valid now")
	}
	ukp, err := nkeys.FromPublicKey(uc.Subject)
	if err != nil || ukp.Verify(payload, sig) != nil {
		return bad("the signature does not match the credentials")
	}
	if a.IsRevoked(uc.Subject) {
		return Login{}, errors.New("these credentials were revoked (skein creds revoke): ask for new ones with `skein creds observer`")
	}
	role := ""
	for _, t := range uc.Tags {
		if r, ok := strings.CutPrefix(t, "skein-role:"); ok {
			role = r
		}
	}
	l := Login{User: uc.Subject, Role: role, Nonce: c.Nonce, Expires: iat.Add(LoginTTL)}
	if uc.Expires > 0 {
		l.Until = time.Unix(uc.Expires, 0)
	}
	return l, nil
}

// IsRevoked tells whether a user (public key) was revoked.
func (a *Authority) IsRevoked(user string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.ledger.Revoked[user]
	return ok
}
