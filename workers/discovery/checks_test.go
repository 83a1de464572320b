package discovery

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
)

func TestHTTPTarget(t *testing.T) {
	cases := []struct{ raw, target, dial string }{
		{"/", "http://10.77.1.5/", "10.77.1.5:80"},
		{"/health?x=1", "http://10.77.1.5/health?x=1", "10.77.1.5:80"},
		{"mywordpress.org", "http://mywordpress.org", "10.77.1.5:80"},
		{"mywordpress.org/login", "http://mywordpress.org/login", "10.77.1.5:80"},
		{"http://mywordpress.org:8080/x", "http://mywordpress.org:8080/x", "10.77.1.5:8080"},
		{"http://10.77.2.9:81/ok", "http://10.77.2.9:81/ok", "10.77.2.9:81"},
		{"https://site.example/", "https://site.example/", "10.77.1.5:443"},
		{"https://site.example:8443/h", "https://site.example:8443/h", "10.77.1.5:8443"},
	}
	for _, tc := range cases {
		target, dial, err := httpTarget(tc.raw, "10.77.1.5")
		if err != nil || target != tc.target || dial != tc.dial {
			t.Errorf("httpTarget(%q) = %q, %q, %v; want %q, %q", tc.raw, target, dial, err, tc.target, tc.dial)
		}
	}
	for _, bad := range []string{"http://", "ftp://mywordpress.org/"} {
		if _, _, err := httpTarget(bad, "10.77.1.5"); err == nil {
			t.Errorf("bad check URL %q accepted", bad)
		}
	}
}

// TestHTTPSCheckByHostName: an https check by host name is sent to the
// container's address but asks for, and verifies, the certificate of the host
// name. It used to send the request to the address as URL, so TLS verified the
// certificate against the IP and a valid certificate for the name failed.
func TestHTTPSCheckByHostName(t *testing.T) {
	const name = "mywordpress.test"
	ca, leaf := testCertificates(t, name)
	var mu sync.Mutex
	var snis, hosts []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		hosts = append(hosts, req.Host)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}, GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		snis = append(snis, hello.ServerName)
		mu.Unlock()
		return nil, nil
	}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	def := events.CheckDef{Name: "site", Kind: "http", URL: fmt.Sprintf("https://%s:%d/health", name, port), Interval: "1s", Timeout: "5s"}
	ctx := context.Background()
	defer func(roots *x509.CertPool) { checkRoots = roots }(checkRoots)

	checkRoots = x509.NewCertPool()
	checkRoots.AddCert(ca)
	status, out := probe(ctx, def, "127.0.0.1")
	if status != "passing" || !strings.Contains(out, "204") {
		t.Errorf("with the CA trusted: %s %q, want passing", status, out)
	}
	mu.Lock()
	if len(snis) != 1 || snis[0] != name || len(hosts) != 1 || hosts[0] != fmt.Sprintf("%s:%d", name, port) {
		t.Errorf("the server saw SNI %q and Host %q, want %s and %s:%d", snis, hosts, name, name, port)
	}
	mu.Unlock()

	checkRoots = nil // the system's roots do not know the test CA
	status, out = probe(ctx, def, "127.0.0.1")
	if status != "critical" || !strings.Contains(out, def.URL) || !strings.Contains(out, "certificate signed by unknown authority") || !strings.Contains(out, "--tls-skip-verify") {
		t.Errorf("with the CA not trusted: %s %q, want critical saying the certificate is not trusted", status, out)
	}

	def.TLSSkipVerify = true
	if status, out = probe(ctx, def, "127.0.0.1"); status != "passing" {
		t.Errorf("with tls_skip_verify: %s %q, want passing", status, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(snis) != 3 || snis[1] != name || snis[2] != name {
		t.Errorf("the server saw SNI %q, want %s each time", snis, name)
	}
}

// testCertificates makes a CA and a server certificate it signs for name.
func testCertificates(t *testing.T, name string) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "skein test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return ca, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
