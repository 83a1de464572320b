//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/seal"
)

// managementToken reads the endpoints' management token where it is in
// clear: in the container of the endpoint at ip.
func managementToken(ip string) (string, error) {
	out, _, err := skein("listep", "-o", "json")
	if err != nil {
		return "", err
	}
	for _, e := range parseEndpoints(out) {
		if e.IP == ip {
			tok, err := incusCmd("exec", e.Name, "--project", "skein-"+e.Server, "--", "cat", "/etc/skein/consul.token")
			return strings.TrimSpace(tok), err
		}
	}
	return "", fmt.Errorf("no endpoint at %s", ip)
}

// consulAPI is a client of the endpoint at ip presenting token.
func consulAPI(t *testing.T, ip, token string) *api.Client {
	t.Helper()
	cl, err := api.NewClient(&api.Config{Address: ip + ":8500", Token: token, HttpClient: &http.Client{Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// agentToken opens the Consul token made for server's agent with that
// agent's own key, as the agent does.
func agentToken(t *testing.T, server string) string {
	t.Helper()
	keys, err := seal.LoadOrCreate(filepath.Join(dataDir, "agent-"+server, "seal.key"))
	if err != nil {
		t.Fatal(err)
	}
	js := adminJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := bus.OpenStore[events.ConsulToken](ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	var tok string
	eventually(t, 20*time.Second, func() bool {
		recs, err := st.List(ctx)
		if err != nil {
			return false
		}
		for _, r := range recs {
			if r.Value.For != server {
				continue
			}
			if s, err := keys.Open(r.Value.Token); err == nil {
				tok = string(s)
				return true
			}
		}
		return false
	}, "no consul token for %s that its key opens", server)
	return tok
}

func denied(err error) bool {
	var se api.StatusError
	return err != nil && (errors.As(err, &se) && se.Code == http.StatusForbidden || strings.Contains(err.Error(), "403"))
}

// Consul runs with ACLs on and default deny: a container without a token can
// neither register nor read the KV store, yet resolves NAME.service.consul;
// each agent's token writes its own server's nodes only; the tokens are in
// clear nowhere but in the endpoints.
func TestConsulACLs(t *testing.T) {
	dumpOnFailure(t)
	const ep = "10.77.1.44"
	w := tap(t)
	cleanup(t, "acl1", "consul-44")
	t.Cleanup(func() { _, _, _ = skein("delep", "consul-44") })
	// The operator picks the management token, a secret the test knows.
	dir := t.TempDir()
	const known = "5e1f0c2a-9b7d-4e3f-8a61-2c4d6e8f0a1b"
	tokenFile, badFile := filepath.Join(dir, "token"), filepath.Join(dir, "bad")
	if err := os.WriteFile(tokenFile, []byte(known+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badFile, []byte("root\"\n  default_policy = \"allow\""), 0o600); err != nil {
		t.Fatal(err)
	}
	if errOut := skeinFails(t, "addep", "s1", ep, "-n", "consul-44", "--token-file", badFile); !strings.Contains(errOut, "is not a UUID") {
		t.Fatalf("a token that is not a UUID: %q", errOut)
	}
	mustSkein(t, "addep", "s1", ep, "-n", "consul-44", "--token-file", tokenFile)
	mustSkein(t, "launch", "skein-busybox", "acl1", "-s", "s2")
	ip := find(list(t), "acl1").IPv4
	mustSkein(t, "addservice", "acl1", "aclsvc", "80")
	mgmt, err := managementToken(ep)
	if err != nil || mgmt != known {
		t.Fatalf("the endpoint's management token is %q (%v), want the one in --token-file", mgmt, err)
	}
	if errOut := skeinFails(t, "addep", "s2", "10.77.2.44", "--token-file", tokenFile); !strings.Contains(errOut, "applies to the first endpoint only") {
		t.Errorf("--token-file beside an endpoint: %q", errOut)
	}
	admin := consulAPI(t, ep, mgmt)

	t.Run("a container resolves NAME.service.consul without a token", func(t *testing.T) {
		eventually(t, 15*time.Second, func() bool { return same(nslookupIn("skein-s2", "acl1", "aclsvc.service.consul"), []string{ip}) },
			"acl1 does not resolve aclsvc.service.consul to %s", ip)
		if got := dig(ep, "aclsvc.service.consul"); !same(got, []string{ip}) {
			t.Errorf("dig at the endpoint: %v", got)
		}
	})

	t.Run("without a token a container can neither read the KV store nor register", func(t *testing.T) {
		// The key exists, so a refusal is not a 404.
		if _, err := admin.KV().Put(&api.KVPair{Key: "skein-acl-test", Value: []byte("kv-secret-value")}, nil); err != nil {
			t.Fatal(err)
		}
		out, _ := incusCmd("exec", "acl1", "--project", "skein-s2", "--", "wget", "-q", "-O", "-", "http://"+ep+":8500/v1/kv/skein-acl-test?raw")
		if !strings.Contains(out, "403") || strings.Contains(out, "kv-secret-value") {
			t.Errorf("busybox wget of a KV key without a token: %q, want 403 Forbidden", out)
		}
		// Consul's register endpoints take PUT only, which busybox wget cannot
		// send (a POST answers 405): busybox nc sends the PUT.
		for _, tc := range []struct{ path, body string }{
			{"/v1/catalog/register", `{"Node":"evil","Address":"10.77.2.99","Service":{"Service":"aclsvc","Port":80}}`},
			{"/v1/agent/service/register", `{"Name":"aclsvc","Address":"10.77.2.99","Port":80}`},
		} {
			req := fmt.Sprintf("PUT %s HTTP/1.0\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s", tc.path, ep, len(tc.body), tc.body)
			out, _ := incusCmd("exec", "acl1", "--project", "skein-s2", "--", "sh", "-c", `printf '%s' "$0" | timeout 5 nc `+ep+` 8500`, req)
			if first, _, _ := strings.Cut(out, "\n"); !strings.Contains(first, "403") {
				t.Errorf("PUT %s without a token answered %q, want 403", tc.path, first)
			}
		}
		out, _ = incusCmd("exec", "acl1", "--project", "skein-s2", "--", "wget", "-q", "-O", "-", "--post-data", "{}", "http://"+ep+":8500/v1/catalog/register")
		if strings.Contains(out, "200 OK") {
			t.Errorf("a POST registered: %q", out)
		}
		if got := dig(ep, "aclsvc.service.consul"); !same(got, []string{ip}) {
			t.Errorf("aclsvc resolves to %v: an anonymous registration landed", got)
		}
		if n, _, err := admin.Catalog().Node("evil", nil); err != nil || n != nil {
			t.Errorf("node evil in the catalog: %v %v", n, err)
		}
	})

	t.Run("each agent's token writes its own server's nodes only", func(t *testing.T) {
		tok := agentToken(t, "s2")
		s2 := consulAPI(t, ep, tok)
		if _, err := admin.Catalog().Register(&api.CatalogRegistration{Node: "s1.acl-victim", Address: "10.77.1.98"}, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = admin.Catalog().Deregister(&api.CatalogDeregistration{Node: "s1.acl-victim"}, nil) })
		if _, err := s2.Catalog().Register(&api.CatalogRegistration{Node: "s2.acl-own", Address: "10.77.2.98", Service: &api.AgentService{Service: "aclown", Port: 80}}, nil); err != nil {
			t.Errorf("s2's token cannot register s2's node: %v", err)
		}
		if _, err := s2.Catalog().Deregister(&api.CatalogDeregistration{Node: "s2.acl-own"}, nil); err != nil {
			t.Errorf("s2's token cannot deregister s2's node: %v", err)
		}
		if _, err := s2.Catalog().Register(&api.CatalogRegistration{Node: "s1.acl-forged", Address: "10.77.1.97"}, nil); !denied(err) {
			t.Errorf("s2's token registered a node of s1: %v", err)
		}
		if _, err := s2.Catalog().Deregister(&api.CatalogDeregistration{Node: "s1.acl-victim"}, nil); !denied(err) {
			t.Errorf("s2's token deregistered a node of s1: %v", err)
		}
		if n, _, err := admin.Catalog().Node("s1.acl-victim", nil); err != nil || n == nil {
			t.Errorf("s1's node is gone: %v", err)
		}
		if _, _, err := s2.KV().Get("skein-acl-test", nil); !denied(err) {
			t.Errorf("s2's token read the KV store: %v", err)
		}
		// And without it, s2's containers are published: the agent holds it.
		nodes, _, err := admin.Catalog().Nodes(nil)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, n := range nodes {
			found = found || n.Node == "s2.acl1"
		}
		if !found {
			t.Error("acl1 is not in the catalog as node s2.acl1")
		}
		secretNowhere(t, w, tok)
	})

	t.Run("the management token is in clear nowhere but in the endpoints", func(t *testing.T) {
		secretNowhere(t, w, mgmt)
		for _, f := range []string{"/etc/consul.d/acl.hcl", "/etc/skein/consul.token"} {
			if out, err := incusCmd("exec", "consul-44", "--project", "skein-s1", "--", "stat", "-c", "%a", f); err != nil || strings.TrimSpace(out) != "600" {
				t.Errorf("%s in the endpoint: %q %v, want mode 600", f, out, err)
			}
		}
	})
}

// consulCLI runs the consul CLI on the host with the management token of the
// endpoint at ip in its environment.
func consulCLI(ip string, args ...string) ([]byte, error) {
	tok, err := managementToken(ip)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("consul", append(args, "-http-addr="+ip+":8500")...)
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_TOKEN="+tok)
	return cmd.CombinedOutput()
}

func parseEndpoints(out string) []events.Endpoint {
	var eps []events.Endpoint
	_ = json.Unmarshal([]byte(out), &eps)
	return eps
}
