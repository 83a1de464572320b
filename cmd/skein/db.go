package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/internal/validate"
)

// checkDBIdent refuses a database or user name with the fix.
func checkDBIdent(what, s string) error {
	if err := validate.DBIdent.Check(s); err != nil {
		return fmt.Errorf("%s %q is not a valid name: want %s (%v)", what, s, validate.DBIdent.What, err)
	}
	return nil
}

// newPassword makes a password of 24 letters and digits.
func newPassword() ([]byte, error) {
	const chars = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	out := make([]byte, 24)
	for i := range out {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(chars))))
		if err != nil {
			return nil, err
		}
		out[i] = chars[n.Int64()]
	}
	return out, nil
}

// readPassword reads -p: "" makes one, "-" reads a line from standard input.
func readPassword(flag string) ([]byte, error) {
	switch flag {
	case "":
		return newPassword()
	case "-":
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return nil, fmt.Errorf("reading the password from standard input: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return nil, fmt.Errorf("the password read from standard input is empty")
		}
		return []byte(line), nil
	}
	return []byte(flag), nil
}

func printDB(g *globals, did string, res *events.Result) error {
	var d events.DBInstance
	if err := json.Unmarshal(res.Output, &d); err != nil {
		return fmt.Errorf("bad result: %w", err)
	}
	if g.output == "json" {
		return printJSON(d)
	}
	fmt.Printf("%s %s instance %s on %s (port %d): %d databases, %d users\n", did, d.Kind, d.Name, d.Server, d.Port, len(d.Databases), len(d.Users))
	return nil
}

func adddbCmd(g *globals) *cobra.Command {
	var name, on, password string
	var allow []string
	c := &cobra.Command{
		Use:   "adddb mysql|postgresql SERVER USER DB [-n NAME] [-a CIDR] [-p PASSWORD|-]  |  adddb --on INSTANCE USER DB",
		Short: "Run a MariaDB or PostgreSQL instance with USER owning DB, or add DB to an instance with --on",
		Long: `Run a MariaDB (mysql) or PostgreSQL instance in a container on SERVER, its data
on a storage volume of its own, with USER owning database DB. Clients may connect
from -a networks only (repeatable; default: the cluster's container subnets).
The password is made when -p is not given; -p - reads it from standard input
(a password on the command line is visible to other users of this machine).
It is sealed to the server's agent: the database server sees only its hash.
` + "`skein dbinfo INSTANCE DB --dsn`" + ` prints the connection string with it.

With --on INSTANCE, add DB owned by USER (made when new) on a running instance.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if on != "" {
				return cobra.ExactArgs(2)(cmd, args)
			}
			return cobra.ExactArgs(4)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if on != "" {
				return adddbOn(cmd, g, on, args[0], args[1], password, cmd.Flags().Changed("password"))
			}
			kind, server, user, db := args[0], args[1], args[2], args[3]
			if kind != events.DBMySQL && kind != events.DBPostgreSQL {
				return fmt.Errorf("unknown database kind %q: want mysql or postgresql", kind)
			}
			if name != "" {
				if err := checkName(name); err != nil {
					return err
				}
			}
			if err := checkDBIdent("user", user); err != nil {
				return err
			}
			if err := checkDBIdent("database", db); err != nil {
				return err
			}
			for _, a := range allow {
				if err := validate.CIDR.Check(a); err != nil {
					return fmt.Errorf("-a %q is not a network: want %s (%v)", a, validate.CIDR.What, err)
				}
			}
			pw, err := readPassword(password)
			if err != nil {
				return err
			}
			p := events.DBAdd{Name: name, Kind: kind, User: user, DB: db, Allow: append([]string{}, allow...)}
			check := func(ctx context.Context, cl *cli, hb *events.Heartbeat) error {
				if name != "" {
					if _, err := cl.container(ctx, name); err == nil {
						return fmt.Errorf("a container named %s already exists: pick another name with -n", name)
					}
				}
				if len(p.Allow) == 0 {
					hbs, err := cl.heartbeats(ctx)
					if err != nil {
						return err
					}
					for _, h := range hbs {
						if h.Subnet != "" && !slices.Contains(p.Allow, h.Subnet) {
							p.Allow = append(p.Allow, h.Subnet)
						}
					}
					sort.Strings(p.Allow)
					if len(p.Allow) == 0 {
						return fmt.Errorf("no server tells its container subnet: give the networks with -a CIDR")
					}
				}
				if hb.SealKey == "" {
					return fmt.Errorf("server %s publishes no key to seal secrets to: upgrade its agent", hb.Name)
				}
				s, err := seal.To(hb.SealKey, pw)
				if err != nil {
					return err
				}
				p.Password = s
				return nil
			}
			return g.sendChecked(cmd.Context(), onServer(server), check, events.TypeDBAdd, &p, func(res *events.Result) error {
				if err := printDB(g, "added", res); err != nil || g.output == "json" {
					return err
				}
				var d events.DBInstance
				_ = json.Unmarshal(res.Output, &d)
				fmt.Printf("user %s owns database %s; `skein dbinfo %s %s --dsn` prints the connection string with the password\n", user, db, d.Name, db)
				return nil
			})
		},
	}
	c.Flags().StringVarP(&name, "name", "n", "", "instance name (default KIND-N)")
	c.Flags().StringArrayVarP(&allow, "allow", "a", nil, "network clients may connect from, e.g. 10.77.0.0/16 (repeatable; default: the cluster's container subnets)")
	c.Flags().StringVarP(&password, "password", "p", "", "USER's password, or - to read it from standard input (default: made for you)")
	c.Flags().StringVar(&on, "on", "", "add USER and DB on this running instance instead")
	return g.acts(c)
}

// adddbOn adds a database (and its user when new) on a running instance.
func adddbOn(cmd *cobra.Command, g *globals, inst, user, db, password string, given bool) error {
	if err := checkName(inst); err != nil {
		return err
	}
	if err := checkDBIdent("user", user); err != nil {
		return err
	}
	if err := checkDBIdent("database", db); err != nil {
		return err
	}
	p := events.DBCreate{Instance: inst, User: user, DB: db}
	check := func(ctx context.Context, cl *cli, hb *events.Heartbeat) error {
		d, err := find[events.DBInstance](ctx, cl, inst, fmt.Errorf("no database instance named %q: `skein listdbs` shows them", inst))
		if err != nil {
			return err
		}
		for _, u := range d.Users {
			if u.Name == user {
				if given {
					return fmt.Errorf("instance %s already has a user %s: leave -p out (`skein dbpasswd %s %s` changes its password)", inst, user, inst, user)
				}
				return nil
			}
		}
		pw, err := readPassword(password)
		if err != nil {
			return err
		}
		s, err := seal.To(hb.SealKey, pw)
		if err != nil {
			return err
		}
		p.Password = &s
		return nil
	}
	return g.sendChecked(cmd.Context(), ofDB(inst), check, events.TypeDBCreate, &p, func(res *events.Result) error { return printDB(g, "changed", res) })
}

// ofDB resolves the server of a database instance.
func ofDB(name string) resolver {
	return func(ctx context.Context, cl *cli) (string, error) {
		d, err := find[events.DBInstance](ctx, cl, name, fmt.Errorf("no database instance named %q: `skein listdbs` shows them", name))
		if err != nil {
			return "", err
		}
		return d.Server, nil
	}
}

// dbView is a database instance as listdbs shows it.
type dbView struct {
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Version   string   `json:"version"`
	Server    string   `json:"server"`
	Status    string   `json:"status"`
	IP        string   `json:"ip"`
	Port      int      `json:"port"`
	Databases []string `json:"databases"`
	Users     []string `json:"users"`
	Allow     []string `json:"allow"`
	Volume    string   `json:"volume"`
	Size      int64    `json:"size"`
}

func listdbsCmd(g *globals) *cobra.Command {
	return listCommand(g, listing[dbView]{
		use: "listdbs", short: "List the database instances with their databases and users",
		headers: []string{"NAME", "KIND", "VERSION", "SERVER", "IP", "PORT", "DATABASES", "USERS", "SIZE"},
		read: func(ctx context.Context, cl *cli, _ []string) ([]dbView, error) {
			all, err := all[events.DBInstance](ctx, cl)
			if err != nil {
				return nil, err
			}
			views := []dbView{}
			for _, d := range all {
				v := dbView{Name: d.Name, Kind: d.Kind, Version: d.Version, Server: d.Server, Status: d.Status, Port: d.Port, Allow: d.Allow, Volume: d.Volume, Size: d.Size, Databases: []string{}, Users: []string{}}
				if rec, err := cl.container(ctx, d.Name); err == nil {
					v.IP = rec.IPv4
				}
				for _, x := range d.Databases {
					v.Databases = append(v.Databases, x.Name)
				}
				for _, u := range d.Users {
					v.Users = append(v.Users, u.Name)
				}
				sort.Strings(v.Databases)
				sort.Strings(v.Users)
				views = append(views, v)
			}
			sort.Slice(views, func(i, j int) bool { return views[i].Name < views[j].Name })
			return views, nil
		},
		row: func(v dbView) []string {
			return []string{v.Name, v.Kind, orDash(v.Version), v.Server, orDash(v.IP), strconv.Itoa(v.Port), orDash(strings.Join(v.Databases, " ")), orDash(strings.Join(v.Users, " ")), humanSize(v.Size)}
		},
	})
}

func dbinfoCmd(g *globals) *cobra.Command {
	var dsn bool
	c := &cobra.Command{
		Use:   "dbinfo INSTANCE [DB] [--dsn]",
		Short: "Show a database instance, or a database's connection string (with the password only with --dsn)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cl, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer cl.close()
			d, err := find[events.DBInstance](ctx, cl, args[0], fmt.Errorf("no database instance named %q: `skein listdbs` shows them", args[0]))
			if err != nil {
				return err
			}
			ip := ""
			if rec, err := cl.container(ctx, d.Name); err == nil {
				ip = rec.IPv4
			}
			if len(args) == 1 {
				if dsn {
					return fmt.Errorf("--dsn needs a database: skein dbinfo %s DB --dsn", d.Name)
				}
				if g.output == "json" {
					return printJSON(d)
				}
				fmt.Printf("%s: %s %s on %s at %s:%d, data on volume %s, clients from %s\n", d.Name, d.Kind, d.Version, d.Server, ip, d.Port, d.Volume, strings.Join(d.Allow, " "))
				for _, x := range d.Databases {
					fmt.Printf("  database %s owned by %s\n", x.Name, x.Owner)
				}
				return nil
			}
			owner := ""
			for _, x := range d.Databases {
				if x.Name == args[1] {
					owner = x.Owner
				}
			}
			if owner == "" {
				return fmt.Errorf("instance %s has no database %s: `skein dbinfo %s` shows them", d.Name, args[1], d.Name)
			}
			u := &url.URL{Scheme: "postgres", Host: fmt.Sprintf("%s:%d", ip, d.Port), Path: "/" + args[1], User: url.User(owner)}
			if d.Kind == events.DBMySQL {
				u.Scheme = "mysql"
			}
			if dsn {
				pw, err := reveal(ctx, cl, d, owner)
				if err != nil {
					return err
				}
				u.User = url.UserPassword(owner, string(pw))
			}
			fmt.Println(u.String())
			return nil
		},
	}
	c.Flags().BoolVar(&dsn, "dsn", false, "include the owner's password in the connection string")
	return c
}

// reveal asks the instance's agent for a user's password, sealed to a key
// made for this call only.
func reveal(ctx context.Context, cl *cli, d events.DBInstance, user string) ([]byte, error) {
	keys, err := seal.New()
	if err != nil {
		return nil, err
	}
	env, err := cl.client.NewCommand(d.Server, events.TypeDBReveal, "", events.DBReveal{Instance: d.Name, User: user, To: keys.Public()})
	if err != nil {
		return nil, err
	}
	qctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	res, err := cl.client.Query(qctx, env)
	if err != nil {
		return nil, fmt.Errorf("asking %s's agent for the password: %w", d.Server, err)
	}
	var s events.Sealed
	if err := json.Unmarshal(res.Output, &s); err != nil {
		return nil, fmt.Errorf("bad result: %w", err)
	}
	return keys.Open(s)
}

func deldbCmd(g *globals) *cobra.Command {
	var user bool
	c := &cobra.Command{
		Use:   "deldb INSTANCE DB [--user]",
		Short: "Remove a database from an instance (--user: and its owner, if it owns no other)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkDBIdent("database", args[1]); err != nil {
				return err
			}
			return g.sendChecked(cmd.Context(), ofDB(args[0]), nil, events.TypeDBDrop, events.DBDrop{Instance: args[0], DB: args[1], User: user}, func(res *events.Result) error { return printDB(g, "changed", res) })
		},
	}
	c.Flags().BoolVar(&user, "user", false, "remove the database's owner too")
	return g.acts(c)
}

func dbpasswdCmd(g *globals) *cobra.Command {
	var password string
	c := &cobra.Command{
		Use:   "dbpasswd INSTANCE USER [-p PASSWORD|-]",
		Short: "Set a database user's password (made for you unless -p): the old one stops working",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkDBIdent("user", args[1]); err != nil {
				return err
			}
			pw, err := readPassword(password)
			if err != nil {
				return err
			}
			p := events.DBPasswd{Instance: args[0], User: args[1]}
			check := func(ctx context.Context, cl *cli, hb *events.Heartbeat) error {
				s, err := seal.To(hb.SealKey, pw)
				p.Password = s
				return err
			}
			return g.sendChecked(cmd.Context(), ofDB(args[0]), check, events.TypeDBPasswd, &p, func(res *events.Result) error {
				if err := printDB(g, "changed", res); err != nil || g.output == "json" {
					return err
				}
				fmt.Printf("password of %s set; `skein dbinfo %s DB --dsn` prints it\n", args[1], args[0])
				return nil
			})
		},
	}
	c.Flags().StringVarP(&password, "password", "p", "", "the new password, or - to read it from standard input (default: made for you)")
	return g.acts(c)
}

func deldbinstanceCmd(g *globals) *cobra.Command {
	var purge bool
	c := &cobra.Command{
		Use:   "deldbinstance NAME [--purge]",
		Short: "Remove a database instance; its data volume stays for an instance of the same name unless --purge",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.sendChecked(cmd.Context(), ofDB(args[0]), nil, events.TypeDBInstanceDelete, events.DBInstanceRef{Name: args[0], Purge: purge}, func(res *events.Result) error { return printDB(g, "deleted", res) })
		},
	}
	c.Flags().BoolVar(&purge, "purge", false, "delete its data volume too")
	return g.acts(c)
}

// humanSize prints a byte count in MiB (or "-" when unknown).
func humanSize(n int64) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
}
