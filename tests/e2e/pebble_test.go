//go:build e2e

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// pebbleVersion is the Pebble (Let's Encrypt's ACME test server) the tests build.
const pebbleVersion = "v2.10.1"

// pebble is a running Pebble with its DNS stub.
type pebble struct {
	// Dir is the ACME directory URL.
	Dir string
	// Roots is the PEM file that Pebble's own HTTPS certificate verifies with.
	Roots string
	// mgmt is Pebble's management address (its issuing roots).
	mgmt string
}

// startPebble runs Pebble on 127.0.0.1:14000 with its DNS pointed at a
// pebble-challtestsrv stub that answers every A query with ip (the web server
// under test), so the HTTP-01 challenge of any name reaches that web server
// on port 80. Both stop when the test ends.
func startPebble(t *testing.T, ip string) *pebble {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", "github.com/letsencrypt/pebble/v2@"+pebbleVersion).Output()
	if err != nil {
		t.Fatalf("downloading pebble: %v %s", err, out)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(os.TempDir(), "skein-pebble-"+pebbleVersion)
	for _, cmd := range []string{"pebble", "pebble-challtestsrv"} {
		if _, err := os.Stat(filepath.Join(bin, cmd)); err == nil {
			continue
		}
		b := exec.Command("go", "build", "-mod", "mod", "-o", filepath.Join(bin, cmd), "./cmd/"+cmd)
		b.Dir = mod.Dir
		b.Env = append(os.Environ(), "GOFLAGS=-modcacherw")
		if out, err := b.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", cmd, err, out)
		}
	}
	p := &pebble{Dir: "https://127.0.0.1:14000/dir", Roots: filepath.Join(mod.Dir, "test/certs/pebble.minica.pem"), mgmt: "127.0.0.1:15000"}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           "127.0.0.1:14000",
		"managementListenAddress": p.mgmt,
		"certificate":             filepath.Join(mod.Dir, "test/certs/localhost/cert.pem"),
		"privateKey":              filepath.Join(mod.Dir, "test/certs/localhost/key.pem"),
		"httpPort":                80,
		"tlsPort":                 443,
		"ocspResponderURL":        "",
		// 90 days, like Let's Encrypt: nothing renews by itself during the test.
		"profiles": map[string]any{"default": map[string]any{"description": "skein e2e", "validityPeriod": 90 * 24 * 3600}},
	}}
	data, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(t.TempDir(), "pebble.json")
	if err := os.WriteFile(cfgFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	spawn := func(name string, env []string, args ...string) {
		logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = append(os.Environ(), env...)
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting %s: %v", name, err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if t.Failed() {
				log, _ := os.ReadFile(logf.Name())
				t.Logf("%s log:\n%s", name, log)
			}
		})
	}
	spawn("pebble-challtestsrv", nil, "-dnsserver", "127.0.0.1:18053", "-management", "127.0.0.1:18055",
		"-defaultIPv4", ip, "-defaultIPv6", "", "-doh", "", "-http01", "", "-https01", "", "-tlsalpn01", "")
	// No sleep before validating, no nonces refused at random: the test waits
	// on conditions, and a client retry is not what it is about.
	spawn("pebble", []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}, "-config", cfgFile, "-dnsserver", "127.0.0.1:18053")
	eventually(t, 20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:14000", time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "pebble does not listen on 127.0.0.1:14000")
	return p
}

// client is an HTTPS client that trusts Pebble's own HTTPS certificate.
func (p *pebble) client(t *testing.T) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(p.Roots)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// IssuingRoots is the pool of the root that Pebble signs certificates with.
func (p *pebble) IssuingRoots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := p.client(t).Get(fmt.Sprintf("https://%s/roots/0", p.mgmt))
	if err != nil {
		t.Fatalf("pebble's issuing root: %v", err)
	}
	defer resp.Body.Close()
	pem, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("pebble's issuing root is no PEM: %q", pem)
	}
	return pool
}
