package ws

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/skeinhq/skein/events"
)

// A self-signed app's certificate verifies for its URL against the web
// server's CA (what `skein wsca` prints), and for no other name.
func TestSignLeafVerifiesWithTheCA(t *testing.T) {
	ca, err := newCA("web1")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := signLeaf("app.test", ca)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := leaf.identity(); err != nil {
		t.Fatalf("the leaf and its key: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.cert) {
		t.Fatal("no CA certificate")
	}
	b, _ := pem.Decode(leaf.cert)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "app.test"}); err != nil {
		t.Errorf("verify for app.test: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.test"}); err == nil {
		t.Error("the certificate verifies for another name")
	}
	other, _ := newCA("web2")
	if _, _, err := (certPair{cert: leaf.cert, key: other.key}).identity(); err == nil {
		t.Error("a certificate with another's key makes a pair")
	}
}

// Publishing the same TLS again changes nothing; other flags, another given
// certificate or another kind do.
func TestSameTLS(t *testing.T) {
	ca, _ := newCA("w")
	a, _ := signLeaf("a.test", ca)
	b, _ := signLeaf("a.test", ca)
	fa, _, _ := a.identity()
	cur := &events.AppTLS{Kind: events.TLSGiven, Fingerprint: fa}
	req := &events.AppTLSRequest{Kind: events.TLSGiven}
	if !sameTLS(cur, req, &a) {
		t.Error("the same given pair is a change")
	}
	if sameTLS(cur, req, &b) {
		t.Error("another given pair is no change")
	}
	if sameTLS(cur, &events.AppTLSRequest{Kind: events.TLSGiven, HSTS: true}, &a) {
		t.Error("--hsts is no change")
	}
	if sameTLS(cur, nil, nil) || sameTLS(nil, req, &a) || !sameTLS(nil, nil, nil) {
		t.Error("TLS on or off")
	}
	pending := &events.AppTLS{Kind: events.TLSACME, ACMEURL: "https://x/dir"}
	if sameTLS(pending, &events.AppTLSRequest{Kind: events.TLSACME, ACMEURL: "https://x/dir"}, nil) {
		t.Error("an ACME app with no certificate yet is done")
	}
	if !strings.HasPrefix(challengePath("abcdefghijklmnopqrstuvwxyz"), acmeRoot+"/.well-known/acme-challenge/") || tokenRE().MatchString("../../etc/passwd") {
		t.Error("challenge tokens")
	}
}
