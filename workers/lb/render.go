package lb

import (
	"fmt"
	"strings"

	"github.com/skeinhq/skein/events"
)

// HAProxyModes are the balancing modes of haproxy load balancers; the first is the default.
var HAProxyModes = []string{"roundrobin", "leastconn", "source"}

// RenderHAProxy renders the haproxy configuration of a load balancer. It is a
// pure function of the record, so the same state always gives the same file.
func RenderHAProxy(lb events.LB) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by skein for load balancer %s; skein rewrites it.\n", lb.Name)
	b.WriteString(`global
    master-worker
    stats socket /run/haproxy/admin.sock mode 660 level admin expose-fd listeners
    maxconn 4096

defaults
    mode http
    option http-server-close
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 5s
    retries 2
    option redispatch

frontend fe
    bind *:80
    default_backend be

backend be
`)
	mode := lb.Mode
	if mode == "" {
		mode = HAProxyModes[0]
	}
	fmt.Fprintf(&b, "    balance %s\n", mode)
	if len(lb.Backends) == 0 {
		// No backend yet: answer 503 rather than refuse the configuration.
		b.WriteString("    # no backends yet\n")
	}
	for _, be := range lb.Backends {
		fmt.Fprintf(&b, "    server %s %s:%d check inter 1s fall 2 rise 1\n", be.Name, be.Host, be.Port)
	}
	return b.String()
}
