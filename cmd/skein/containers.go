package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/validate"
)

// checkName refuses a name that is not a container's or resource's name.
func checkName(name string) error {
	if !validate.Name.Valid(name) {
		return fmt.Errorf("bad container name %q: use %s", name, validate.Name.What)
	}
	return nil
}

func launchCmd(g *globals) *cobra.Command {
	var server, ip string
	c := &cobra.Command{
		Use:   "launch IMAGE NAME -s SERVER [--ip IP]",
		Short: "Create and start a container from an image on a server",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			image, name := args[0], args[1]
			if err := checkName(name); err != nil {
				return err
			}
			if server == "" {
				return fmt.Errorf("which server? pass -s SERVER (see `skein servers`)")
			}
			check := func(ctx context.Context, cl *cli, hb *events.Heartbeat) error {
				if ip != "" {
					if err := checkIP(ip, hb); err != nil {
						return err
					}
				}
				if g.id == "" {
					if rec, err := cl.container(ctx, name); err == nil {
						return fmt.Errorf("a container named %s already exists on server %s: pick another name or `skein delete %s` first", name, rec.Server, name)
					}
				}
				return nil
			}
			return g.sendChecked(cmd.Context(), onServer(server), check, events.TypeLaunch, events.Launch{Name: name, Image: image, IPv4: ip}, func(res *events.Result) error {
				return printContainer(g, "launched", res)
			})
		},
	}
	c.Flags().StringVarP(&server, "server", "s", "", "server to launch on")
	c.Flags().StringVar(&ip, "ip", "", "static IPv4 address inside the server's container subnet")
	return g.acts(c)
}

// checkIP refuses an address outside the server's container subnet before anything is sent.
func checkIP(ip string, hb *events.Heartbeat) error {
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is4() {
		return fmt.Errorf("--ip %q is not an IPv4 address", ip)
	}
	p, err := netip.ParsePrefix(hb.Subnet)
	if err != nil {
		return nil // the agent checks again
	}
	gw, _ := netip.ParseAddr(hb.Gateway)
	sn := container.Subnet{Prefix: p, Gateway: gw}
	if !sn.Contains(addr) {
		return fmt.Errorf("--ip %s is not usable on server %s: pick one inside its container subnet %s (not the gateway %s or the network/broadcast address)", ip, hb.Name, hb.Subnet, hb.Gateway)
	}
	return nil
}

func actionCmd(g *globals, verb string) *cobra.Command {
	short := map[string]string{"start": "Start a container", "stop": "Stop a container", "restart": "Restart a container", "delete": "Stop and delete a container"}[verb]
	past := map[string]string{"start": "started", "stop": "stopped", "restart": "restarted", "delete": "deleted"}[verb]
	typ := "container." + verb
	var force bool
	c := &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkName(name); err != nil {
				return err
			}
			return g.send(cmd.Context(), ofContainer(name), typ, events.ContainerAction{Name: name, Force: force}, func(res *events.Result) error {
				return printContainer(g, past, res)
			})
		},
	}
	if verb == "stop" || verb == "restart" {
		c.Flags().BoolVarP(&force, "force", "f", false, "do not wait for a clean shutdown")
	}
	return g.acts(c)
}

func printContainer(g *globals, did string, res *events.Result) error {
	var ct events.Container
	if err := json.Unmarshal(res.Output, &ct); err != nil {
		return fmt.Errorf("bad result: %w", err)
	}
	if g.output == "json" {
		return printJSON(ct)
	}
	fmt.Printf("%s %s on %s", did, ct.Name, ct.Server)
	if ct.IPv4 != "" {
		fmt.Printf(" (%s)", ct.IPv4)
	}
	fmt.Println()
	return nil
}

func listCmd(g *globals) *cobra.Command {
	var server string
	return listCommand(g, listing[events.Container]{
		use: "list [-s SERVER]", short: "List containers across the cluster",
		headers: []string{"NAME", "SERVER", "STATUS", "IPV4", "IMAGE", "PUBLISHED"},
		read: func(ctx context.Context, cl *cli, _ []string) ([]events.Container, error) {
			recs, err := all[events.Container](ctx, cl)
			out := []events.Container{}
			for _, ct := range recs {
				if (server == "" || ct.Server == server) && ct.Status != "Deleted" {
					out = append(out, ct)
				}
			}
			return out, err
		},
		row: func(ct events.Container) []string {
			return []string{ct.Name, ct.Server, ct.Status, orDash(ct.IPv4), orDash(ct.Image), orDash(strings.Join(ct.Published, " "))}
		},
		flags: func(c *cobra.Command) {
			c.Flags().StringVarP(&server, "server", "s", "", "only containers on this server")
		},
	})
}
