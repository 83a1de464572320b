package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/validate"
	"github.com/skeinhq/skein/workers/vip"
)

// sideOf finds where a server meets the floating IP: the interface whose
// network holds it (the one named, if any).
func sideOf(hb *events.Heartbeat, ip netip.Addr, iface string) (events.HostInterface, netip.Prefix, error) {
	for _, i := range hb.Interfaces {
		p, err := netip.ParsePrefix(i.Addr)
		if err != nil || (iface != "" && i.Name != iface) {
			continue
		}
		if p.Masked().Contains(ip) {
			return i, p, nil
		}
	}
	var nets []string
	for _, i := range hb.Interfaces {
		nets = append(nets, i.Name+" "+i.Addr)
	}
	return events.HostInterface{}, netip.Prefix{}, fmt.Errorf("%s is in no network of server %s (%s): a floating IP lies in both servers' own network", ip, hb.Name, strings.Join(nets, ", "))
}

// notAServersAddress refuses a floating IP that a server already has as its
// own address: keepalived would take it from that server's interface.
func notAServersAddress(ip netip.Addr, network netip.Prefix, hbs []events.Heartbeat) error {
	for _, hb := range hbs {
		for _, i := range hb.Interfaces {
			if p, err := netip.ParsePrefix(i.Addr); err == nil && p.Addr() == ip {
				return fmt.Errorf("%s is the address of server %s (%s): pick a free address in %s", ip, hb.Name, i.Name, network)
			}
		}
	}
	return nil
}

func addvipCmd(g *globals) *cobra.Command {
	var name, iface, check, checkService string
	c := &cobra.Command{
		Use:   "addvip S1 S2 IP [-n NAME] [--interface IF] [--check CMD | --check-service NAME]",
		Short: "Float IP between two servers with keepalived (S1 holds it first; S2 takes it within a second when S1 fails)",
		Long: `Float IP between servers S1 and S2: keepalived on each server (VRRP version 3,
unicast between their addresses, adverts every 0.1 s, no preemption), S1
holding it first. The IP must lie in the network of an interface of both
servers (--interface picks one) and be reserved for this: skein does not
manage that network. Each agent supervises its keepalived: one that dies has
the IP removed before it is started again.

--check CMD runs CMD (a program and its arguments, no shell) on each server
every second; --check-service NAME follows the checks of the service NAME's
instances on each server (skein addcheck). While a server's check fails it
gives the IP up, and the other server takes it if its own check passes.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			s1, s2 := args[0], args[1]
			ip, err := netip.ParseAddr(args[2])
			if err != nil || !ip.Is4() || validate.IPv4.Check(args[2]) != nil {
				return fmt.Errorf("%q is not an IPv4 address such as 10.0.0.50", args[2])
			}
			if s1 == s2 {
				return fmt.Errorf("a floating IP needs two different servers, not %s twice", s1)
			}
			if name == "" {
				name = "vip-" + strings.ReplaceAll(ip.String(), ".", "-")
			}
			if err := checkName(name); err != nil {
				return err
			}
			if iface != "" && !validate.IfName.Valid(iface) {
				return fmt.Errorf("--interface %q: want %s", iface, validate.IfName.What)
			}
			argv, err := checkArgs(check, checkService)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			cl, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer cl.close()
			hb1, err := cl.serverUp(ctx, s1)
			if err != nil {
				return err
			}
			hb2, err := cl.serverUp(ctx, s2)
			if err != nil {
				return err
			}
			i1, p1, err := sideOf(hb1, ip, iface)
			if err != nil {
				return err
			}
			i2, p2, err := sideOf(hb2, ip, iface)
			if err != nil {
				return err
			}
			if p1.Masked() != p2.Masked() {
				return fmt.Errorf("servers %s (%s) and %s (%s) are not on one network", s1, p1, s2, p2)
			}
			hbs, err := cl.heartbeats(ctx)
			if err != nil {
				return err
			}
			if err := notAServersAddress(ip, p1.Masked(), append([]events.Heartbeat{*hb1, *hb2}, hbs...)); err != nil {
				return err
			}
			existing, err := all[events.VIP](ctx, cl)
			if err != nil {
				return err
			}
			used := map[int]bool{}
			for _, v := range existing {
				if v.Name == name {
					return fmt.Errorf("a floating IP named %s exists: `skein delvip %s` first, or pick another name with -n", name, name)
				}
				if v.IP == ip.String() {
					return fmt.Errorf("%s is floating IP %s already (`skein listvips`)", ip, v.Name)
				}
				used[v.RouterID] = true
			}
			rid := 0
			for id := 1; id <= 255 && rid == 0; id++ {
				if !used[id] {
					rid = id
				}
			}
			if rid == 0 {
				return fmt.Errorf("every VRRP router id is in use: delete a floating IP first")
			}
			first := events.VIPAdd{Name: name, IP: ip.String(), Prefix: p1.Bits(), Interface: i1.Name, Self: p1.Addr().String(), Peer: p2.Addr().String(), PeerServer: s2, RouterID: rid, Preferred: true, Check: argv, CheckService: checkService}
			second := events.VIPAdd{Name: name, IP: ip.String(), Prefix: p2.Bits(), Interface: i2.Name, Self: p2.Addr().String(), Peer: p1.Addr().String(), PeerServer: s1, RouterID: rid, Check: argv, CheckService: checkService}
			for _, v := range []events.VIPAdd{first, second} {
				if err := vip.Check(v); err != nil {
					return err
				}
				if err := events.Check(events.TypeVIPAdd, v); err != nil {
					return err
				}
			}
			res1, err := cl.do(ctx, s1, events.TypeVIPAdd, first)
			if err != nil {
				return fmt.Errorf("%s: %w", s1, err)
			}
			res2, err := cl.do(ctx, s2, events.TypeVIPAdd, second)
			if err != nil {
				// Nothing half-made: the first side goes again.
				if _, uerr := cl.do(ctx, s1, events.TypeVIPDelete, events.VIPRef{Name: name}); uerr != nil {
					return fmt.Errorf("%s: %w (and removing %s's side: %v)", s2, err, s1, uerr)
				}
				return fmt.Errorf("%s: %w", s2, err)
			}
			fmt.Printf("added floating IP %s %s on %s (%s) and %s (%s), router id %d\n", name, ip, s1, i1.Name, s2, i2.Name, rid)
			for _, res := range []*events.Result{res1, res2} {
				var v events.VIP
				if json.Unmarshal(res.Output, &v) == nil && v.CheckState != "" {
					fmt.Printf("check on %s: %s\n", v.Server, v.CheckState)
				}
			}
			return nil
		},
	}
	c.Flags().StringVar(&check, "check", "", "a program and its arguments run on each server every second (no shell); while it fails the server gives the IP up")
	c.Flags().StringVar(&checkService, "check-service", "", "a service whose instances on each server must pass their checks for that server to hold the IP")
	c.Flags().StringVarP(&name, "name", "n", "", "floating IP name (default vip-A-B-C-D)")
	c.Flags().StringVar(&iface, "interface", "", "the servers' interface in the IP's network (default: the one whose network holds it)")
	return g.acts(c)
}

// checkArgs validates a floating IP's check: a command split into words (it
// runs without a shell, so each word is checked as it will be passed), or a
// service name; not both.
func checkArgs(check, service string) ([]string, error) {
	if check != "" && service != "" {
		return nil, fmt.Errorf("give --check or --check-service, not both")
	}
	if service != "" && !validate.Service.Valid(service) {
		return nil, fmt.Errorf("--check-service %q: want %s", service, validate.Service.What)
	}
	argv := strings.Fields(check)
	if check != "" && len(argv) == 0 {
		return nil, fmt.Errorf("--check is empty: give a program and its arguments, e.g. --check \"curl -sf http://127.0.0.1/\"")
	}
	if len(argv) > 32 {
		return nil, fmt.Errorf("--check has %d words: at most 32; put a longer check in a script", len(argv))
	}
	for _, a := range argv {
		if !validate.Arg.Valid(a) {
			return nil, fmt.Errorf("--check word %q: want %s", a, validate.Arg.What)
		}
	}
	return argv, nil
}

// vipView is a floating IP as listvips shows it: both sides in one row.
type vipView struct {
	Name    string    `json:"name"`
	IP      string    `json:"ip"`
	Servers []string  `json:"servers"`
	Holder  string    `json:"holder"`
	Since   time.Time `json:"since,omitzero"`
	// Holders is how many sides say they hold it: 2 while one of them is
	// cut off from the bus (its claim is then the older one).
	Holders int `json:"holders"`
	// Check is each server's check state (passing, failing) for a floating IP with a check.
	Check map[string]string `json:"check,omitempty"`
}

func listvipsCmd(g *globals) *cobra.Command {
	return listCommand(g, listing[vipView]{
		use: "listvips", short: "List the floating IPs: servers, which one holds each now and since when",
		headers: []string{"NAME", "IP", "SERVERS", "HOLDER", "SINCE", "CHECK"},
		read: func(ctx context.Context, cl *cli, _ []string) ([]vipView, error) {
			sides, err := all[events.VIP](ctx, cl)
			if err != nil {
				return nil, err
			}
			by := map[string]*vipView{}
			for _, s := range sides {
				v, ok := by[s.Name]
				if !ok {
					v = &vipView{Name: s.Name, IP: s.IP}
					by[s.Name] = v
				}
				if s.CheckState != "" {
					if v.Check == nil {
						v.Check = map[string]string{}
					}
					v.Check[s.Server] = s.CheckState
				}
				if s.Preferred {
					v.Servers = append([]string{s.Server}, v.Servers...)
				} else {
					v.Servers = append(v.Servers, s.Server)
				}
				// A server cut off from the bus (its link down, its agent
				// stopped) cannot say it gave the IP up: of two claims the
				// newer one is the holder.
				if s.Holder {
					v.Holders++
					if v.Holder == "" || s.Since.After(v.Since) {
						v.Holder, v.Since = s.Server, s.Since
					}
				}
			}
			out := []vipView{}
			for _, v := range by {
				out = append(out, *v)
			}
			sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
			return out, nil
		},
		row: func(v vipView) []string {
			since := "-"
			if !v.Since.IsZero() {
				since = v.Since.Format(time.RFC3339)
			}
			holder := orDash(v.Holder)
			if v.Holders > 1 {
				holder += " (the other's agent has not said it gave the IP up)"
			}
			var checks []string
			for _, srv := range v.Servers {
				if st, ok := v.Check[srv]; ok {
					checks = append(checks, srv+" "+st)
				}
			}
			return []string{v.Name, v.IP, strings.Join(v.Servers, ","), holder, since, orDash(strings.Join(checks, ", "))}
		},
	})
}

func delvipCmd(g *globals) *cobra.Command {
	return g.acts(&cobra.Command{
		Use:   "delvip NAME",
		Short: "Remove a floating IP from both its servers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cl, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer cl.close()
			sides, err := all[events.VIP](ctx, cl)
			if err != nil {
				return err
			}
			n := 0
			for _, s := range sides {
				if s.Name != args[0] {
					continue
				}
				res, err := cl.do(ctx, s.Server, events.TypeVIPDelete, events.VIPRef{Name: s.Name})
				if err != nil {
					return fmt.Errorf("%s: %w", s.Server, err)
				}
				var v events.VIP
				_ = json.Unmarshal(res.Output, &v)
				n++
			}
			if n == 0 {
				return fmt.Errorf("no floating IP named %q: `skein listvips` shows them", args[0])
			}
			fmt.Printf("deleted floating IP %s from %d servers\n", args[0], n)
			return nil
		},
	})
}
