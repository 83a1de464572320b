package discovery

import (
	"fmt"
	"strings"

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
