package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/hosts"
	"github.com/skeinhq/skein/internal/validate"
)

func printWS(g *globals, did string, res *events.Result) error {
	var w events.WS
	if err := json.Unmarshal(res.Output, &w); err != nil {
		return fmt.Errorf("bad result: %w", err)
	}
	if g.output == "json" {
		return printJSON(w)
	}
	fmt.Printf("%s web server %s on %s: %d apps\n", did, w.Name, w.Server, len(w.Apps))
	return nil
}

func addwsCmd(g *globals) *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "addws SERVER [-n NAME]",
		Short: "Run an nginx web server in a container on a server (name ws-N unless -n)",
		Long: `Run an nginx web server in a container on a server. It publishes apps by URL
(pubapp) from any server of the cluster, and answers 404 for any other host name.
Forward its port 80 to the server with ` + "`skein pub SERVER:WS 80`.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name != "" {
				if err := checkName(name); err != nil {
					return err
				}
			}
			check := func(ctx context.Context, cl *cli, _ *events.Heartbeat) error {
				if name != "" {
					if _, err := cl.container(ctx, name); err == nil {
						return fmt.Errorf("a container named %s already exists: pick another name with -n", name)
					}
				}
				return nil
			}
			return g.sendChecked(cmd.Context(), onServer(args[0]), check, events.TypeWSAdd, events.WSAdd{Name: name}, func(res *events.Result) error {
				return printWS(g, "added", res)
			})
		},
	}
	c.Flags().StringVarP(&name, "name", "n", "", "web server name (default ws-N)")
	return g.acts(c)
}

// wsView is a web server as listws shows it.
type wsView struct {
	events.WS
	// IP is its container's address.
	IP string `json:"ip"`
	// Published are the host ports forwarded to it.
	Published []string `json:"published"`
}

func listwsCmd(g *globals) *cobra.Command {
	return listCommand(g, listing[wsView]{
		use: "listws", short: "List the web servers with their apps (URL -> target) and published ports",
		headers: []string{"NAME", "SERVER", "IP", "APPS", "PUBLISHED"},
		read: func(ctx context.Context, cl *cli, _ []string) ([]wsView, error) {
			all, err := all[events.WS](ctx, cl)
			if err != nil {
				return nil, err
			}
			views := []wsView{}
			for _, w := range all {
				v := wsView{WS: w, Published: []string{}}
				if rec, err := cl.container(ctx, w.Name); err == nil {
					v.IP = rec.IPv4
					if rec.Published != nil {
						v.Published = rec.Published
					}
				}
				views = append(views, v)
			}
			sort.Slice(views, func(i, j int) bool { return views[i].Name < views[j].Name })
			return views, nil
		},
		row: func(v wsView) []string {
			var apps []string
			for _, a := range v.Apps {
				app := fmt.Sprintf("%s->%s:%d", a.URL, a.Target.Host, a.Target.Port)
				if a.TLS != nil {
					app += "(" + a.TLS.Kind + ")"
				}
				apps = append(apps, app)
			}
			sort.Strings(apps)
			return []string{v.Name, v.Server, orDash(v.IP), orDash(strings.Join(apps, " ")), orDash(strings.Join(v.Published, " "))}
		},
	})
}

func delwsCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "delws NAME",
		Short: "Remove a web server and its container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return onWS(cmd, g, args[0], "deleted", events.TypeWSDelete, events.WSRef{Name: args[0]})
		},
	})
}

// parseTarget reads an app's target: IP:PORT, NAME.service.consul:PORT or CONTAINER:PORT.
func parseTarget(s string) (events.Target, error) {
	host, p, ok := strings.Cut(s, ":")
	port, err := strconv.Atoi(p)
	if !ok || err != nil || port < 1 || port > 65535 {
		return events.Target{}, fmt.Errorf("bad target %q: want IP:PORT, CONTAINER:PORT or NAME.service.consul:PORT, e.g. 10.77.2.5:9000", s)
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		return events.Target{Kind: events.TargetAddress, Host: host, Port: port}, nil
	}
	if strings.HasSuffix(host, ".service.consul") && validate.Host.Valid(host) {
		return events.Target{Kind: events.TargetConsul, Host: host, Port: port}, nil
	}
	if validate.Name.Valid(host) {
		return events.Target{Kind: events.TargetContainer, Host: host, Port: port}, nil
	}
	return events.Target{}, fmt.Errorf("bad target %q: %q is neither an IPv4 address, a container name nor a Consul name NAME.service.consul", s, host)
}

// appTLSFlags are pubapp's TLS options.
type appTLSFlags struct {
	cert, key, acmeURL, acmeRoots string
	self, acme, noRedirect, hsts  bool
}

// request reads the TLS options into a request; the given key is returned
// apart, to be sealed to the web server's agent.
func (f appTLSFlags) request() (*events.AppTLSRequest, []byte, error) {
	kinds := 0
	for _, on := range []bool{f.cert != "" || f.key != "", f.self, f.acme} {
		if on {
			kinds++
		}
	}
	if kinds > 1 {
		return nil, nil, fmt.Errorf("-c/-k, -s and --acme are exclusive: pick one way to get the certificate")
	}
	if kinds == 0 {
		if f.noRedirect || f.hsts || f.acmeURL != "" || f.acmeRoots != "" {
			return nil, nil, fmt.Errorf("--no-redirect, --hsts and --acme-url/--acme-roots go with -c/-k, -s or --acme")
		}
		return nil, nil, nil
	}
	t := &events.AppTLSRequest{NoRedirect: f.noRedirect, HSTS: f.hsts}
	if (f.acmeURL != "" || f.acmeRoots != "") && !f.acme {
		return nil, nil, fmt.Errorf("--acme-url and --acme-roots go with --acme")
	}
	switch {
	case f.self:
		t.Kind = events.TLSSelf
	case f.acme:
		t.Kind, t.ACMEURL = events.TLSACME, f.acmeURL
		if t.ACMEURL == "" {
			t.ACMEURL = events.DefaultACMEURL
		}
		if !validate.HTTPSURL.Valid(t.ACMEURL) {
			return nil, nil, fmt.Errorf("--acme-url %q is not an https URL: want one such as https://acme-v02.api.letsencrypt.org/directory", t.ACMEURL)
		}
		if f.acmeRoots != "" {
			roots, err := os.ReadFile(f.acmeRoots)
			if err != nil {
				return nil, nil, fmt.Errorf("reading --acme-roots: %w", err)
			}
			if !x509.NewCertPool().AppendCertsFromPEM(roots) {
				return nil, nil, fmt.Errorf("--acme-roots %s holds no PEM certificate", f.acmeRoots)
			}
			t.ACMERoots = string(roots)
		}
	default:
		if f.cert == "" || f.key == "" {
			return nil, nil, fmt.Errorf("-c CERT and -k KEY go together")
		}
		pair, key, err := readTLS(f.cert, f.key)
		if err != nil {
			return nil, nil, err
		}
		t.Kind, t.Pair = events.TLSGiven, pair
		return t, key, nil
	}
	return t, nil, nil
}

func pubappCmd(g *globals) *cobra.Command {
	var f appTLSFlags
	c := &cobra.Command{
		Use:   "pubapp WS URL TARGET [-c CERT -k KEY | -s | --acme]",
		Short: "Publish an app on a web server: requests for the host name URL go to TARGET (IP:PORT, CONTAINER:PORT or NAME.service.consul:PORT)",
		Long: `Publish an app on a web server: requests for the host name URL go to TARGET,
an IP:PORT, a CONTAINER:PORT (a skein container, followed when its address
changes), or NAME.service.consul:PORT resolved through the Consul endpoints at
request time (it follows the instances). WebSocket upgrades pass through.

TLS serves the app on 443 too: -c/-k with a certificate and its key (the key
is sealed to the web server's agent), -s with a certificate signed by the web
server's own CA (` + "`skein wsca WS`" + ` prints it), or --acme with one obtained from an
ACME directory (--acme-url, default Let's Encrypt) through the HTTP-01
challenge, which this web server answers on port 80: the URL must reach it
there. Self-signed and ACME certificates are renewed 30 days before they
expire (` + "`skein renewapp`" + ` renews at once). Port 80 redirects to https unless
--no-redirect; --hsts adds the Strict-Transport-Security header.

The same app again changes nothing; the same URL and target with another
certificate replaces it; a URL the web server publishes elsewhere is refused
(delapp it first).`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !validate.Host.Valid(args[1]) {
				return fmt.Errorf("url %q is not a host name: want one such as mywordpress.org", args[1])
			}
			t, err := parseTarget(args[2])
			if err != nil {
				return err
			}
			tlsReq, key, err := f.request()
			if err != nil {
				return err
			}
			p := events.AppPublish{WS: args[0], URL: args[1], Target: t, TLS: tlsReq}
			check := func(ctx context.Context, cl *cli, hb *events.Heartbeat) error {
				if t.Kind == events.TargetContainer {
					if _, err := cl.container(ctx, t.Host); err != nil {
						return err
					}
				}
				if tlsReq != nil && tlsReq.Pair != nil {
					return sealKey(tlsReq.Pair, key, hb)
				}
				return nil
			}
			return onWSChecked(cmd, g, args[0], "published on", events.TypeAppPublish, p, check)
		},
	}
	c.Flags().StringVarP(&f.cert, "cert", "c", "", "PEM certificate (chain) file: serve the app on 443 with it")
	c.Flags().StringVarP(&f.key, "key", "k", "", "PEM key file of the certificate")
	c.Flags().BoolVarP(&f.self, "self-signed", "s", false, "serve the app on 443 with a certificate signed by the web server's CA")
	c.Flags().BoolVar(&f.acme, "acme", false, "serve the app on 443 with a certificate from an ACME directory (HTTP-01)")
	c.Flags().StringVar(&f.acmeURL, "acme-url", "", "ACME directory URL (default Let's Encrypt's)")
	c.Flags().StringVar(&f.acmeRoots, "acme-roots", "", "PEM file of CA certificates to trust for the ACME directory's own TLS (a private directory)")
	c.Flags().BoolVar(&f.noRedirect, "no-redirect", false, "keep serving the app on port 80 instead of redirecting to https")
	c.Flags().BoolVar(&f.hsts, "hsts", false, "add the Strict-Transport-Security header on https")
	return g.acts(c)
}

func renewappCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "renewapp WS URL",
		Short: "Renew an app's self-signed or ACME certificate now (it is renewed 30 days before expiry anyway)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !validate.Host.Valid(args[1]) {
				return fmt.Errorf("url %q is not a host name: want one such as mywordpress.org", args[1])
			}
			return onWS(cmd, g, args[0], "renewed on", events.TypeAppRenew, events.AppRef{WS: args[0], URL: args[1]})
		},
	})
}

func wscaCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "wsca WS",
		Short: "Print the PEM certificate of a web server's own CA, which signs its -s apps' certificates",
		Long: `Print the PEM certificate of a web server's own CA, which signs the
certificates of the apps published with -s, so that a client can trust it:
skein wsca web1 > ca.pem; curl --cacert ca.pem https://myapp.org/`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cl.close()
			w, err := find[events.WS](cmd.Context(), cl, args[0], fmt.Errorf("no web server named %q: `skein listws` shows them", args[0]))
			if err != nil {
				return err
			}
			if w.CA == "" {
				return fmt.Errorf("web server %s has no CA yet: it makes one for its first app published with -s", w.Name)
			}
			fmt.Print(w.CA)
			return nil
		},
	}
}

func delappCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "delapp WS URL",
		Short: "Remove one app from a web server (the others keep serving)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !validate.Host.Valid(args[1]) {
				return fmt.Errorf("url %q is not a host name: want one such as mywordpress.org", args[1])
			}
			return onWS(cmd, g, args[0], "removed from", events.TypeAppDelete, events.AppRef{WS: args[0], URL: args[1]})
		},
	})
}

// onWS sends a command to a web server's server.
func onWS(cmd *cobra.Command, g *globals, name, did, typ string, payload any) error {
	return onWSChecked(cmd, g, name, did, typ, payload, nil)
}

// onWSChecked is onWS with a check that runs before the command is sent.
func onWSChecked(cmd *cobra.Command, g *globals, name, did, typ string, payload any, check precheck) error {
	ofWS := func(ctx context.Context, cl *cli) (string, error) {
		w, err := find[events.WS](ctx, cl, name, fmt.Errorf("no web server named %q: `skein listws` shows them", name))
		if err != nil {
			return "", err
		}
		return w.Server, nil
	}
	return g.sendChecked(cmd.Context(), ofWS, check, typ, payload, func(res *events.Result) error { return printWS(g, did, res) })
}

func addhostsCmd(g *globals) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "addhosts URL [IP]",
		Short: "Map URL to IP (default: the address of the web server that publishes it) in this machine's /etc/hosts",
		Long: `Map the host name URL to IP in this machine's /etc/hosts, inside one block
marked for skein (the file is replaced atomically, every other line kept as it
was). Without IP it is the address of the web server that publishes URL. Doing
it again with another IP moves the entry.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e := hosts.Entry{Name: args[0]}
			if !validate.Host.Valid(e.Name) {
				return fmt.Errorf("url %q is not a host name: want one such as mywordpress.org", e.Name)
			}
			if len(args) == 2 {
				e.IP = args[1]
			} else {
				ip, err := wsAddressOf(cmd.Context(), g, e.Name)
				if err != nil {
					return err
				}
				e.IP = ip
			}
			if err := hosts.Check(e); err != nil {
				return err
			}
			old, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			next, err := hosts.Set(old, e)
			if err != nil {
				return err
			}
			if err := hosts.Write(file, next); err != nil {
				return fmt.Errorf("writing %s: %w (run as root)", file, err)
			}
			fmt.Printf("%s -> %s in %s\n", e.Name, e.IP, file)
			return nil
		},
	}
	c.Flags().StringVar(&file, "hosts-file", hosts.Path, "the hosts file")
	_ = c.Flags().MarkHidden("hosts-file")
	return c
}

func delhostsCmd(g *globals) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "delhosts URL",
		Short: "Remove URL's entry that addhosts made in this machine's /etc/hosts (nothing else)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !validate.Host.Valid(args[0]) {
				return fmt.Errorf("url %q is not a host name: want one such as mywordpress.org", args[0])
			}
			old, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			next, found, err := hosts.Remove(old, args[0])
			if err != nil {
				return err
			}
			if !found {
				fmt.Printf("%s has no entry of skein in %s\n", args[0], file)
				return nil
			}
			if err := hosts.Write(file, next); err != nil {
				return fmt.Errorf("writing %s: %w (run as root)", file, err)
			}
			fmt.Printf("%s removed from %s\n", args[0], file)
			return nil
		},
	}
	c.Flags().StringVar(&file, "hosts-file", hosts.Path, "the hosts file")
	_ = c.Flags().MarkHidden("hosts-file")
	return c
}

// wsAddressOf is the address of the web server that publishes url.
func wsAddressOf(ctx context.Context, g *globals, url string) (string, error) {
	cl, err := g.connect(ctx)
	if err != nil {
		return "", err
	}
	defer cl.close()
	all, err := all[events.WS](ctx, cl)
	if err != nil {
		return "", err
	}
	for _, w := range all {
		for _, a := range w.Apps {
			if a.URL != url {
				continue
			}
			rec, err := cl.container(ctx, w.Name)
			if err != nil {
				return "", err
			}
			if rec.IPv4 == "" {
				return "", fmt.Errorf("web server %s publishes %s but has no address now: give the IP", w.Name, url)
			}
			return rec.IPv4, nil
		}
	}
	return "", fmt.Errorf("no web server publishes %s: publish it with `skein pubapp WS %s TARGET`, or give the IP", url, url)
}
