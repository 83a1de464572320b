package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/seal"
)

func credsCmd(g *globals) *cobra.Command {
	var data, out string
	c := &cobra.Command{
		Use:   "creds agent NAME | admin | scheduler | observer | revoke ROLE...",
		Short: "Issue or revoke credentials for the bus (on the server's machine)",
		Long: `Issue or revoke credentials for the bus. Run it where skein server runs: it
reads the bus's keys in DATA/auth.

  skein creds agent s1      an agent: only server s1's commands, results, progress,
                            events and records
  skein creds admin         everything: the CLI
  skein creds scheduler     a job scheduler: the jobs, and the agents' commands
  skein creds observer      read events and state, publish nothing
  skein creds revoke agent s1
                            every credential issued for the role so far is refused
                            from its next connect (the running server applies it)
  skein creds nats-config   the authority as nats-server configuration, for a NATS
                            cluster of your own (include it in each node's config)

The credentials are printed, or written with -o DIR as DIR/ROLE.creds (mode 0600),
with DIR/ca.pem beside them when the bus speaks TLS, and for the admin
DIR/backup.xk: the key database backups are sealed to.`,
		Args: cobra.RangeArgs(1, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := bus.LoadAuthority(filepath.Join(data, "auth"))
			if err != nil {
				return err
			}
			if args[0] == "nats-config" {
				conf, err := a.NATSConfig()
				if err != nil {
					return err
				}
				fmt.Print(conf)
				return nil
			}
			if args[0] == "revoke" {
				if len(args) < 2 {
					return fmt.Errorf("revoke which role? skein creds revoke agent NAME | admin | scheduler | observer")
				}
				r, err := roleOf(args[1:])
				if err != nil {
					return err
				}
				n, err := a.Revoke(r)
				if err != nil {
					return err
				}
				fmt.Printf("revoked %d credentials of %s\n", n, r.Name())
				return nil
			}
			r, err := roleOf(args)
			if err != nil {
				return err
			}
			creds, err := a.Creds(r)
			if err != nil {
				return err
			}
			if out == "" {
				_, err := os.Stdout.Write(creds)
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			path := filepath.Join(out, r.Name()+".creds")
			if err := os.WriteFile(path, creds, 0o600); err != nil {
				return err
			}
			fmt.Printf("credentials of %s: %s\n", r.Name(), path)
			if r.Kind == "admin" {
				// The admin opens backups with the backup key, kept beside its credentials.
				k, err := seal.LoadOrCreate(filepath.Join(data, "auth", backupKeyName))
				if err != nil {
					return err
				}
				seed, err := os.ReadFile(filepath.Join(data, "auth", backupKeyName))
				if err != nil {
					return err
				}
				kpath := filepath.Join(out, backupKeyName)
				if err := os.WriteFile(kpath, seed, 0o600); err != nil {
					return err
				}
				fmt.Printf("the backup key %s: %s (backups are sealed to it: keep a copy off the cluster)\n", k.Public(), kpath)
			}
			if ca, err := os.ReadFile(bus.CAFile(filepath.Join(data, "tls"))); err == nil {
				caPath := filepath.Join(out, "ca.pem")
				if err := os.WriteFile(caPath, ca, 0o644); err != nil {
					return err
				}
				fmt.Printf("the bus's CA: %s (pass --tls-ca)\n", caPath)
			}
			return nil
		},
	}
	c.Flags().StringVar(&data, "data", defaultData, "the server's data directory")
	c.Flags().StringVarP(&out, "out", "o", "", "write ROLE.creds (and ca.pem) into this directory")
	return c
}

// roleOf reads "agent NAME", "admin", "scheduler" or "observer".
func roleOf(args []string) (bus.Role, error) {
	server := ""
	if len(args) > 1 {
		server = args[1]
	}
	if len(args) > 2 {
		return bus.Role{}, fmt.Errorf("too many arguments: %v", args)
	}
	return bus.ParseRole(args[0], server)
}
