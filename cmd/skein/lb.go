package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/internal/validate"
)

// lb finds one load balancer by name.
func (c *cli) lb(ctx context.Context, name string) (*events.LB, error) {
	l, err := find[events.LB](ctx, c, name, fmt.Errorf("no load balancer named %q: `skein listlbs` shows them", name))
	if err != nil {
		return nil, err
	}
	return &l, nil
}

func printLB(g *globals, did string, res *events.Result) error {
	var l events.LB
	if err := json.Unmarshal(res.Output, &l); err != nil {
		return fmt.Errorf("bad result: %w", err)
	}
	if g.output == "json" {
		return printJSON(l)
	}
	fmt.Printf("%s %s load balancer %s on %s: mode %s, %d backends\n", did, l.Kind, l.Name, l.Server, l.Mode, len(l.Backends))
	return nil
}

func addlbCmd(g *globals) *cobra.Command {
	var name, url, certFile, keyFile string
	var backends []string
	c := &cobra.Command{
		Use:   "addlb haproxy|nginx SERVER [-n NAME] [-u URL -b IP:PORT ... [-c CERT -k KEY]]",
		Short: "Run a load balancer in a container on a server",
		Long: `Run a load balancer in a container on a server.

haproxy: addlb haproxy SERVER [-n NAME], then addbackends LB NAME:IP:PORT ...
nginx:   addlb nginx SERVER -u URL -b IP:PORT [-b ...] [-c CERT -k KEY] [-n NAME]
         answers for the host name URL (404 for any other), on 443 too with -c/-k.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, server := args[0], args[1]
			p := events.LBAdd{Name: name, Kind: kind, URL: url}
			switch kind {
			case "haproxy":
				if url != "" || len(backends) > 0 {
					return fmt.Errorf("-u and -b are for nginx load balancers; give haproxy ones backends with addbackends")
				}
			case "nginx":
				if url == "" || len(backends) == 0 {
					return fmt.Errorf("an nginx load balancer needs -u URL and at least one -b IP:PORT")
				}
				for _, b := range backends {
					be, err := parseAddrBackend(b)
					if err != nil {
						return err
					}
					p.Backends = append(p.Backends, be)
				}
			default:
				return fmt.Errorf("unknown load balancer %q: use haproxy or nginx", kind)
			}
			if (certFile == "") != (keyFile == "") {
				return fmt.Errorf("TLS needs both -c CERT and -k KEY")
			}
			var key []byte
			if certFile != "" {
				var err error
				if p.TLS, key, err = readTLS(certFile, keyFile); err != nil {
					return err
				}
			}
			if name != "" {
				if err := checkName(name); err != nil {
					return err
				}
			}
			check := func(ctx context.Context, cl *cli, hb *events.Heartbeat) error {
				if name != "" {
					if _, err := cl.container(ctx, name); err == nil {
						return fmt.Errorf("a container named %s already exists: pick another name with -n", name)
					}
				}
				return sealKey(p.TLS, key, hb)
			}
			return g.sendChecked(cmd.Context(), onServer(server), check, events.TypeLBAdd, p, func(res *events.Result) error {
				return printLB(g, "added", res)
			})
		},
	}
	c.Flags().StringVarP(&name, "name", "n", "", "load balancer name (default KIND-N)")
	c.Flags().StringVarP(&url, "url", "u", "", "host name an nginx load balancer answers for")
	c.Flags().StringArrayVarP(&backends, "backend", "b", nil, "nginx backend IP:PORT (repeatable)")
	c.Flags().StringVarP(&certFile, "cert", "c", "", "PEM certificate file: serve HTTPS on 443 too")
	c.Flags().StringVarP(&keyFile, "key", "k", "", "PEM key file of the certificate")
	return g.acts(c)
}

// readTLS reads a certificate and key and refuses a pair that does not match.
// The key is returned apart: it goes on the bus only sealed (sealKey).
func readTLS(certFile, keyFile string) (*events.TLSPair, []byte, error) {
	cert, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the certificate: %w", err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the key: %w", err)
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return nil, nil, fmt.Errorf("the certificate %s and key %s do not make a pair: %v", certFile, keyFile, err)
	}
	return &events.TLSPair{Cert: string(cert)}, key, nil
}

// sealKey seals key into pair for the agent whose heartbeat is hb: only that
// agent can open it. Nothing to do without a pair.
func sealKey(pair *events.TLSPair, key []byte, hb *events.Heartbeat) error {
	if pair == nil {
		return nil
	}
	if hb.SealKey == "" {
		return fmt.Errorf("server %s publishes no key to seal secrets to: its agent is older than this CLI, upgrade it", hb.Name)
	}
	sealed, err := seal.To(hb.SealKey, key)
	if err != nil {
		return fmt.Errorf("sealing the key for %s: %w", hb.Name, err)
	}
	pair.Key = sealed
	return nil
}

// parseAddrBackend reads an nginx backend IP:PORT; its name is derived from it.
func parseAddrBackend(s string) (events.Backend, error) {
	host, port, ok := strings.Cut(s, ":")
	if !ok {
		return events.Backend{}, fmt.Errorf("bad backend %q: want IP:PORT, e.g. 10.77.1.5:80", s)
	}
	return parseBackend(strings.NewReplacer(".", "-").Replace(host) + "-" + port + ":" + s)
}

// lbView is a load balancer as listlbs shows it.
type lbView struct {
	events.LB
	// IP is its container's address.
	IP string `json:"ip"`
	// Published are the host ports forwarded to it.
	Published []string `json:"published"`
}

func listlbsCmd(g *globals) *cobra.Command {
	return listCommand(g, listing[lbView]{
		use: "listlbs", short: "List the load balancers with their mode, backends and published ports",
		headers: []string{"NAME", "KIND", "SERVER", "IP", "MODE", "BACKENDS", "PUBLISHED"},
		read: func(ctx context.Context, cl *cli, _ []string) ([]lbView, error) {
			lbs, err := all[events.LB](ctx, cl)
			if err != nil {
				return nil, err
			}
			views := []lbView{}
			for _, l := range lbs {
				v := lbView{LB: l, Published: []string{}}
				if rec, err := cl.container(ctx, l.Name); err == nil {
					v.IP = rec.IPv4
					if rec.Published != nil {
						v.Published = rec.Published
					}
				}
				views = append(views, v)
			}
			return views, nil
		},
		row: func(v lbView) []string {
			var bes []string
			for _, b := range v.Backends {
				bes = append(bes, fmt.Sprintf("%s=%s:%d", b.Name, b.Host, b.Port))
			}
			return []string{v.Name, v.Kind, v.Server, orDash(v.IP), v.Mode, orDash(strings.Join(bes, " ")), orDash(strings.Join(v.Published, " "))}
		},
	})
}

func dellbCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "dellb NAME",
		Short: "Remove a load balancer and its container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return onLB(cmd, g, args[0], "deleted", events.TypeLBDelete, events.LBRef{Name: args[0]})
		},
	})
}

func onLB(cmd *cobra.Command, g *globals, name, did, typ string, payload any) error {
	return onLBChecked(cmd, g, name, did, typ, payload, nil)
}

// onLBChecked sends a command to a load balancer's server after check.
func onLBChecked(cmd *cobra.Command, g *globals, name, did, typ string, payload any, check precheck) error {
	ofLB := func(ctx context.Context, cl *cli) (string, error) {
		l, err := cl.lb(ctx, name)
		if err != nil {
			return "", err
		}
		return l.Server, nil
	}
	return g.sendChecked(cmd.Context(), ofLB, check, typ, payload, func(res *events.Result) error { return printLB(g, did, res) })
}

// parseBackend reads NAME:IP:PORT.
func parseBackend(s string) (events.Backend, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || !validate.Ident.Valid(parts[0]) || !validate.BackendHost.Valid(parts[1]) {
		return events.Backend{}, fmt.Errorf("bad backend %q: want NAME:IP:PORT or NAME:SERVICE.service.consul:PORT, e.g. web1:10.77.1.5:80", s)
	}
	port, err := strconv.Atoi(parts[2])
	if err != nil || port < 1 || port > 65535 {
		return events.Backend{}, fmt.Errorf("bad backend %q: the port must be 1 to 65535", s)
	}
	return events.Backend{Name: parts[0], Host: parts[1], Port: port}, nil
}

func addbackendsCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "addbackends LB NAME:IP:PORT ... | addbackends LB IP:PORT ...",
		Short: "Add backends to a load balancer",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var bes []events.Backend
			for _, a := range args[1:] {
				parse := parseBackend
				if strings.Count(a, ":") == 1 {
					// IP:PORT, the nginx form: the name is derived from the address.
					parse = parseAddrBackend
				}
				b, err := parse(a)
				if err != nil {
					return err
				}
				bes = append(bes, b)
			}
			return onLB(cmd, g, args[0], "changed", events.TypeLBBackendsAdd, events.LBBackends{LB: args[0], Backends: bes})
		},
	})
}

func delbackendsCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "delbackends LB NAME ...",
		Short: "Remove backends from a load balancer, by name",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var names []string
			for _, a := range args[1:] {
				name, _, _ := strings.Cut(a, ":")
				if strings.Count(a, ":") == 1 {
					// IP:PORT names the backend the nginx way.
					name = strings.NewReplacer(".", "-", ":", "-").Replace(a)
				}
				names = append(names, name)
			}
			return onLB(cmd, g, args[0], "changed", events.TypeLBBackendsDelete, events.LBBackendNames{LB: args[0], Names: names})
		},
	})
}

func setlbCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "setlb LB mode MODE | url URL | ssl CERT KEY | workers N | resolvers IP:PORT,...",
		Short: "Change a setting of a load balancer",
		Long: `Change a setting of a load balancer.

  mode       haproxy: roundrobin (default), leastconn, source; nginx: default, ip_hash, least_conn
  url        the host name an nginx load balancer answers for
  ssl        serve HTTPS on 443 with CERT and KEY (PEM files; checked as a pair)
  workers    nginx worker processes or haproxy threads
  resolvers  DNS servers (IP:PORT) of Consul-name backends (default: the endpoints)`,
		Args: cobra.RangeArgs(3, 4),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := events.LBSet{LB: args[0], Key: args[1]}
			var key []byte
			switch args[1] {
			case "ssl":
				if len(args) != 4 {
					return fmt.Errorf("ssl takes a certificate and a key: setlb LB ssl CERT KEY")
				}
				var err error
				if p.TLS, key, err = readTLS(args[2], args[3]); err != nil {
					return err
				}
			case "mode", "url", "workers", "resolvers":
				if len(args) != 3 {
					return fmt.Errorf("%s takes one value", args[1])
				}
				p.Value = args[2]
				if err := checkSetting(p.Key, p.Value); err != nil {
					return err
				}
			default:
				return fmt.Errorf("unknown setting %q: use mode, url, ssl, workers or resolvers", args[1])
			}
			return onLBChecked(cmd, g, args[0], "changed", events.TypeLBSet, p, func(_ context.Context, _ *cli, hb *events.Heartbeat) error {
				return sealKey(p.TLS, key, hb)
			})
		},
	})
}

// checkSetting refuses a setting's value that its kind refuses (the agent
// checks again, with the modes of the load balancer's kind).
func checkSetting(key, value string) error {
	switch key {
	case "url":
		if err := validate.Host.Check(value); err != nil {
			return fmt.Errorf("url: %w", err)
		}
	case "resolvers":
		for _, r := range strings.Split(value, ",") {
			if err := validate.AddrPort.Check(strings.TrimSpace(r)); err != nil {
				return fmt.Errorf("resolvers: %w", err)
			}
		}
	case "workers":
		if n, err := strconv.Atoi(value); err != nil || n < 1 || n > 64 {
			return fmt.Errorf("workers %q: a number from 1 to 64", value)
		}
	}
	return nil
}

// splitTarget reads [SERVER:]CONTAINER.
func splitTarget(s string) (server, name string) {
	if a, b, ok := strings.Cut(s, ":"); ok {
		return a, b
	}
	return "", s
}

func pubCmd(g *globals) *cobra.Command {
	var hostPort int
	c := &cobra.Command{
		Use:   "pub [SERVER:]CONTAINER PORT [--host-port P]",
		Short: "Forward a host port of the container's server to a container port",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := strconv.Atoi(args[1])
			if err != nil || port < 1 || port > 65535 {
				return fmt.Errorf("bad port %q: a number from 1 to 65535", args[1])
			}
			if hostPort == 0 {
				hostPort = port
			}
			if hostPort < 1 || hostPort > 65535 {
				return fmt.Errorf("bad --host-port %d: a number from 1 to 65535", hostPort)
			}
			return onPort(cmd, g, args[0], "published", events.TypePublishPort, port, hostPort)
		},
	}
	c.Flags().IntVar(&hostPort, "host-port", 0, "host port (default: the same as PORT)")
	return g.acts(c)
}

func unpubCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "unpub [SERVER:]CONTAINER HOSTPORT",
		Short: "Remove a forwarded host port",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			hostPort, err := strconv.Atoi(args[1])
			if err != nil || hostPort < 1 || hostPort > 65535 {
				return fmt.Errorf("bad host port %q: a number from 1 to 65535", args[1])
			}
			return onPort(cmd, g, args[0], "unpublished", events.TypeUnpublishPort, 0, hostPort)
		},
	})
}

func onPort(cmd *cobra.Command, g *globals, target, did, typ string, port, hostPort int) error {
	server, name := splitTarget(target)
	if err := checkName(name); err != nil {
		return err
	}
	ofTarget := func(ctx context.Context, cl *cli) (string, error) {
		s, err := ofContainer(name)(ctx, cl)
		if err == nil && server != "" && server != s {
			return "", fmt.Errorf("container %s is on server %s, not %s", name, s, server)
		}
		server = s
		return s, err
	}
	return g.send(cmd.Context(), ofTarget, typ, events.PortForward{Name: name, Port: port, HostPort: hostPort}, func(res *events.Result) error {
		if g.output == "json" {
			var ct events.Container
			_ = json.Unmarshal(res.Output, &ct)
			return printJSON(ct)
		}
		if port != 0 {
			fmt.Printf("%s %s:%d -> %s:%d\n", did, server, hostPort, name, port)
		} else {
			fmt.Printf("%s %s:%d\n", did, server, hostPort)
		}
		return nil
	})
}
