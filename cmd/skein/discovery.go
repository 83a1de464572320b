package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/consul"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/internal/validate"
	"github.com/skeinhq/skein/workers/discovery"
)

// endpoints reads every endpoint record.
func (c *cli) endpoints(ctx context.Context) ([]events.Endpoint, error) {
	return all[events.Endpoint](ctx, c)
}

func printEndpoint(g *globals, did string, res *events.Result) error {
	var e events.Endpoint
	if err := json.Unmarshal(res.Output, &e); err != nil {
		return fmt.Errorf("bad result: %w", err)
	}
	if g.output == "json" {
		return printJSON(e)
	}
	fmt.Printf("%s endpoint %s on %s: consul API and UI at http://%s:%d/ui, DNS at %s:%d\n", did, e.Name, e.Server, e.IP, discovery.HTTPPort, e.IP, discovery.DNSPort)
	return nil
}

func addepCmd(g *globals) *cobra.Command {
	var name, tokenFile string
	c := &cobra.Command{
		Use:   "addep SERVER IP [-n NAME] [--token-file FILE]",
		Short: "Add a Consul endpoint: a Consul server in a container at a static IP on a server",
		Long: `Add a Consul endpoint: a Consul server in a container at a static IP of the server's
container subnet. The first endpoint bootstraps Consul; later ones join it (three make
a raft quorum). Every server's containers resolve NAME.service.consul through them.

Consul runs with ACLs on. The first endpoint makes the management token: a new
one, or the UUID in --token-file (to use with the consul CLI and the UI); later
endpoints share it.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			server, ip := args[0], args[1]
			if name != "" {
				if err := checkName(name); err != nil {
					return err
				}
			}
			var chosen string
			if tokenFile != "" {
				var err error
				if chosen, err = readToken(tokenFile); err != nil {
					return err
				}
			}
			// The management token is filled in by check, sealed to the server's agent.
			p := events.EndpointAdd{Name: name, IP: ip, Management: &events.Sealed{}}
			check := func(ctx context.Context, cl *cli, hb *events.Heartbeat) error {
				if err := checkIP(ip, hb); err != nil {
					return fmt.Errorf("endpoint %w", err)
				}
				eps, err := cl.endpoints(ctx)
				if err != nil {
					return err
				}
				var ready *events.Endpoint
				for _, e := range eps {
					if name != "" && e.Name == name {
						return fmt.Errorf("an endpoint named %s already exists on server %s: pick another name with -n", name, e.Server)
					}
					if e.IP == ip {
						return fmt.Errorf("endpoint %s already uses %s", e.Name, ip)
					}
					if e.Status == events.StatusReady && e.Management != nil && ready == nil {
						e := e
						ready = &e
					}
				}
				if ready != nil && chosen != "" {
					return fmt.Errorf("the endpoints already have a management token (endpoint %s holds it): --token-file applies to the first endpoint only", ready.Name)
				}
				sealed, err := cl.managementFor(ctx, ready, hb, chosen)
				if err != nil {
					return err
				}
				*p.Management = sealed
				return nil
			}
			return g.sendChecked(cmd.Context(), onServer(server), check, events.TypeEndpointAdd, p, func(res *events.Result) error {
				return printEndpoint(g, "added", res)
			})
		},
	}
	c.Flags().StringVarP(&name, "name", "n", "", "endpoint name (default consul-<last octet of IP>)")
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding the management token (a UUID) the first endpoint takes (default: a new one)")
	return g.acts(c)
}

// readToken reads a management token from a file: a UUID, alone on its line.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the management token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if err := validate.UUID.Check(tok); err != nil {
		return "", fmt.Errorf("the management token in %s is not a UUID (make one with uuidgen): %v", path, err)
	}
	return tok, nil
}

// managementFor is the endpoints' management token sealed to the agent of
// hb: for the first endpoint the chosen one or a new one, else the one the
// agent of an existing endpoint seals again (it never leaves the agents in clear).
func (c *cli) managementFor(ctx context.Context, existing *events.Endpoint, hb *events.Heartbeat, chosen string) (events.Sealed, error) {
	if hb.SealKey == "" {
		return events.Sealed{}, fmt.Errorf("server %s publishes no key to seal secrets to: its agent is older than this CLI, upgrade it", hb.Name)
	}
	if existing == nil {
		if chosen == "" {
			chosen = discovery.NewUUID()
		}
		s, err := seal.To(hb.SealKey, []byte(chosen))
		if err != nil {
			return events.Sealed{}, fmt.Errorf("sealing the management token for %s: %w", hb.Name, err)
		}
		return s, nil
	}
	env, err := c.client.NewCommand(existing.Server, events.TypeEndpointReseal, "", events.EndpointReseal{Name: existing.Name, To: hb.SealKey})
	if err != nil {
		return events.Sealed{}, err
	}
	qctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	res, err := c.client.Query(qctx, env)
	if err != nil {
		return events.Sealed{}, fmt.Errorf("asking endpoint %s on %s for the management token: %w", existing.Name, existing.Server, err)
	}
	var s events.Sealed
	if err := json.Unmarshal(res.Output, &s); err != nil {
		return events.Sealed{}, fmt.Errorf("bad result: %w", err)
	}
	return s, nil
}

func listepCmd(g *globals) *cobra.Command {
	return listCommand(g, listing[events.Endpoint]{
		use: "listep", short: "List the Consul endpoints",
		headers: []string{"NAME", "SERVER", "IP", "STATUS", "UI"},
		read: func(ctx context.Context, cl *cli, _ []string) ([]events.Endpoint, error) {
			return cl.endpoints(ctx)
		},
		row: func(e events.Endpoint) []string {
			return []string{e.Name, e.Server, e.IP, e.Status, fmt.Sprintf("http://%s:%d/ui", e.IP, discovery.HTTPPort)}
		},
	})
}

func delepCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "delep NAME",
		Short: "Remove a Consul endpoint (it leaves the Consul cluster first)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ofEndpoint := func(ctx context.Context, cl *cli) (string, error) {
				e, err := find[events.Endpoint](ctx, cl, args[0], fmt.Errorf("no endpoint named %q: `skein listep` shows them", args[0]))
				return e.Server, err
			}
			return g.send(cmd.Context(), ofEndpoint, events.TypeEndpointDelete, events.EndpointRef{Name: args[0]}, func(res *events.Result) error {
				return printEndpoint(g, "deleted", res)
			})
		},
	})
}

// onContainer sends a definitions command to the server of a container.
func onContainer(cmd *cobra.Command, g *globals, container, typ string, payload any) error {
	if err := checkName(container); err != nil {
		return err
	}
	return g.send(cmd.Context(), ofContainer(container), typ, payload, func(res *events.Result) error {
		var d events.Definitions
		if err := json.Unmarshal(res.Output, &d); err != nil {
			return fmt.Errorf("bad result: %w", err)
		}
		return printDefinitions(g, d)
	})
}

func printDefinitions(g *globals, d events.Definitions) error {
	if g.output == "json" {
		return printJSON(d)
	}
	var rows [][]string
	for _, s := range d.Services {
		rows = append(rows, []string{"service", s.Name, strconv.Itoa(s.Port), strings.Join(s.Tags, ",")})
	}
	for _, c := range d.Checks {
		target := c.URL
		if c.Kind == "tcp" {
			target = strconv.Itoa(c.Port)
		}
		details := "every " + c.Interval + ", timeout " + c.Timeout
		if c.TLSSkipVerify {
			details += ", tls_skip_verify"
		}
		rows = append(rows, []string{"check", c.Name, c.Kind + " " + target, details})
	}
	fmt.Printf("%s (server %s):\n", d.Container, d.Server)
	table([]string{"KIND", "NAME", "PORT/TARGET", "DETAILS"}, rows)
	return nil
}

func addserviceCmd(g *globals) *cobra.Command {
	var tags []string
	c := &cobra.Command{
		Use:   "addservice CONTAINER NAME PORT [--tag T]",
		Short: "Define a service a container publishes to the endpoints while it runs",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !validate.Service.Valid(args[1]) {
				return fmt.Errorf("bad service name %q: letters, digits and '-', up to 63", args[1])
			}
			port, err := strconv.Atoi(args[2])
			if err != nil || port < 1 || port > 65535 {
				return fmt.Errorf("bad port %q: a number from 1 to 65535", args[2])
			}
			return onContainer(cmd, g, args[0], events.TypeServiceAdd, events.ServiceAdd{Container: args[0], Name: args[1], Port: port, Tags: tags})
		},
	}
	c.Flags().StringArrayVar(&tags, "tag", nil, "Consul tag (repeatable)")
	return g.acts(c)
}

func delserviceCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "delservice CONTAINER [NAME]",
		Short: "Remove a service definition of a container, or all of them",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			return onContainer(cmd, g, args[0], events.TypeServiceDelete, events.ServiceDelete{Container: args[0], Name: name})
		},
	})
}

func listserviceCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "listservice CONTAINER",
		Short: "List the services and checks defined for a container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cl, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer cl.close()
			if _, err := cl.container(ctx, args[0]); err != nil {
				return err
			}
			d, err := find[events.Definitions](ctx, cl, args[0], bus.ErrNoRecord)
			if errors.Is(err, bus.ErrNoRecord) {
				d, err = events.Definitions{Container: args[0], Services: []events.ServiceDef{}, Checks: []events.CheckDef{}}, nil
			}
			if err != nil {
				return err
			}
			return printDefinitions(g, d)
		},
	}
	g.addOutputFlag(c)
	return c
}

func addcheckCmd(g *globals) *cobra.Command {
	var interval, timeout string
	var skipVerify bool
	c := &cobra.Command{
		Use:   "addcheck CONTAINER NAME tcp PORT | addcheck CONTAINER NAME http URL",
		Short: "Define a health check of a container: while it fails, the container's services leave DNS",
		Long: `Define a health check of a container: while it fails, the container's services leave DNS.
An http URL whose host is a name (mywordpress.org, https://mywordpress.org/health) is asked
of the container itself, with that name as Host header and, for https, as the name its
certificate must be valid for (--tls-skip-verify accepts any certificate).`,
		Args: cobra.ExactArgs(4),
		RunE: func(cmd *cobra.Command, args []string) error {
			def := events.CheckDef{Name: args[1], Kind: args[2], Interval: interval, Timeout: timeout, TLSSkipVerify: skipVerify}
			switch args[2] {
			case "tcp":
				port, err := strconv.Atoi(args[3])
				if err != nil || port < 1 || port > 65535 {
					return fmt.Errorf("bad port %q for a tcp check: a number from 1 to 65535", args[3])
				}
				if skipVerify {
					return fmt.Errorf("--tls-skip-verify is for http checks")
				}
				def.Port = port
			case "http":
				def.URL = args[3]
			default:
				return fmt.Errorf("bad check type %q: use tcp PORT or http URL", args[2])
			}
			return onContainer(cmd, g, args[0], events.TypeCheckAdd, events.CheckAdd{Container: args[0], Check: def})
		},
	}
	c.Flags().StringVar(&interval, "interval", "5s", "how often the check runs")
	c.Flags().StringVar(&timeout, "timeout", "2s", "how long one run may take")
	c.Flags().BoolVar(&skipVerify, "tls-skip-verify", false, "https: accept any certificate instead of verifying it")
	return g.acts(c)
}

func delcheckCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "delcheck CONTAINER NAME",
		Short: "Remove a health check of a container",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return onContainer(cmd, g, args[0], events.TypeCheckDelete, events.CheckDelete{Container: args[0], Name: args[1]})
		},
	})
}

func servicesCmd(g *globals) *cobra.Command {
	return listCommand(g, listing[consul.Entry]{
		use: "services", short: "List every service and check the endpoints know, with health",
		headers: []string{"SERVICE", "NODE", "ADDRESS", "HEALTH", "CHECKS", "TAGS"},
		read: func(ctx context.Context, cl *cli, _ []string) ([]consul.Entry, error) {
			eps, err := cl.endpoints(ctx)
			if err != nil {
				return nil, err
			}
			var addrs []string
			for _, e := range eps {
				if e.Status == events.StatusReady {
					addrs = append(addrs, fmt.Sprintf("%s:%d", e.IP, discovery.HTTPPort))
				}
			}
			if len(addrs) == 0 {
				return nil, fmt.Errorf("no endpoint yet: add one with `skein addep SERVER IP`")
			}
			entries, err := consul.New(func() []string { return addrs }).Entries(ctx)
			for i := range entries {
				// Catalog nodes are SERVER.NAME (each agent's token writes its own).
				if _, n, ok := strings.Cut(entries[i].Node, "."); ok {
					entries[i].Node = n
				}
			}
			return entries, err
		},
		row: func(e consul.Entry) []string {
			var checks []string
			for _, ch := range e.Checks {
				checks = append(checks, ch.Name+"="+ch.Status)
			}
			return []string{e.Service, e.Node, fmt.Sprintf("%s:%d", e.Address, e.Port), e.Health, strings.Join(checks, " "), strings.Join(e.Tags, ",")}
		},
	})
}

// owner picks the server that keeps an ad-hoc entry: -s, the entry's owner, or the first up server.
func (c *cli) owner(ctx context.Context, name, server string) (string, error) {
	a, err := find[events.Adhoc](ctx, c, name, bus.ErrNoRecord)
	if err == nil {
		if server != "" && server != a.Server {
			return "", fmt.Errorf("ad-hoc entry %s belongs to server %s: leave out -s or use -s %s", name, a.Server, a.Server)
		}
		server = a.Server
	} else if !errors.Is(err, bus.ErrNoRecord) {
		return "", err
	}
	if server != "" {
		_, err := c.serverUp(ctx, server)
		return server, err
	}
	hbs, err := c.heartbeats(ctx)
	if err != nil {
		return "", err
	}
	for i := range hbs {
		if alive(&hbs[i]) {
			return hbs[i].Name, nil
		}
	}
	return "", fmt.Errorf("no server is up to keep the entry: start an agent (`skein servers`)")
}

func printAdhoc(g *globals, did string, res *events.Result) error {
	var a events.Adhoc
	if err := json.Unmarshal(res.Output, &a); err != nil {
		return fmt.Errorf("bad result: %w", err)
	}
	if g.output == "json" {
		return printJSON(a)
	}
	what := "check-only entry"
	if a.Service {
		what = fmt.Sprintf("service %s.service.consul -> %s:%d", a.Name, a.IP, a.Port)
	}
	fmt.Printf("%s %s (%d checks, kept by %s)\n", did, what, len(a.Checks), a.Server)
	return nil
}

func adhocCmd(g *globals, use, short string, args cobra.PositionalArgs, build func(args []string) (string, string, any, error)) *cobra.Command {
	var server string
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, typ, payload, err := build(args)
			if err != nil {
				return err
			}
			if !validate.Service.Valid(name) {
				return fmt.Errorf("bad name %q: letters, digits and '-', up to 63", name)
			}
			did := "published"
			if typ == events.TypeUnpublish {
				did = "removed"
			}
			owner := func(ctx context.Context, cl *cli) (string, error) { return cl.owner(ctx, name, server) }
			return g.send(cmd.Context(), owner, typ, payload, func(res *events.Result) error { return printAdhoc(g, did, res) })
		},
	}
	c.Flags().StringVarP(&server, "server", "s", "", "server that keeps the entry and runs its checks (default: its owner, or the first up server)")
	return g.acts(c)
}

func pubserviceCmd(g *globals) *cobra.Command {
	return adhocCmd(g, "pubservice NAME IP [PORT]", "Publish a service that belongs to no container: NAME.service.consul resolves to IP",
		cobra.RangeArgs(2, 3), func(args []string) (string, string, any, error) {
			if err := checkIPv4(args[1]); err != nil {
				return "", "", nil, err
			}
			port := 0
			if len(args) == 3 {
				p, err := strconv.Atoi(args[2])
				if err != nil || p < 1 || p > 65535 {
					return "", "", nil, fmt.Errorf("bad port %q: a number from 1 to 65535", args[2])
				}
				port = p
			}
			return args[0], events.TypePublish, events.Publish{Name: args[0], IP: args[1], Port: port}, nil
		})
}

func pubcheckCmd(g *globals) *cobra.Command {
	var interval, timeout string
	var skipVerify bool
	c := adhocCmd(g, "pubcheck NAME tcp IP:PORT | pubcheck NAME http URL", "Publish a check that belongs to no container, on the ad-hoc entry NAME",
		cobra.ExactArgs(3), func(args []string) (string, string, any, error) {
			def := events.CheckDef{Name: args[0], Kind: args[1], Interval: interval, Timeout: timeout, TLSSkipVerify: skipVerify}
			switch args[1] {
			case "tcp":
				if skipVerify {
					return "", "", nil, fmt.Errorf("--tls-skip-verify is for http checks")
				}
				host, portStr, ok := strings.Cut(args[2], ":")
				port, err := strconv.Atoi(portStr)
				if !ok || err != nil || port < 1 || port > 65535 || checkIPv4(host) != nil {
					return "", "", nil, fmt.Errorf("bad tcp target %q: want IP:PORT", args[2])
				}
				def.Address, def.Port = host, port
			case "http":
				if !strings.Contains(args[2], "://") {
					return "", "", nil, fmt.Errorf("bad URL %q: want http://HOST[:PORT]/PATH", args[2])
				}
				def.URL = args[2]
			default:
				return "", "", nil, fmt.Errorf("bad check type %q: use tcp IP:PORT or http URL", args[1])
			}
			return args[0], events.TypePublish, events.Publish{Name: args[0], Check: &def}, nil
		})
	c.Flags().StringVar(&interval, "interval", "5s", "how often the check runs")
	c.Flags().StringVar(&timeout, "timeout", "2s", "how long one run may take")
	c.Flags().BoolVar(&skipVerify, "tls-skip-verify", false, "https: accept any certificate instead of verifying it")
	return c
}

func unpubserviceCmd(g *globals) *cobra.Command {
	return adhocCmd(g, "unpubservice NAME", "Remove an ad-hoc entry with its service and checks",
		cobra.ExactArgs(1), func(args []string) (string, string, any, error) {
			return args[0], events.TypeUnpublish, events.Unpublish{Name: args[0]}, nil
		})
}

func unpubcheckCmd(g *globals) *cobra.Command {
	return adhocCmd(g, "unpubcheck NAME", "Remove the checks of an ad-hoc entry (a check-only entry goes entirely)",
		cobra.ExactArgs(1), func(args []string) (string, string, any, error) {
			return args[0], events.TypeUnpublish, events.Unpublish{Name: args[0], ChecksOnly: true}, nil
		})
}

// checkIPv4 refuses what is not an IPv4 address.
func checkIPv4(s string) error {
	if !validate.IPv4.Valid(s) {
		return fmt.Errorf("%q is not an IPv4 address", s)
	}
	return nil
}
