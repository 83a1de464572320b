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
		if a.Target.Kind == events.TargetConsul && len(ws.Resolvers) == 0 {
			return fmt.Errorf("%w: app %s: a Consul name needs the endpoints' resolvers", validate.ErrInvalid, a.URL)
		}
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
	default:
		return fmt.Errorf("%w: target kind %q: want address or consul", validate.ErrInvalid, t.Kind)
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

// RenderSite renders a web server's site: a default server answering 404 to
// any host name it does not publish, then one server per app (by URL, in
// order) that proxies to its target, WebSocket upgrades included. A Consul
// name is resolved through the endpoints at request time (answers kept one
// second), so it follows the instances. A pure function of the record.
func RenderSite(ws events.WS) (string, error) {
	if err := Check(ws); err != nil {
		return "", err
	}
	apps := append([]events.App(nil), ws.Apps...)
	sort.Slice(apps, func(i, j int) bool { return apps[i].URL < apps[j].URL })
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by skein for web server %s; skein rewrites it.\n", ws.Name)
	for _, a := range apps {
		if a.Target.Kind == events.TargetConsul {
			fmt.Fprintf(&b, "resolver %s valid=1s ipv6=off;\n", strings.Join(ws.Resolvers, " "))
			break
		}
	}
	b.WriteString("map $http_upgrade $connection_upgrade {\n    default upgrade;\n    '' close;\n}\n\n")
	b.WriteString("server {\n    listen 80 default_server;\n    server_name _;\n    return 404;\n}\n")
	for i, a := range apps {
		b.WriteString("\nserver {\n    listen 80;\n")
		fmt.Fprintf(&b, "    server_name %s;\n", a.URL)
		b.WriteString("    location / {\n")
		switch a.Target.Kind {
		case events.TargetConsul:
			// A variable makes nginx resolve the name per request, not once at start.
			fmt.Fprintf(&b, "        set $skein_app_%d %s;\n", i, a.Target.Host)
			fmt.Fprintf(&b, "        proxy_pass http://$skein_app_%d:%d;\n", i, a.Target.Port)
		default:
			fmt.Fprintf(&b, "        proxy_pass http://%s:%d;\n", a.Target.Host, a.Target.Port)
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
	return b.String(), nil
}
