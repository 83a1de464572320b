package ws

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/svc"
)

// Lifetimes of what a web server signs itself.
const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	leafLifetime = 397 * 24 * time.Hour
	// renewBefore is how long before it expires a self-signed or ACME
	// certificate is renewed (Let's Encrypt's 90 days are renewed at 60).
	renewBefore = 30 * 24 * time.Hour
)

// certPair is a certificate chain and its key, in PEM: it lives only in
// memory and in the web server's container.
type certPair struct {
	cert, key []byte
}

// identity returns the SHA-256 fingerprint (hex) and expiry of the pair's
// leaf certificate, after checking that the key is the certificate's.
func (p certPair) identity() (string, time.Time, error) {
	tc, err := tls.X509KeyPair(p.cert, p.key)
	if err != nil {
		return "", time.Time{}, err
	}
	leaf, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		return "", time.Time{}, err
	}
	sum := sha256.Sum256(leaf.Raw)
	return hex.EncodeToString(sum[:]), leaf.NotAfter, nil
}

// certFiles are the files that install p as url's certificate.
func certFiles(url string, p certPair) []svc.File {
	return []svc.File{{Path: CertPath(url), Data: p.cert, Mode: 0o644}, {Path: KeyPath(url), Data: p.key, Mode: 0o600}}
}

// removeCertFiles are the files that remove url's certificate.
func removeCertFiles(url string) []svc.File {
	return []svc.File{{Path: CertPath(url), Remove: true}, {Path: KeyPath(url), Remove: true}}
}

// newKey makes an ECDSA P-256 key and its PEM.
func newKey() (*ecdsa.PrivateKey, []byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// parseKey reads a PEM private key.
func parseKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("no PEM key")
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T key cannot sign", k)
	}
	return s, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// newCA makes a web server's own CA: its certificate (PEM) and key (PEM).
func newCA(ws string) (certPair, error) {
	k, keyPEM, err := newKey()
	if err != nil {
		return certPair{}, err
	}
	sn, err := serial()
	if err != nil {
		return certPair{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "skein web server " + ws + " CA", Organization: []string{"skein"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		return certPair{}, err
	}
	return certPair{cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: keyPEM}, nil
}

// signLeaf makes a certificate for url signed by the CA ca; its chain is the
// leaf then the CA.
func signLeaf(url string, ca certPair) (certPair, error) {
	caTLS, err := tls.X509KeyPair(ca.cert, ca.key)
	if err != nil {
		return certPair{}, fmt.Errorf("the web server's CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caTLS.Certificate[0])
	if err != nil {
		return certPair{}, err
	}
	k, keyPEM, err := newKey()
	if err != nil {
		return certPair{}, err
	}
	sn, err := serial()
	if err != nil {
		return certPair{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: url},
		DNSNames:     []string{url},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, k.Public(), caTLS.PrivateKey)
	if err != nil {
		return certPair{}, err
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.cert...)
	return certPair{cert: chain, key: keyPEM}, nil
}

// readSecret reads a key kept in a web server's container (its CA's, its ACME
// account's); nil when there is none yet.
func readSecret(ctx context.Context, rt container.Runtime, name, path string) ([]byte, error) {
	res, err := rt.Exec(ctx, name, "sh", "-c", "cat "+path+" 2>/dev/null || true")
	if err != nil {
		return nil, workers.Transient("reading %s in %s: %v", path, name, err)
	}
	if len(bytes.TrimSpace(res.Stdout)) == 0 {
		return nil, nil
	}
	return res.Stdout, nil
}

// selfSigned makes url's certificate from the web server's CA: the CA the
// record names (its key read from the container), or a new one. It returns the
// pair, the CA's certificate, and the CA's files when the CA is new.
func (w *Worker) selfSigned(ctx context.Context, name, caPEM, url string) (certPair, string, []svc.File, error) {
	var ca certPair
	var files []svc.File
	if caPEM != "" {
		key, err := readSecret(ctx, w.host.Runtime, name, caKeyPath)
		if err != nil {
			return certPair{}, "", nil, err
		}
		if key == nil {
			return certPair{}, "", nil, workers.Internal("web server %s lost its CA key %s: delete and add the web server again", name, caKeyPath)
		}
		ca = certPair{cert: []byte(caPEM), key: key}
	} else {
		var err error
		if ca, err = newCA(name); err != nil {
			return certPair{}, "", nil, workers.Internal("making the CA of %s: %v", name, err)
		}
		files = append(files, svc.File{Path: caKeyPath, Data: ca.key, Mode: 0o600})
	}
	leaf, err := signLeaf(url, ca)
	if err != nil {
		return certPair{}, "", nil, workers.Internal("signing the certificate of %s: %v", url, err)
	}
	return leaf, string(ca.cert), files, nil
}
