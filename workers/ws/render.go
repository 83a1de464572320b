package ws

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/nginx"
	"github.com/skeinhq/skein/internal/validate"
)

// Paths of a web server's files in its container.
const (
	mainPath = nginx.MainPath
	sitePath = "/etc/nginx/sites-enabled/default"
	// tlsDir holds the apps' certificates and keys, by URL.
	tlsDir = "/etc/nginx/skein-tls"
	// acmeRoot is the web root of the HTTP-01 challenges.
	acmeRoot = "/var/lib/skein/acme"
	// caKeyPath is the key of the web server's own CA: it never leaves the container.
	caKeyPath = "/etc/skein/ws-ca/ca.key"
	// accountKeyPath is the web server's ACME account key.
	accountKeyPath = "/etc/skein/acme/account.key"
)

// MaxApps bounds the apps of one web server.
const MaxApps = 256

// Check refuses a web server record that cannot be rendered as it is: every
// string validated by its kind, targets consistent with their kind, no URL
// twice, resolvers for Consul names.
func Check(ws events.WS) error {
	if err := validate.Struct(ws); err != nil {
		return err
	}
	if len(ws.Apps) > MaxApps {
		return fmt.Errorf("%w: %d apps: at most %d on one web server", validate.ErrInvalid, len(ws.Apps), MaxApps)
	}
	seen := map[string]bool{}
	for _, a := range ws.Apps {
		if seen[a.URL] {
			return fmt.Errorf("%w: url %s is published twice", validate.ErrInvalid, a.URL)
		}
		seen[a.URL] = true
		if err := CheckTarget(a.Target); err != nil {
			return err
		}
		if a.Target.Kind == events.TargetContainer {
			if ip, err := netip.ParseAddr(a.Addr); err != nil || !ip.Is4() {
				return fmt.Errorf("%w: app %s: container %s has no IPv4 address to serve", validate.ErrInvalid, a.URL, a.Target.Host)
			}
		} else if a.Addr != "" {
			return fmt.Errorf("%w: app %s: only a container target has an address apart", validate.ErrInvalid, a.URL)
		}
		if err := checkTLS(a); err != nil {
			return err
		}
		if a.Target.Kind == events.TargetConsul && len(ws.Resolvers) == 0 {
			return fmt.Errorf("%w: app %s: a Consul name needs the endpoints' resolvers", validate.ErrInvalid, a.URL)
		}
	}
	return nil
}

// checkTLS refuses an app's TLS that does not fit its kind.
func checkTLS(a events.App) error {
	t := a.TLS
	if t == nil {
		return nil
	}
	switch t.Kind {
	case events.TLSGiven, events.TLSSelf:
		if t.Fingerprint == "" {
			return fmt.Errorf("%w: app %s: a %s certificate with no fingerprint", validate.ErrInvalid, a.URL, t.Kind)
		}
		if t.ACMEURL != "" || t.ACMERoots != "" {
			return fmt.Errorf("%w: app %s: an ACME directory on a %s certificate", validate.ErrInvalid, a.URL, t.Kind)
		}
	case events.TLSACME:
		if t.ACMEURL == "" {
			return fmt.Errorf("%w: app %s: an ACME certificate with no directory", validate.ErrInvalid, a.URL)
		}
	default:
		return fmt.Errorf("%w: app %s: TLS kind %q: want given, self or acme", validate.ErrInvalid, a.URL, t.Kind)
	}
	return nil
}

// CheckTarget refuses a target whose host does not fit its kind.
func CheckTarget(t events.Target) error {
	if err := validate.Port(t.Port); err != nil {
		return err
	}
	switch t.Kind {
	case events.TargetAddress:
		if a, err := netip.ParseAddr(t.Host); err != nil || !a.Is4() {
			return fmt.Errorf("%w: target %q is not an IPv4 address", validate.ErrInvalid, t.Host)
		}
	case events.TargetConsul:
		if !strings.HasSuffix(t.Host, ".service.consul") || !validate.Host.Valid(t.Host) {
			return fmt.Errorf("%w: target %q is not a Consul name NAME.service.consul", validate.ErrInvalid, t.Host)
		}
	case events.TargetContainer:
		if !validate.Name.Valid(t.Host) {
			return fmt.Errorf("%w: target %q is not a container name", validate.ErrInvalid, t.Host)
		}
	default:
		return fmt.Errorf("%w: target kind %q: want address, consul or container", validate.ErrInvalid, t.Kind)
	}
	return nil
}

// RenderMain renders a web server's nginx.conf.
func RenderMain(ws events.WS) (string, error) {
	if err := Check(ws); err != nil {
		return "", err
	}
	return nginx.Main("web server "+ws.Name, 0), nil
}

// RenderSite renders a web server's site: default servers answering 404 to
// any host name it does not publish (and refusing the TLS handshake for one),
// then for each app (by URL, in order) a server on 80 that proxies to its
// target, or, for a TLS app, redirects to https (unless NoRedirect) while a
// server on 443 proxies with its certificate. WebSocket upgrades pass through.
// A Consul name is resolved through the endpoints at request time (answers
// kept one second), so it follows the instances; a container target is served
// at the address it has now. A pure function of the record.
func RenderSite(ws events.WS) (string, error) {
	if err := Check(ws); err != nil {
		return "", err
	}
	apps := append([]events.App(nil), ws.Apps...)
	sort.Slice(apps, func(i, j int) bool { return apps[i].URL < apps[j].URL })
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by skein for web server %s; skein rewrites it.\n", ws.Name)
	anyTLS := false
	for _, a := range apps {
		anyTLS = anyTLS || serves443(a)
	}
	for _, a := range apps {
		if a.Target.Kind == events.TargetConsul {
			fmt.Fprintf(&b, "resolver %s valid=1s ipv6=off;\n", strings.Join(ws.Resolvers, " "))
			break
		}
	}
	b.WriteString("map $http_upgrade $connection_upgrade {\n    default upgrade;\n    '' close;\n}\n\n")
	b.WriteString("server {\n    listen 80 default_server;\n    server_name _;\n    return 404;\n}\n")
	if anyTLS {
		b.WriteString("\nserver {\n    listen 443 ssl default_server;\n    server_name _;\n    ssl_reject_handshake on;\n}\n")
	}
	for i, a := range apps {
		b.WriteString("\nserver {\n    listen 80;\n")
		fmt.Fprintf(&b, "    server_name %s;\n", a.URL)
		if a.TLS != nil && a.TLS.Kind == events.TLSACME {
			// The ACME server's HTTP-01 challenge: files the agent puts there while it orders.
			fmt.Fprintf(&b, "    location ^~ /.well-known/acme-challenge/ {\n        root %s;\n        default_type text/plain;\n    }\n", acmeRoot)
		}
		if serves443(a) && !a.TLS.NoRedirect {
			b.WriteString("    location / {\n        return 301 https://$host$request_uri;\n    }\n}\n")
		} else {
			writeProxy(&b, i, a, false)
		}
		if !serves443(a) {
			continue
		}
		b.WriteString("\nserver {\n    listen 443 ssl;\n")
		fmt.Fprintf(&b, "    server_name %s;\n", a.URL)
		fmt.Fprintf(&b, "    ssl_certificate %s;\n    ssl_certificate_key %s;\n", CertPath(a.URL), KeyPath(a.URL))
		writeProxy(&b, i, a, a.TLS.HSTS)
	}
	return b.String(), nil
}

// serves443 says whether an app has a certificate to serve HTTPS with now (an
// ACME app has none until its first order completes).
func serves443(a events.App) bool { return a.TLS != nil && a.TLS.Fingerprint != "" }

// writeProxy writes the location that sends an app's requests to its target,
// and closes the server block.
func writeProxy(b *strings.Builder, i int, a events.App, hsts bool) {
	if hsts {
		b.WriteString("    add_header Strict-Transport-Security \"max-age=31536000\" always;\n")
	}
	b.WriteString("    location / {\n")
	switch a.Target.Kind {
	case events.TargetConsul:
		// A variable makes nginx resolve the name per request, not once at start.
		fmt.Fprintf(b, "        set $skein_app_%d %s;\n", i, a.Target.Host)
		fmt.Fprintf(b, "        proxy_pass http://$skein_app_%d:%d;\n", i, a.Target.Port)
	case events.TargetContainer:
		fmt.Fprintf(b, "        proxy_pass http://%s:%d; # container %s\n", a.Addr, a.Target.Port, a.Target.Host)
	default:
		fmt.Fprintf(b, "        proxy_pass http://%s:%d;\n", a.Target.Host, a.Target.Port)
	}
	b.WriteString(`        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
    }
}
`)
}

// CertPath is where an app's certificate chain is, in the container.
func CertPath(url string) string { return tlsDir + "/" + url + ".crt" }

// KeyPath is where an app's key is, in the container.
func KeyPath(url string) string { return tlsDir + "/" + url + ".key" }
