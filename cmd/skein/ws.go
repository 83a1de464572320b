package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/events"
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
				apps = append(apps, fmt.Sprintf("%s->%s:%d", a.URL, a.Target.Host, a.Target.Port))
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

// parseTarget reads an app's target: IP:PORT or NAME.service.consul:PORT.
func parseTarget(s string) (events.Target, error) {
	host, p, ok := strings.Cut(s, ":")
	port, err := strconv.Atoi(p)
	if !ok || err != nil || port < 1 || port > 65535 {
		return events.Target{}, fmt.Errorf("bad target %q: want IP:PORT or NAME.service.consul:PORT, e.g. 10.77.2.5:9000", s)
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		return events.Target{Kind: events.TargetAddress, Host: host, Port: port}, nil
	}
	if strings.HasSuffix(host, ".service.consul") && validate.Host.Valid(host) {
		return events.Target{Kind: events.TargetConsul, Host: host, Port: port}, nil
	}
	return events.Target{}, fmt.Errorf("bad target %q: %q is neither an IPv4 address nor a Consul name NAME.service.consul", s, host)
}

func pubappCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "pubapp WS URL TARGET",
		Short: "Publish an app on a web server: requests for the host name URL go to TARGET (IP:PORT or NAME.service.consul:PORT)",
		Long: `Publish an app on a web server: requests for the host name URL go to TARGET,
an IP:PORT, or NAME.service.consul:PORT resolved through the Consul endpoints at
request time (it follows the instances). WebSocket upgrades pass through. The
same app again changes nothing; a URL the web server publishes elsewhere is
refused (delapp it first).`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !validate.Host.Valid(args[1]) {
				return fmt.Errorf("url %q is not a host name: want one such as mywordpress.org", args[1])
			}
			t, err := parseTarget(args[2])
			if err != nil {
				return err
			}
			return onWS(cmd, g, args[0], "published on", events.TypeAppPublish, events.AppPublish{WS: args[0], URL: args[1], Target: t})
		},
	})
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
	ofWS := func(ctx context.Context, cl *cli) (string, error) {
		w, err := find[events.WS](ctx, cl, name, fmt.Errorf("no web server named %q: `skein listws` shows them", name))
		if err != nil {
			return "", err
		}
		return w.Server, nil
	}
	return g.sendChecked(cmd.Context(), ofWS, nil, typ, payload, func(res *events.Result) error { return printWS(g, did, res) })
}
