//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skeinhq/skein/events"
)

// testCA makes a CA and a certificate for host signed by it, as PEM files.
func testCA(t *testing.T, dir, host string) (caPool *x509.CertPool, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "skein test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, host+".crt"), filepath.Join(dir, host+".key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	caPool = x509.NewCertPool()
	caPool.AddCert(ca)
	return caPool, certFile, keyFile
}

// getHost fetches url with a Host header and returns the status and body.
func getHost(client *http.Client, url, host string) (int, string, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	return resp.StatusCode, strings.TrimSpace(string(buf[:n])), nil
}

// An nginx load balancer answers for its URL, serves TLS that verifies against
// the given CA, balances by mode, and drops nothing while backends change.
func TestLoadBalancerNginx(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "ng1", "n1", "n2")
	t.Cleanup(func() { _, _, _ = skein("dellb", "ng1") })
	mustSkein(t, "launch", "skein-busybox", "n1", "-s", "s2")
	mustSkein(t, "launch", "skein-busybox", "n2", "-s", "s3")
	cs := list(t)
	ip1, ip2 := find(cs, "n1").IPv4, find(cs, "n2").IPv4
	dir := t.TempDir()
	w := tap(t)
	pool, certFile, keyFile := testCA(t, dir, "mywordpress.test")
	var newKeyFile string
	_, _, otherKey := testCA(t, dir, "other.test")

	t.Run("a certificate that does not match its key is refused and creates nothing", func(t *testing.T) {
		errOut := skeinFails(t, "addlb", "nginx", "s2", "-n", "ngbad", "-u", "mywordpress.test", "-b", ip1+":80", "-c", certFile, "-k", otherKey)
		if !strings.Contains(errOut, "do not make a pair") {
			t.Fatalf("error %q", errOut)
		}
		if strings.Contains(mustSkein(t, "listlbs"), "ngbad") || contains(incusNames(t, "skein-s2"), "ngbad") {
			t.Fatal("a refused load balancer was created")
		}
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"addlb", "nginx", "s2", "-u", "x.test"}, "an nginx load balancer needs -u URL and at least one -b IP:PORT"},
			{[]string{"addlb", "nginx", "s2", "-b", ip1 + ":80"}, "an nginx load balancer needs -u URL and at least one -b IP:PORT"},
			{[]string{"addlb", "haproxy", "s2", "-u", "x.test"}, "-u and -b are for nginx load balancers"},
		} {
			if errOut := skeinFails(t, tc.args...); !strings.Contains(errOut, tc.want) {
				t.Errorf("skein %v: %q does not say %q", tc.args, strings.TrimSpace(errOut), tc.want)
			}
		}
	})

	out := mustSkein(t, "addlb", "nginx", "s2", "-n", "ng1", "-u", "mywordpress.test", "-b", ip1+":80", "-c", certFile, "-k", keyFile)
	if !strings.Contains(out, "added nginx load balancer ng1 on s2") {
		t.Fatalf("addlb said %q", out)
	}
	mustSkein(t, "pub", "ng1", "80", "--host-port", "18090")
	mustSkein(t, "pub", "ng1", "443", "--host-port", "18493")
	const url = "http://127.0.0.1:18090/"
	plain := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

	t.Run("answers for its URL only", func(t *testing.T) {
		eventually(t, 10*time.Second, func() bool {
			code, body, err := getHost(plain, url, "mywordpress.test")
			return err == nil && code == 200 && body == "n1"
		}, "no answer for mywordpress.test")
		if code, _, err := getHost(plain, url, "other.test"); err != nil || code != 404 {
			t.Fatalf("another host name got %d %v, want 404", code, err)
		}
	})

	t.Run("TLS verifies against the CA", func(t *testing.T) {
		tlsClient := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "mywordpress.test"},
			DialContext:     (&net.Dialer{}).DialContext}}
		code, body, err := getHost(tlsClient, "https://127.0.0.1:18493/", "mywordpress.test")
		if err != nil || code != 200 || body != "n1" {
			t.Fatalf("HTTPS: %d %q %v", code, body, err)
		}
		strict := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{ServerName: "mywordpress.test"}}}
		if _, _, err := getHost(strict, "https://127.0.0.1:18493/", "mywordpress.test"); err == nil {
			t.Fatal("the certificate verified without the CA")
		}
	})

	t.Run("round robin, then ip_hash; a haproxy mode is refused", func(t *testing.T) {
		mustSkein(t, "addbackends", "ng1", ip2+":80")
		seen := map[string]bool{}
		eventually(t, 10*time.Second, func() bool {
			_, body, err := getHost(plain, url, "mywordpress.test")
			if err == nil {
				seen[body] = true
			}
			return seen["n1"] && seen["n2"]
		}, "round robin does not reach both backends: %v", seen)
		errOut := skeinFails(t, "setlb", "ng1", "mode", "leastconn")
		if !strings.Contains(errOut, `nginx load balancers have no mode "leastconn": use default, ip_hash, least_conn`) {
			t.Fatalf("error %q", errOut)
		}
		mustSkein(t, "setlb", "ng1", "mode", "ip_hash")
		eventually(t, 10*time.Second, func() bool {
			got := map[string]bool{}
			for i := 0; i < 10; i++ {
				_, body, err := getHost(plain, url, "mywordpress.test")
				if err != nil {
					return false
				}
				got[body] = true
			}
			return len(got) == 1
		}, "ip_hash does not keep one client on one backend")
		mustSkein(t, "setlb", "ng1", "mode", "default")
	})

	t.Run("injections are refused by the CLI and by the agent, and change nothing", func(t *testing.T) {
		const evil = `evil.test; location /pwn { return 200 "owned"; } #`
		for _, args := range [][]string{
			{"setlb", "ng1", "url", evil},
			{"addlb", "nginx", "s2", "-n", "ngevil", "-u", evil, "-b", ip1 + ":80"},
		} {
			if errOut := skeinFails(t, args...); !strings.Contains(errOut, "is not a host name") {
				t.Errorf("skein %v: %q does not say it is not a host name", args, errOut)
			}
		}
		refusedRaw(t, "s2", events.TypeLBSet, events.LBSet{LB: "ng1", Key: "url", Value: evil}, "want a host name")
		refusedRaw(t, "s2", events.TypeLBAdd, events.LBAdd{Name: "ngevil", Kind: "nginx", URL: evil, Backends: []events.Backend{{Name: "a", Host: ip1, Port: 80}}}, "is not a host name")
		refusedRaw(t, "s2", events.TypeLBBackendsAdd, events.LBBackends{LB: "ng1", Backends: []events.Backend{{Name: "a;", Host: ip1 + ";", Port: 80}}}, "is not")
		if code, body, err := getHost(plain, url+"pwn", "evil.test"); err == nil && (code == 200 || strings.Contains(body, "owned")) {
			t.Fatalf("the injected location answers: %d %q", code, body)
		}
		if strings.Contains(mustSkein(t, "listlbs"), "ngevil") || contains(incusNames(t, "skein-s2"), "ngevil") {
			t.Fatal("a refused load balancer was created")
		}
		if code, _, err := getHost(plain, url, "mywordpress.test"); err != nil || code != 200 {
			t.Fatalf("the site stopped serving: %d %v", code, err)
		}
	})

	t.Run("url, workers and ssl can change; a bad pair changes nothing", func(t *testing.T) {
		mustSkein(t, "setlb", "ng1", "url", "newsite.test")
		eventually(t, 10*time.Second, func() bool {
			c1, _, e1 := getHost(plain, url, "newsite.test")
			c2, _, e2 := getHost(plain, url, "mywordpress.test")
			return e1 == nil && e2 == nil && c1 == 200 && c2 == 404
		}, "the new URL does not answer, or the old one still does")
		// A name nginx itself refuses (longer than its server_names_hash bucket):
		// nginx -t's message reaches the user and the running site stays.
		long := strings.Repeat("a", 60) + ".example.test"
		if errOut := skeinFails(t, "setlb", "ng1", "url", long); !strings.Contains(errOut, "nginx refused the new configuration") || !strings.Contains(errOut, "server_names_hash") {
			t.Fatalf("nginx's refusal is not shown: %q", errOut)
		}
		if code, _, err := getHost(plain, url, "newsite.test"); err != nil || code != 200 {
			t.Fatalf("the running site changed after a refused configuration: %d %v", code, err)
		}
		mustSkein(t, "setlb", "ng1", "workers", "2")
		eventually(t, 10*time.Second, func() bool {
			out, err := incusCmd("exec", "ng1", "--project", "skein-s2", "--", "pgrep", "-c", "-f", "nginx: worker")
			return err == nil && strings.TrimSpace(out) == "2"
		}, "nginx does not run 2 workers")
		newPool, newCert, newKey := testCA(t, dir, "newsite.test")
		newKeyFile = newKey
		if errOut := skeinFails(t, "setlb", "ng1", "ssl", newCert, otherKey); !strings.Contains(errOut, "do not make a pair") {
			t.Fatalf("mismatched pair: %q", errOut)
		}
		mustSkein(t, "setlb", "ng1", "ssl", newCert, newKey)
		tlsClient := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{RootCAs: newPool, ServerName: "newsite.test"}}}
		eventually(t, 10*time.Second, func() bool {
			code, _, err := getHost(tlsClient, "https://127.0.0.1:18493/", "newsite.test")
			return err == nil && code == 200
		}, "HTTPS with the new certificate does not verify")
		mustSkein(t, "setlb", "ng1", "url", "mywordpress.test")
	})

	t.Run("the TLS keys are in clear nowhere but in the load balancer", func(t *testing.T) {
		for _, f := range []string{keyFile, newKeyFile} {
			pem, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			secretNowhere(t, w, strings.Split(string(pem), "\n")[1])
		}
		if out, err := incusCmd("exec", "ng1", "--project", "skein-s2", "--", "stat", "-c", "%a", "/etc/nginx/skein/tls.key"); err != nil || strings.TrimSpace(out) != "600" {
			t.Errorf("the key in the container: %q %v, want mode 600", out, err)
		}
	})

	t.Run("50 backend changes under load drop no request", func(t *testing.T) {
		mustSkein(t, "delbackends", "ng1", ip2+":80")
		res := loadDuringHost(t, url, "mywordpress.test", 4, 2000, 120*time.Second, func() {
			for i := 0; i < 25; i++ {
				mustSkein(t, "addbackends", "ng1", ip2+":80")
				mustSkein(t, "delbackends", "ng1", ip2+":80")
			}
		})
		t.Logf("%d requests (keep-alive, 4 clients) during 50 changes: %d failed, %d answered by n2", res.total, res.failed, res.hosts["n2"])
		if res.failed != 0 {
			t.Fatalf("%d of %d requests failed: %v", res.failed, res.total, res.firstErr)
		}
	})
}
