package ws

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"regexp"
	"sync"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/svc"
)

// acmeTimeout bounds one ACME order, from the account to the certificate.
const acmeTimeout = 2 * time.Minute

// tokenRE is an ACME challenge token as RFC 8555 makes them (base64url): it
// becomes a file name, so nothing else is taken. Compiled on first use: its
// 128 repetitions cost a third of a millisecond at every skein command's start.
var tokenRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9_-]{16,128}$`) })

// acmeClient is an ACME client for the web server name and directory t: its
// account key is kept in the container and made on first use.
func (w *Worker) acmeClient(ctx context.Context, name string, t events.AppTLS) (*acme.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if t.ACMERoots != "" && !pool.AppendCertsFromPEM([]byte(t.ACMERoots)) {
		return nil, workers.Invalid("the ACME roots hold no PEM certificate")
	}
	keyPEM, err := readSecret(ctx, w.host.Runtime, name, accountKeyPath)
	if err != nil {
		return nil, err
	}
	if keyPEM == nil {
		_, keyPEM, err = newKey()
		if err != nil {
			return nil, workers.Internal("making an ACME account key: %v", err)
		}
		// Kept before it is registered: a retry uses the same account.
		if err := w.putSecret(ctx, name, accountKeyPath, keyPEM); err != nil {
			return nil, err
		}
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, workers.Internal("the ACME account key of %s: %v", name, err)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	return &acme.Client{Key: key, DirectoryURL: t.ACMEURL, HTTPClient: hc, UserAgent: "skein"}, nil
}

// putSecret writes a key into a web server's container, readable by root only.
func (w *Worker) putSecret(ctx context.Context, name, path string, data []byte) error {
	_, err := svc.Apply(ctx, w.host.Runtime, name, svc.Component{Name: "keys"}, []svc.File{{Path: path, Data: data, Mode: 0o600}}, svc.NoReload, "")
	return err
}

// obtain orders a certificate for url from t's ACME directory, answering the
// HTTP-01 challenge with a file the web server serves (its site already has
// the challenge location), and returns the chain and its new key.
func (w *Worker) obtain(ctx context.Context, req *workers.Request, name, url string, t events.AppTLS) (certPair, error) {
	ctx, cancel := context.WithTimeout(ctx, acmeTimeout)
	defer cancel()
	cl, err := w.acmeClient(ctx, name, t)
	if err != nil {
		return certPair{}, err
	}
	progress(req, "acme", "registering with "+t.ACMEURL)
	if _, err := cl.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return certPair{}, acmeErr("registering with "+t.ACMEURL, err)
	}
	progress(req, "acme", "ordering a certificate for "+url)
	order, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(url))
	if err != nil {
		return certPair{}, acmeErr("ordering", err)
	}
	if res, err := w.host.Runtime.Exec(ctx, name, "mkdir", "-p", acmeRoot+"/.well-known/acme-challenge"); err != nil || res.Code != 0 {
		return certPair{}, workers.Transient("making the challenge directory in %s: %v %s", name, err, res.Stderr)
	}
	var tokens []string
	defer func() {
		for _, tok := range tokens {
			_, _ = w.host.Runtime.Exec(context.WithoutCancel(ctx), name, "rm", "-f", challengePath(tok))
		}
	}()
	for _, zurl := range order.AuthzURLs {
		z, err := cl.GetAuthorization(ctx, zurl)
		if err != nil {
			return certPair{}, acmeErr("reading an authorization", err)
		}
		if z.Status == acme.StatusValid {
			continue
		}
		var chal *acme.Challenge
		for _, c := range z.Challenges {
			if c.Type == "http-01" {
				chal = c
			}
		}
		if chal == nil {
			return certPair{}, workers.Invalid("the ACME directory offers no http-01 challenge for %s", url)
		}
		if !tokenRE().MatchString(chal.Token) {
			return certPair{}, workers.Invalid("the ACME directory sent a challenge token that is not base64url")
		}
		body, err := cl.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return certPair{}, acmeErr("answering the challenge", err)
		}
		if err := w.host.Runtime.PushFile(ctx, name, challengePath(chal.Token), []byte(body), 0o644); err != nil {
			return certPair{}, workers.Transient("writing the challenge into %s: %v", name, err)
		}
		tokens = append(tokens, chal.Token)
		progress(req, "acme", "answering the http-01 challenge for "+url)
		if _, err := cl.Accept(ctx, chal); err != nil {
			return certPair{}, acmeErr("accepting the challenge", err)
		}
		if _, err := cl.WaitAuthorization(ctx, z.URI); err != nil {
			return certPair{}, acmeErr("the http-01 challenge for "+url+" (is port 80 of "+url+" this web server?)", err)
		}
	}
	if order, err = cl.WaitOrder(ctx, order.URI); err != nil {
		return certPair{}, acmeErr("waiting for the order", err)
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return certPair{}, workers.Internal("making a key: %v", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{url}}, key)
	if err != nil {
		return certPair{}, workers.Internal("making the request: %v", err)
	}
	progress(req, "acme", "finalizing the order")
	ders, _, err := cl.CreateCertFromOrder(ctx, order, csr, true)
	if err != nil {
		return certPair{}, acmeErr("finalizing the order", err)
	}
	var chain []byte
	for _, d := range ders {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	return certPair{cert: chain, key: keyPEM}, nil
}

// challengePath is where the web server serves the answer to a challenge token.
func challengePath(token string) string {
	return acmeRoot + "/.well-known/acme-challenge/" + token
}

// acmeErr says which step of an ACME order failed. It is not retried by the
// agent: an order takes seconds and a refusal (or an unreachable directory)
// is for the user to see at once; the command can be run again.
func acmeErr(step string, err error) error {
	return workers.Invalid("ACME: %s: %v", step, err)
}

func progress(req *workers.Request, stage, msg string) {
	if req != nil {
		req.Progress(stage, msg)
	}
}

// certFor makes an app's certificate for its kind: self-signed from the web
// server's CA, or obtained from its ACME directory. It returns the pair and
// the files to install with it (the CA's key when the CA is new), and the CA.
func (w *Worker) certFor(ctx context.Context, req *workers.Request, ws events.WS, a events.App) (certPair, string, []svc.File, error) {
	switch a.TLS.Kind {
	case events.TLSSelf:
		return w.selfSigned(ctx, ws.Name, ws.CA, a.URL)
	case events.TLSACME:
		p, err := w.obtain(ctx, req, ws.Name, a.URL, *a.TLS)
		return p, ws.CA, nil, err
	}
	return certPair{}, "", nil, workers.Invalid("app %s has a given certificate: publish it again with the new -c/-k to replace it", a.URL)
}

// errNoTLS is the answer to renewing an app without a certificate.
func errNoTLS(ws, url string) error {
	return workers.Invalid("app %s of web server %s serves no TLS: nothing to renew (`skein pubapp %s %s TARGET -s` gives it a certificate)", url, ws, ws, url)
}
