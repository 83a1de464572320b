//go:build e2e

package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDashboardLogin: a server whose dashboard listens beyond loopback
// serves it over HTTPS (a certificate of skein's CA) and only after a login:
// without one every page is a 401 naming `skein dashboard URL`; a bad,
// reused or agent's token is refused; an observer's link from `skein
// dashboard` opens the live dashboard in Chromium, which shows the server's
// agent; revoking the observer's credentials ends the session and its
// stream.
func TestDashboardLogin(t *testing.T) {
	dumpOnFailure(t)
	data := t.TempDir()
	busURL := fmt.Sprintf("nats://127.0.0.1:%d", freePort())
	httpAddr := fmt.Sprintf("%s:%d", hostAddress, freePort())
	dash := "https://" + httpAddr + "/"

	srv := startProc("dash-server", "server", "--data", data, "--listen", strings.TrimPrefix(busURL, "nats://"), "--no-scheduler", "--http", httpAddr)
	defer srv.stop()
	admin := filepath.Join(data, "auth", "admin.creds")
	ca := filepath.Join(data, "tls", "ca.pem")
	certFile := filepath.Join(data, "tls", "server-"+hostAddress+".pem")
	eventually(t, 20*time.Second, func() bool {
		_, err1 := os.Stat(admin)
		_, err2 := os.Stat(certFile)
		return err1 == nil && err2 == nil
	}, "the server made no admin credentials or dashboard certificate")

	// A client that trusts skein's CA, and nothing else.
	caPEM, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (int, string) {
		t.Helper()
		r, err := client.Get(strings.TrimSuffix(dash, "/") + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	eventually(t, 20*time.Second, func() bool { _, err := client.Get(dash); return err == nil }, "the dashboard does not answer over HTTPS with skein's CA")

	for _, p := range []string{"/", "/api/state", "/api/stream", "/no/such/page"} {
		if code, body := get(p); code != http.StatusUnauthorized || !strings.Contains(body, "skein dashboard "+dash) || strings.Contains(body, "goroutine") {
			t.Errorf("GET %s without a login: %d %.300q, want a 401 page naming `skein dashboard %s`", p, code, body, dash)
		}
	}
	for _, q := range []string{"", "?token=", "?token=garbage", "?token=eyJqd3QiOiIifQ.AAAA"} {
		if code, body := get("/login" + q); code != http.StatusUnauthorized || strings.Contains(body, "goroutine") {
			t.Errorf("GET /login%s: %d %.300q, want 401", q, code, body)
		}
	}
	// Plain HTTP to the HTTPS port is not served.
	if r, err := httpClient.Get("http://" + httpAddr + "/"); err == nil {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP: %d %q", r.StatusCode, b)
		}
	}

	credsDir := t.TempDir()
	for _, role := range [][]string{{"observer"}, {"agent", "dashagent"}} {
		if out, err := exec.Command(skeinBin, append(append([]string{"creds"}, role...), "--data", data, "-o", credsDir)...).CombinedOutput(); err != nil {
			t.Fatalf("creds %v: %v %s", role, err, out)
		}
	}
	observer, agentCreds := filepath.Join(credsDir, "observer.creds"), filepath.Join(credsDir, "agent-dashagent.creds")
	link := func(creds string) string {
		t.Helper()
		out, err := exec.Command(skeinBin, "dashboard", dash, "--creds", creds).Output()
		if err != nil {
			t.Fatalf("skein dashboard: %v", err)
		}
		l := strings.TrimSpace(string(out))
		if !strings.HasPrefix(l, dash+"login?token=") {
			t.Fatalf("skein dashboard printed %q, want a link to %slogin", l, dash)
		}
		return l
	}
	// Bad input to the CLI: named fixes.
	for args, want := range map[string]string{
		"http://127.0.0.1:8474/":   "needs no login",
		"http://" + httpAddr + "/": "HTTPS",
		"ftp://x/":                 "want https://HOST:PORT/",
	} {
		out, err := exec.Command(skeinBin, "dashboard", args, "--creds", observer).CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("skein dashboard %s: %v %s, want an error saying %q", args, err, out, want)
		}
	}
	if code, body := get(strings.TrimPrefix(link(agentCreds), strings.TrimSuffix(dash, "/"))); code != http.StatusForbidden || !strings.Contains(body, "observer") {
		t.Errorf("an agent's login: %d %.300q, want 403 naming an observer's credentials", code, body)
	}

	// An agent of this server's, so that the dashboard has something to show.
	agent := startProc("dash-agent", "agent", "--name", "dashagent", "--nats", busURL, "--creds", agentCreds,
		"--network", "skeinbr3", "--incus-project", "skein-s3", "--pool", "skein", "--state", filepath.Join(data, "agent"))
	defer agent.stop()

	// Chromium trusts this certificate only: its key pinned, as a user who imported skein's CA would.
	certPEM, _ := os.ReadFile(certFile)
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	ctx := browser(t, chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(dash))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusUnauthorized {
		t.Errorf("the browser without a login: %d, want 401", resp.Status)
	}
	pageTrue(t, ctx, `document.title === "Log in to skein" && document.body.textContent.includes("skein dashboard `+dash+`")`, 5*time.Second)
	screenshot(t, ctx, "login-needed")

	l := link(observer)
	if err := chromedp.Do(ctx, chromedp.Navigate(l)); err != nil {
		t.Fatal(err)
	}
	pageTrue(t, ctx, `location.href === "`+dash+`" && document.getElementById("conn").className === "up"`, 15*time.Second)
	pageTrue(t, ctx, `document.querySelector('tr[data-server="dashagent"]')`, 30*time.Second)
	screenshot(t, ctx, "logged-in")
	// The link works once.
	if code, body := get(strings.TrimPrefix(l, strings.TrimSuffix(dash, "/"))); code != http.StatusUnauthorized || !strings.Contains(body, "used already") {
		t.Errorf("the link used again: %d %.300q", code, body)
	}

	// Revoked: the open page's stream ends and it says so; a reload is refused.
	if out, err := exec.Command(skeinBin, "creds", "revoke", "observer", "--data", data).CombinedOutput(); err != nil || !strings.Contains(string(out), "revoked 1") {
		t.Fatalf("revoke: %v %s", err, out)
	}
	d := pageTrue(t, ctx, `document.getElementById("conn").textContent.startsWith("logged out")`, 15*time.Second)
	t.Logf("revoked: the page says logged out %s after `skein creds revoke` returned", d.Round(time.Millisecond))
	resp, err = chromedp.Run(ctx, chromedp.NavigateResponse(dash))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusUnauthorized {
		t.Errorf("a revoked user's reload: %d, want 401", resp.Status)
	}
	pageTrue(t, ctx, `document.body.textContent.includes("revoked")`, 5*time.Second)
	screenshot(t, ctx, "revoked")
}
