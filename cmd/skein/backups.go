package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/workers/db"
)

func backupdbCmd(g *globals) *cobra.Command {
	var to string
	c := &cobra.Command{
		Use:   "backupdb INSTANCE [DB] [--to FILE]",
		Short: "Take a consistent, compressed backup of a database (every database without DB) into the bus's backups store",
		Long: `Take a consistent backup of a database (mariadb-dump --single-transaction, or
pg_dump), gzip-compressed, into the object store of the instance's server on
the bus, with its SHA-256; ` + "`skein backups`" + ` lists them. Without DB every
database of the instance is backed up. --to FILE also writes it (compressed)
to a local file, checked against its checksum. A failed backup is an error and
a db.backedup event with ok false.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var dbs []string
			if len(args) == 2 {
				if err := checkDBIdent("database", args[1]); err != nil {
					return err
				}
				dbs = []string{args[1]}
			} else {
				if to != "" {
					return fmt.Errorf("--to needs one database: skein backupdb %s DB --to FILE", args[0])
				}
				cl, err := g.connect(ctx)
				if err != nil {
					return err
				}
				d, err := find[events.DBInstance](ctx, cl, args[0], fmt.Errorf("no database instance named %q: `skein listdbs` shows them", args[0]))
				cl.close()
				if err != nil {
					return err
				}
				for _, x := range d.Databases {
					dbs = append(dbs, x.Name)
				}
				if len(dbs) == 0 {
					return fmt.Errorf("instance %s has no database to back up", args[0])
				}
			}
			key, err := g.backupKey()
			if err != nil {
				return err
			}
			for _, name := range dbs {
				var info events.DBBackupInfo
				err := g.sendChecked(ctx, ofDB(args[0]), nil, events.TypeDBBackup, events.DBBackup{Instance: args[0], DB: name, To: key.Public()}, func(res *events.Result) error {
					if err := json.Unmarshal(res.Output, &info); err != nil {
						return fmt.Errorf("bad result: %w", err)
					}
					if g.output == "json" {
						return printJSON(info)
					}
					fmt.Printf("backed up %s of %s: %s (%d bytes, sha256 %s)\n", name, args[0], info.Name, info.Size, info.SHA256)
					return nil
				})
				if err != nil {
					return err
				}
				if to != "" {
					if err := downloadBackup(ctx, g, key, info, to); err != nil {
						return err
					}
					fmt.Fprintf(os.Stderr, "written to %s\n", to)
				}
			}
			return nil
		},
	}
	c.Flags().StringVar(&to, "to", "", "also write the backup (gzip) to this local file")
	return g.acts(c)
}

// downloadBackup copies a backup from the bus into a local file, opened
// with the admin's backup key as it is read and checked against its
// checksum: it is written beside (.FILE.*.part, a file of its own) and
// renamed only once whole.
func downloadBackup(ctx context.Context, g *globals, key *seal.Keys, info events.DBBackupInfo, to string) error {
	cl, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.close()
	return saveBackup(ctx, cl, key, info, to)
}

// saveBackup is downloadBackup on a connected client.
func saveBackup(ctx context.Context, cl *cli, key *seal.Keys, info events.DBBackupInfo, to string) error {
	box, oi, err := bus.GetBackup(ctx, cl.conn.JS, info.Bucket, info.Name)
	if err != nil {
		return fmt.Errorf("reading backup %s: %w", info.Name, err)
	}
	plain, err := db.OpenBackup(box, oi.Metadata, key, db.MetaKeyAdmin)
	if err != nil {
		return fmt.Errorf("backup %s: %w: nothing written", info.Name, err)
	}
	// A new file of its own beside to: a FILE.part already there (another
	// download's, or a link) is neither truncated nor followed.
	f, err := os.CreateTemp(filepath.Dir(to), "."+filepath.Base(to)+".*.part")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = io.Copy(f, plain)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup %s: %w: nothing written", info.Name, err)
	}
	return os.Rename(tmp, to)
}

// allBackups lists the backups of every server's store, newest first.
func allBackups(ctx context.Context, cl *cli) ([]events.DBBackupInfo, error) {
	out := []events.DBBackupInfo{}
	names := cl.conn.JS.ObjectStoreNames(ctx)
	for bucket := range names.Name() {
		if !strings.HasPrefix(bucket, bus.BackupsPrefix) {
			continue
		}
		obs, err := cl.conn.JS.ObjectStore(ctx, bucket)
		if err != nil {
			return nil, err
		}
		list, err := obs.List(ctx)
		if err != nil && err != jetstream.ErrNoObjectsFound {
			return nil, err
		}
		for _, o := range list {
			out = append(out, db.BackupInfo(o))
		}
	}
	if err := names.Error(); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Taken.After(out[j].Taken) })
	return out, nil
}

func backupsCmd(g *globals) *cobra.Command {
	return listCommand(g, listing[events.DBBackupInfo]{
		use: "backups", short: "List the database backups on the bus, newest first",
		headers: []string{"NAME", "INSTANCE", "DB", "KIND", "SERVER", "SIZE", "TAKEN", "SHA256"},
		read: func(ctx context.Context, cl *cli, _ []string) ([]events.DBBackupInfo, error) {
			return allBackups(ctx, cl)
		},
		row: func(b events.DBBackupInfo) []string {
			return []string{b.Name, b.Instance, b.DB, b.Kind, b.Server, fmt.Sprint(b.Size), b.Taken.Format(time.RFC3339), b.SHA256[:min(16, len(b.SHA256))]}
		},
	})
}

func restoredbCmd(g *globals) *cobra.Command {
	var from string
	var replace bool
	c := &cobra.Command{
		Use:   "restoredb INSTANCE DB BACKUP | restoredb INSTANCE DB --from FILE",
		Short: "Restore a backup (or a local file from backupdb --to) into a database, made when it does not exist",
		Long: `Restore a backup into database DB of INSTANCE. DB is made when it does not
exist, owned by the user that owned the backed-up database (it must be a user
of INSTANCE). The backup is checked against its checksum first. A backup kept
on another server's store is copied to the instance's server's store first;
--from FILE uploads a file written by backupdb --to (DB must exist then).
A database that holds tables is not restored into (the two would mix):
restore into a new one, or pass --replace to drop what it holds first.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if from != "" {
				return cobra.ExactArgs(2)(cmd, args)
			}
			return cobra.ExactArgs(3)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			inst, dbName := args[0], args[1]
			if err := checkDBIdent("database", dbName); err != nil {
				return err
			}
			// The backup's name is known once an upload has stored it; the
			// placeholder passes the shape check until then.
			p := events.DBRestore{Instance: inst, DB: dbName, Backup: "upload", Replace: replace}
			if from == "" {
				p.Backup = args[2]
			}
			key, err := g.backupKey()
			if err != nil {
				return err
			}
			check := func(ctx context.Context, cl *cli, hb *events.Heartbeat) error {
				d, err := find[events.DBInstance](ctx, cl, inst, fmt.Errorf("no database instance named %q: `skein listdbs` shows them", inst))
				if err != nil {
					return err
				}
				if hb.SealKey == "" {
					return fmt.Errorf("server %s's agent has no key to seal the backup to: is it an older skein? Upgrade it", d.Server)
				}
				if from != "" {
					name, err := uploadBackup(ctx, cl, key, hb.SealKey, d, dbName, from)
					p.Backup = name
					return err
				}
				all, err := allBackups(ctx, cl)
				if err != nil {
					return err
				}
				for _, b := range all {
					if b.Name != args[2] {
						continue
					}
					if b.Kind != d.Kind {
						return fmt.Errorf("backup %s is of a %s database: instance %s is %s", b.Name, b.Kind, inst, d.Kind)
					}
					p.Backup = b.Name
					return sealFor(ctx, cl, key, hb.SealKey, b, bus.BackupsBucket(d.Server))
				}
				return fmt.Errorf("no backup named %q: `skein backups` lists them", args[2])
			}
			return g.sendChecked(ctx, ofDB(inst), check, events.TypeDBRestore, &p, func(res *events.Result) error {
				return printDB(g, "restored "+dbName+" into", res)
			})
		},
	}
	c.Flags().StringVar(&from, "from", "", "restore this local file (written by backupdb --to)")
	c.Flags().BoolVar(&replace, "replace", false, "drop what DB holds first (without it, a database that holds tables is refused)")
	return g.acts(c)
}

// uploadBackup stores a local backup file in the instance's server's store,
// sealed to its agent (agentKey) and the admin's backup key, described as a
// backup of DB (which must exist, for its owner).
func uploadBackup(ctx context.Context, cl *cli, key *seal.Keys, agentKey string, d events.DBInstance, dbName, file string) (string, error) {
	owner := ""
	for _, x := range d.Databases {
		if x.Name == dbName {
			owner = x.Owner
		}
	}
	if owner == "" {
		return "", fmt.Errorf("instance %s has no database %s: `skein adddb --on %s USER %s` first, then restore into it", d.Name, dbName, d.Name, dbName)
	}
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// A first pass for what describes it: its checksum and size.
	head := make([]byte, 2)
	if _, err := io.ReadFull(f, head); err != nil || head[0] != 0x1f || head[1] != 0x8b {
		return "", fmt.Errorf("%s is not a gzip file: restoredb --from takes what backupdb --to wrote", file)
	}
	h := sha256.New()
	h.Write(head)
	n, err := io.Copy(h, f)
	if err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	_, err = bus.EnsureBackupsStore(ctx, cl.conn.JS, d.Server)
	if err != nil {
		return "", fmt.Errorf("the backups store of %s: %w", d.Server, err)
	}
	now := time.Now().UTC()
	name := fmt.Sprintf("upload.%s.%s.%s", d.Name, dbName, now.Format("20060102T150405.000Z"))
	meta := jetstream.ObjectMeta{Name: name, Description: "uploaded from " + filepath.Base(file), Metadata: map[string]string{
		"instance": d.Name, "db": dbName, "kind": d.Kind, "owner": owner, "server": d.Server, "sha256": hex.EncodeToString(h.Sum(nil)),
		"taken": now.Format(time.RFC3339Nano), "size": strconv.FormatInt(n+2, 10)}}
	if err := db.StoreBackup(ctx, cl.conn.JS, bus.BackupsBucket(d.Server), meta, f, agentKey, key.Public()); err != nil {
		return "", fmt.Errorf("uploading %s: %w", file, err)
	}
	return name, nil
}

// sealFor makes a backup readable by the agent whose public key is agentKey,
// in bucket: its key resealed with the admin's backup key, the backup copied
// there first when it is another server's. The data stays sealed throughout.
func sealFor(ctx context.Context, cl *cli, key *seal.Keys, agentKey string, b events.DBBackupInfo, bucket string) error {
	src, err := cl.conn.JS.ObjectStore(ctx, b.Bucket)
	if err != nil {
		return err
	}
	var box io.Reader
	var oi *jetstream.ObjectInfo
	if b.Bucket == bucket {
		oi, err = src.GetInfo(ctx, b.Name)
	} else {
		// The key resealed is the one of the data copied.
		box, oi, err = bus.GetBackup(ctx, cl.conn.JS, b.Bucket, b.Name)
	}
	if err != nil {
		return err
	}
	meta, err := db.ResealBackup(oi.Metadata, key, agentKey)
	if err != nil {
		return fmt.Errorf("backup %s: %w", b.Name, err)
	}
	if b.Bucket == bucket {
		return bus.UpdateBackupMeta(ctx, cl.conn.JS, b.Bucket, b.Name, jetstream.ObjectMeta{Name: b.Name, Description: oi.Description, Metadata: meta})
	}
	if _, err := bus.EnsureBackupsStore(ctx, cl.conn.JS, strings.TrimPrefix(bucket, bus.BackupsPrefix)); err != nil {
		return err
	}
	// Copied as it is read, a chunk at a time: a copy whose chunks are not
	// the ones described fails at the end (GetBackup), before it is described.
	_, err = bus.PutBackup(ctx, cl.conn.JS, bucket, jetstream.ObjectMeta{Name: b.Name, Description: oi.Description, Metadata: meta}, box)
	return err
}

// backupKeyName is the admin's backup key's file, beside the admin's credentials.
const backupKeyName = "backup.xk"

// backupKey reads the admin's backup key: backups are sealed to it (and to
// their server's agent).
func (g *globals) backupKey() (*seal.Keys, error) {
	path := g.creds
	if path == "" {
		path = defaultCreds
	}
	path = filepath.Join(filepath.Dir(path), backupKeyName)
	k, err := seal.Load(path)
	if err != nil {
		return nil, fmt.Errorf("the admin's backup key, which backups are sealed to: %w (skein server makes it as DATA/auth/%s; `skein creds admin -o DIR` on the server's machine writes it beside the admin's credentials)", err, backupKeyName)
	}
	return k, nil
}
