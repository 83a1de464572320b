package discovery

import (
	"fmt"
	"strings"

	"github.com/skeinhq/skein/internal/consul"
	"github.com/skeinhq/skein/internal/validate"
)

// consulConfigPath is where an endpoint's Consul reads its configuration.
const consulConfigPath = "/etc/consul.d/skein.hcl"

// consulUnitPath is the systemd unit that runs an endpoint's Consul.
const consulUnitPath = "/etc/systemd/system/skein-consul.service"

// ConsulConfig renders an endpoint's Consul server configuration. The first
// endpoint bootstraps the cluster alone; later ones join those in join. It
// refuses a name or an address that could not land in the file as it is.
func ConsulConfig(name, ip string, join []string) (string, error) {
	if err := validate.Name.Check(name); err != nil {
		return "", err
	}
	for _, a := range append([]string{ip}, join...) {
		if err := validate.IPv4.Check(a); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by skein for endpoint %s; skein rewrites it.\n", name)
	b.WriteString("datacenter = \"skein\"\n")
	fmt.Fprintf(&b, "node_name = %q\n", name)
	b.WriteString("data_dir = \"/var/lib/consul\"\n")
	b.WriteString("server = true\n")
	if len(join) == 0 {
		b.WriteString("bootstrap_expect = 1\n")
	} else {
		quoted := make([]string, len(join))
		for i, j := range join {
			quoted[i] = fmt.Sprintf("%q", j)
		}
		fmt.Fprintf(&b, "retry_join = [%s]\n", strings.Join(quoted, ", "))
	}
	fmt.Fprintf(&b, "bind_addr = %q\n", ip)
	fmt.Fprintf(&b, "advertise_addr = %q\n", ip)
	b.WriteString("client_addr = \"0.0.0.0\"\n")
	b.WriteString("ui = true\n")
	b.WriteString("ports {\n  dns = 8600\n}\n")
	// Fast elections: a handful of servers on one LAN, not a WAN.
	b.WriteString("performance {\n  raft_multiplier = 1\n}\n")
	// A joined server becomes a voter after this long healthy (default 10s).
	b.WriteString("autopilot {\n  server_stabilization_time = \"3s\"\n}\n")
	// Answers are never cached, so a stopped container leaves DNS at once; any
	// server answers from its own copy, even without a leader (Consul's advice).
	b.WriteString("dns_config {\n  node_ttl = \"0s\"\n  allow_stale = true\n  max_stale = \"87600h\"\n}\n")
	return b.String(), nil
}

// ConsulUnit is the systemd unit of an endpoint's Consul.
const ConsulUnit = `[Unit]
Description=Consul endpoint (skein)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/consul agent -config-dir=/etc/consul.d
ExecReload=/bin/kill -HUP $MAINPID
KillSignal=SIGINT
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
`

// consulACLPath holds the endpoints' ACL settings and the management token:
// readable by root only, in the endpoint's container only.
const consulACLPath = "/etc/consul.d/acl.hcl"

// consulTokenPath holds the management token for the consul CLI in the
// endpoint's container (consul leave -token-file).
const consulTokenPath = "/etc/skein/consul.token"

// ConsulACL renders an endpoint's ACL settings: ACLs on, default deny, and
// the management token mgmt (a UUID) as the master and the agent's own token.
// Every endpoint of the cluster gets the same one.
func ConsulACL(mgmt string) (string, error) {
	if err := validate.UUID.Check(mgmt); err != nil {
		return "", fmt.Errorf("management token: %w", err)
	}
	var b strings.Builder
	b.WriteString("# Written by skein: the endpoints' ACLs. Secret: root only.\n")
	b.WriteString("primary_datacenter = \"skein\"\n")
	b.WriteString("acl {\n  enabled = true\n  default_policy = \"deny\"\n  down_policy = \"extend-cache\"\n")
	fmt.Fprintf(&b, "  tokens {\n    master = %q\n    agent = %q\n  }\n}\n", mgmt, mgmt)
	return b.String(), nil
}

// anonymousPolicy is what a request without a token may do, DNS included:
// read the catalog's nodes and services, and nothing else (no KV, no writes).
var anonymousPolicy = consul.Policy{Name: "skein-anonymous", Rules: `node_prefix "" {
  policy = "read"
}
service_prefix "" {
  policy = "read"
}
`}

// ServerPolicy is the policy of server's agent token: it writes the catalog
// nodes whose names start with "server." (its own: names hold no dots) and
// reads the rest; service names are the users', so services are writable.
func ServerPolicy(server string) (consul.Policy, error) {
	if err := validate.Name.Check(server); err != nil {
		return consul.Policy{}, fmt.Errorf("server: %w", err)
	}
	return consul.Policy{Name: "skein-server-" + server, Rules: fmt.Sprintf(`node_prefix %q {
  policy = "write"
}
node_prefix "" {
  policy = "read"
}
service_prefix "" {
  policy = "write"
}
`, NodePrefix(server))}, nil
}

// NodePrefix starts the names of a server's nodes in the Consul catalog.
func NodePrefix(server string) string { return server + "." }
