package lb

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/nginx"
	"github.com/skeinhq/skein/internal/validate"
)

// HAProxyModes are the balancing modes of haproxy load balancers; the first is the default.
var HAProxyModes = []string{"roundrobin", "leastconn", "source"}

// Check refuses a record whose values could not land in a configuration file
// as they are: every string that does is validated (internal/validate), the
// mode is one of its kind's, the workers a small number. The renderers call it.
func Check(lb events.LB) error {
	if err := validate.Struct(lb); err != nil {
		return err
	}
	if lb.Mode != "" && !slices.Contains(modes(lb.Kind), lb.Mode) {
		return fmt.Errorf("%w: mode %q is not one of %s", validate.ErrInvalid, lb.Mode, strings.Join(modes(lb.Kind), ", "))
	}
	if lb.Workers < 0 || lb.Workers > 64 {
		return fmt.Errorf("%w: workers %d: want 1 to 64", validate.ErrInvalid, lb.Workers)
	}
	for _, be := range lb.Backends {
		if err := validate.Port(be.Port); err != nil {
			return err
		}
	}
	return nil
}

// RenderHAProxy renders the haproxy configuration of a load balancer. It is a
// pure function of the record, so the same state always gives the same file,
// and refuses a record that Check refuses.
func RenderHAProxy(lb events.LB) (string, error) {
	if err := Check(lb); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by skein for load balancer %s; skein rewrites it.\n", lb.Name)
	// Without httpclient.ssl.verify none, haproxy's own HTTP client (unused) loads every system CA at each start and check.
	b.WriteString(`global
    master-worker
    stats socket /run/haproxy/admin.sock mode 660 level admin expose-fd listeners
    maxconn 4096
    httpclient.ssl.verify none
`)
	if lb.Workers > 0 {
		fmt.Fprintf(&b, "    nbthread %d\n", lb.Workers)
	}
	b.WriteString(`
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
`)
	if lb.TLS {
		fmt.Fprintf(&b, "    bind *:443 ssl crt %s\n", haproxyPEM)
	}
	b.WriteString(`    default_backend be

`)
	if len(lb.Resolvers) > 0 {
		// Consul-name backends follow their instances: answers are held for a second only.
		b.WriteString("resolvers consul\n")
		for i, r := range lb.Resolvers {
			fmt.Fprintf(&b, "    nameserver ns%d %s\n", i, r)
		}
		b.WriteString("    accepted_payload_size 8192\n    resolve_retries 2\n    timeout resolve 1s\n    timeout retry 1s\n    hold valid 1s\n    hold obsolete 1s\n    hold nx 1s\n\n")
	}
	b.WriteString("backend be\n")
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
		if IsName(be.Host) {
			fmt.Fprintf(&b, "    server-template %s 1-%d %s:%d resolvers consul resolve-prefer ipv4 init-addr none check inter 1s fall 2 rise 1\n", be.Name, nameSlots, be.Host, be.Port)
			continue
		}
		fmt.Fprintf(&b, "    server %s %s:%d check inter 1s fall 2 rise 1\n", be.Name, be.Host, be.Port)
	}
	return b.String(), nil
}

// nameSlots bounds how many instances of a Consul-name backend haproxy follows.
const nameSlots = 16

// IsName reports whether a backend host is a name to resolve rather than an address.
func IsName(host string) bool { return net.ParseIP(host) == nil }

// haproxyPEM is the certificate and key of a haproxy load balancer, in one file as haproxy wants.
const haproxyPEM = "/etc/haproxy/skein.pem"

// NginxModes are the balancing modes of nginx load balancers; "default" is round robin.
var NginxModes = []string{"default", "ip_hash", "least_conn"}

// Paths of an nginx load balancer's files in its container.
const (
	nginxMain = nginx.MainPath
	nginxSite = "/etc/nginx/sites-enabled/default"
	nginxCert = "/etc/nginx/skein/tls.crt"
	nginxKey  = "/etc/nginx/skein/tls.key"
)

// RenderNginxMain renders nginx's main configuration file of a load balancer:
// Debian's, with the number of worker processes the record asks for.
func RenderNginxMain(lb events.LB) (string, error) {
	if err := Check(lb); err != nil {
		return "", err
	}
	return nginx.Main("load balancer "+lb.Name, lb.Workers), nil
}

// RenderNginx renders the nginx site of a load balancer: one upstream, the URL's
// server on 80 (and 443 with TLS), and a default server that answers 404 to any
// other host name. A pure function of the record; it refuses a record that
// Check refuses.
func RenderNginx(lb events.LB) (string, error) {
	if err := Check(lb); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by skein for load balancer %s; skein rewrites it.\n", lb.Name)
	if len(lb.Backends) == 1 && IsName(lb.Backends[0].Host) {
		return renderNginxByName(&b, lb), nil
	}
	b.WriteString("upstream be {\n")
	switch lb.Mode {
	case "ip_hash":
		b.WriteString("    ip_hash;\n")
	case "least_conn":
		b.WriteString("    least_conn;\n")
	}
	if len(lb.Backends) == 0 {
		// nginx needs a server in an upstream; this one refuses, so requests get 502.
		b.WriteString("    server 127.0.0.1:1 down;\n")
	}
	for _, be := range lb.Backends {
		fmt.Fprintf(&b, "    server %s:%d max_fails=2 fail_timeout=2s;\n", be.Host, be.Port)
	}
	b.WriteString("    keepalive 16;\n}\n\n")
	b.WriteString("server {\n    listen 80 default_server;\n    server_name _;\n    return 404;\n}\n\n")
	proxy := `    location / {
        proxy_pass http://be;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_next_upstream error timeout http_502 http_503;
    }
`
	fmt.Fprintf(&b, "server {\n    listen 80;\n    server_name %s;\n%s}\n", lb.URL, proxy)
	if lb.TLS {
		fmt.Fprintf(&b, "\nserver {\n    listen 443 ssl;\n    server_name %s;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n%s}\n", lb.URL, nginxCert, nginxKey, proxy)
	}
	return b.String(), nil
}

// renderNginxByName renders a site whose one backend is a Consul name: nginx
// resolves it through the endpoints (answers kept one second) and balances over
// the instances it gets, so it follows them as they come and go.
func renderNginxByName(b *strings.Builder, lb events.LB) string {
	be := lb.Backends[0]
	fmt.Fprintf(b, "resolver %s valid=1s ipv6=off;\n\n", strings.Join(lb.Resolvers, " "))
	b.WriteString("server {\n    listen 80 default_server;\n    server_name _;\n    return 404;\n}\n\n")
	proxy := fmt.Sprintf(`    location / {
        set $skein_backend %s;
        proxy_pass http://$skein_backend:%d;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_next_upstream error timeout http_502 http_503;
    }
`, be.Host, be.Port)
	fmt.Fprintf(b, "server {\n    listen 80;\n    server_name %s;\n%s}\n", lb.URL, proxy)
	if lb.TLS {
		fmt.Fprintf(b, "\nserver {\n    listen 443 ssl;\n    server_name %s;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n%s}\n", lb.URL, nginxCert, nginxKey, proxy)
	}
	return b.String()
}
