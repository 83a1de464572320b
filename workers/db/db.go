// Package db runs database instances on one server: MariaDB or PostgreSQL in
// a service container (through the svc layer), its data on a storage volume of
// its own, with users and databases made and removed on demand. Passwords
// arrive sealed to this agent and reach the server only as hashes.
package db

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/workers"
	"github.com/skeinhq/skein/workers/svc"
)

// Config configures the database worker of one server.
type Config struct {
	svc.Deps
	// Log is the worker's logger.
	Log zerolog.Logger
}

// Capability is the database capability of an agent.
func Capability(ctx context.Context, d svc.Deps) (svc.Capability, error) {
	return New(ctx, Config{Deps: d, Log: d.Host.Log.With().Str("worker", "db").Logger()})
}

// Worker is the database worker of one server.
type Worker struct {
	cfg      Config
	host     *svc.Host
	kind     *svc.Kind[events.DBInstance, *events.DBInstance]
	services *bus.Store[events.Definitions]
	backups  backups
	kick     chan struct{}
}

// New returns the database worker.
func New(ctx context.Context, cfg Config) (*Worker, error) {
	st, err := bus.OpenStore[events.DBInstance](ctx, cfg.JS)
	if err != nil {
		return nil, err
	}
	defs, err := bus.OpenStore[events.Definitions](ctx, cfg.JS)
	if err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, host: cfg.Host, services: defs, kick: make(chan struct{}, 1)}
	w.kind = &svc.Kind[events.DBInstance, *events.DBInstance]{Noun: "database instance", Prefix: "db", ListCmd: "skein listdbs", Store: st,
		Gone: func(ctx context.Context, d events.DBInstance) {
			w.publish(ctx, events.DBChange{Instance: d.Name, Change: "deleted", Cause: "reconcile"})
		}}
	return w, nil
}

// Register adds the worker's handlers to the runtime, in one visible block.
func (w *Worker) Register(r *workers.Runtime) {
	k := w.kind
	workers.Handle(r, workers.Command[events.DBAdd, events.DBInstance]{Type: events.TypeDBAdd, Lock: func(p events.DBAdd) string { return svc.NameLock(k, p.Name) }, Deadline: 5 * time.Minute, Run: w.Add})
	workers.Handle(r, workers.Command[events.DBCreate, events.DBInstance]{Type: events.TypeDBCreate, Lock: func(p events.DBCreate) string { return k.Lock(p.Instance) }, Run: w.Create})
	workers.Handle(r, workers.Command[events.DBDrop, events.DBInstance]{Type: events.TypeDBDrop, Lock: func(p events.DBDrop) string { return k.Lock(p.Instance) }, Run: w.Drop})
	workers.Handle(r, workers.Command[events.DBPasswd, events.DBInstance]{Type: events.TypeDBPasswd, Lock: func(p events.DBPasswd) string { return k.Lock(p.Instance) }, Run: w.Passwd})
	workers.Handle(r, workers.Command[events.DBInstanceRef, events.DBInstance]{Type: events.TypeDBInstanceDelete, Lock: func(p events.DBInstanceRef) string { return k.Lock(p.Name) }, Run: w.Delete})
	workers.Handle(r, workers.Command[events.DBBackup, events.DBBackupInfo]{Type: events.TypeDBBackup, Lock: func(p events.DBBackup) string { return k.Lock(p.Instance) }, Deadline: 10 * time.Minute, Run: w.Backup})
	workers.Handle(r, workers.Command[events.DBRestore, events.DBInstance]{Type: events.TypeDBRestore, Lock: func(p events.DBRestore) string { return k.Lock(p.Instance) }, Deadline: 10 * time.Minute, Run: w.Restore})
	workers.HandleQuery(r, workers.Query[events.DBReveal, events.Sealed]{Type: events.TypeDBReveal, Run: w.Reveal})
}

// Run repairs the instance records from what runs, and measures their data
// every minute, until ctx ends.
func (w *Worker) Run(ctx context.Context) {
	go w.measureLoop(ctx, time.Minute)
	svc.Follow(ctx, w.host, w.kind, w.kick, 30*time.Second)
}

// measureLoop records the size of each ready instance's data directory when it changed.
func (w *Worker) measureLoop(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		all, err := w.kind.Store.ListServer(ctx, w.host.Server)
		if err != nil {
			continue
		}
		for _, e := range all {
			if e.Value.Status != events.StatusReady {
				continue
			}
			size, err := w.measure(ctx, e.Value)
			if err != nil || size == e.Value.Size {
				continue
			}
			unlock, err := w.host.Locks.Lock(ctx, w.kind.Lock(e.Value.Name))
			if err != nil {
				return
			}
			_, _ = w.change(ctx, e.Value.Name, func(inst *events.DBInstance) error { inst.Size = size; return nil })
			unlock()
		}
	}
}

// measure is the size in bytes of an instance's data directory.
func (w *Worker) measure(ctx context.Context, inst events.DBInstance) (int64, error) {
	out, err := w.output(ctx, inst.Name, "du -sb "+flavours[inst.Kind].dataDir+" | cut -f1")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(out, 10, 64)
}

// Gone tells the worker a container is gone: an instance's record may be a ghost now.
func (w *Worker) Gone(string) {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// flavour is what differs between the two kinds of instance.
type flavour struct {
	port    int
	dataDir string
	unit    string
	other   string // the other server in the image, stopped and disabled
	// init makes the data directory on an empty volume.
	init string
	// ready succeeds once the server answers locally.
	ready string
	// run feeds the SQL file F to the server's client as its superuser.
	run string
	// query is run's way that prints each row's one column on a line of its own.
	query string
	// version prints the server's version.
	version string
}

var flavours = map[string]flavour{
	events.DBMySQL: {
		port: mysqlPort, dataDir: "/var/lib/mysql", unit: "mariadb", other: "postgresql",
		init:    `chown mysql:mysql /var/lib/mysql && { [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db --auth-root-authentication-method=socket >/dev/null; }`,
		ready:   `mariadb-admin --silent ping`,
		run:     `mariadb --batch --skip-column-names < "$F"`,
		query:   `mariadb --batch --skip-column-names < "$F"`,
		version: `mariadb --batch --skip-column-names -e 'SELECT VERSION()'`,
	},
	events.DBPostgreSQL: {
		port: postgresPort, dataDir: "/var/lib/postgresql", unit: "postgresql@15-main", other: "mariadb",
		init: `chown postgres:postgres /var/lib/postgresql && { [ -f /var/lib/postgresql/15/main/PG_VERSION ] || { install -d -o postgres -g postgres -m 700 /var/lib/postgresql/15/main &&
  su postgres -s /bin/sh -c '/usr/lib/postgresql/15/bin/initdb -D /var/lib/postgresql/15/main --auth-local=peer --auth-host=scram-sha-256 -E UTF8 >/dev/null'; }; }`,
		ready:   `su postgres -s /bin/sh -c 'pg_isready -q'`,
		run:     `su postgres -s /bin/sh -c 'psql -X -q -v ON_ERROR_STOP=1 -d postgres' < "$F"`,
		query:   `su postgres -s /bin/sh -c 'psql -X -q -A -t -v ON_ERROR_STOP=1 -d postgres' < "$F"`,
		version: `su postgres -s /bin/sh -c "psql -X -A -t -c 'SHOW server_version'"`,
	},
}

// component is how an instance's configuration is checked and taken.
func component(kind string) svc.Component {
	f := flavours[kind]
	return svc.Component{Name: kind, Unit: f.unit}
}

// files is an instance's rendered configuration.
func files(inst events.DBInstance) ([]svc.File, error) {
	if inst.Kind == events.DBMySQL {
		return []svc.File{{Path: mysqlConf, Data: []byte(RenderConf(inst.Kind)), Mode: 0o644}}, nil
	}
	hba, err := RenderHBA(inst)
	if err != nil {
		return nil, workers.Invalid("%v", err)
	}
	return []svc.File{{Path: postgresConf, Data: []byte(RenderConf(inst.Kind)), Mode: 0o644}, {Path: postgresHBA, Data: []byte(hba), Mode: 0o644}}, nil
}

// Add runs a database instance with its data on a volume of its own, and
// makes its first user own its first database.
func (w *Worker) Add(ctx context.Context, req *workers.Request, p events.DBAdd) (events.DBInstance, error) {
	var none events.DBInstance
	f, ok := flavours[p.Kind]
	if !ok {
		return none, workers.Invalid("unknown kind %q: want mysql or postgresql", p.Kind)
	}
	if len(p.Allow) == 0 {
		return none, workers.Invalid("no network may connect: allow at least one (-a CIDR)")
	}
	pw, err := w.open(p.Password)
	if err != nil {
		return none, err
	}
	rec := events.DBInstance{Kind: p.Kind, Port: f.port, Allow: p.Allow, Databases: []events.DBDatabase{}, Users: []events.DBUser{}}
	e, err := svc.Claim(ctx, req, w.host, w.kind, p.Name, p.Kind, rec)
	if err != nil {
		return none, err
	}
	if e.Value.Status == events.StatusReady {
		return e.Value, nil
	}
	name := e.Value.Name
	e.Value.Volume = "skein-db-" + name
	if _, err := svc.Launch(ctx, req, w.host, name, ""); err != nil {
		return none, err
	}
	req.Progress("volume", "data on storage volume "+e.Value.Volume)
	if _, err := w.host.Runtime.EnsureVolume(ctx, e.Value.Volume); err != nil {
		return none, workers.Transient("making volume %s: %v", e.Value.Volume, err)
	}
	if err := w.sh(ctx, name, fmt.Sprintf("systemctl disable -q --now %s >/dev/null 2>&1; systemctl stop %s", f.other, f.unit)); err != nil {
		return none, err
	}
	if err := w.host.Runtime.AttachVolume(ctx, name, e.Value.Volume, f.dataDir); err != nil {
		return none, workers.Transient("mounting volume %s at %s: %v", e.Value.Volume, f.dataDir, err)
	}
	req.Progress("init", "preparing the data directory")
	if err := w.sh(ctx, name, f.init); err != nil {
		return none, err
	}
	req.Progress("configure", "starting "+p.Kind)
	set, err := files(e.Value)
	if err != nil {
		return none, err
	}
	if e.Value.Applied, err = svc.Apply(ctx, w.host.Runtime, name, component(p.Kind), set, svc.Reload, e.Value.Applied); err != nil {
		return none, err
	}
	if err := w.awaitReady(ctx, name, f); err != nil {
		return none, err
	}
	if e.Value.Version, err = w.output(ctx, name, f.version); err != nil {
		return none, err
	}
	req.Progress("database", fmt.Sprintf("user %s, database %s", p.User, p.DB))
	next := e.Value
	if err := w.settle(ctx, req, &next, p.User, p.DB, pw, p.Password); err != nil {
		return none, err
	}
	e.Value = next
	if size, err := w.measure(ctx, e.Value); err == nil {
		e.Value.Size = size
	}
	if err := w.register(ctx, e.Value); err != nil {
		return none, err
	}
	inst, err := svc.Ready(ctx, w.kind, e)
	if err != nil {
		return none, err
	}
	w.publish(ctx, events.DBChange{Instance: name, Change: "added", DB: p.DB, User: p.User})
	return inst, nil
}

// settle makes user, with the password pw, own db on a new instance, which
// may run on the volume of an earlier one: the user's password is set on each
// of its accounts (the old one stops working), and the record takes every
// user and database the server has. A user that came with the volume keeps
// the password skein does not know until `skein dbpasswd` sets one.
func (w *Worker) settle(ctx context.Context, req *workers.Request, inst *events.DBInstance, user, db string, pw []byte, sealed events.Sealed) error {
	pwHash, err := hash(inst.Kind, pw)
	if err != nil {
		return workers.Internal("hashing the password: %v", err)
	}
	create, err := CreateSQL(inst.Kind, user, db, pwHash, inst.Allow)
	if err != nil {
		return workers.Invalid("%v", err)
	}
	if err := w.runSQL(ctx, inst.Name, inst.Kind, create); err != nil {
		return err
	}
	q, err := InventorySQL(inst.Kind, user)
	if err != nil {
		return workers.Invalid("%v", err)
	}
	out, err := w.querySQL(ctx, inst.Name, inst.Kind, q)
	if err != nil {
		return err
	}
	inv := ParseInventory(out, user)
	set, err := PasswordSQL(inst.Kind, user, pwHash, inst.Allow)
	if inst.Kind == events.DBMySQL {
		set, err = AccountsPasswordSQL(user, pwHash, inv.Hosts)
	}
	if err != nil {
		return workers.Invalid("%v", err)
	}
	if err := w.runSQL(ctx, inst.Name, inst.Kind, set); err != nil {
		return err
	}
	known := map[string]events.Sealed{user: sealed}
	for _, u := range inst.Users {
		if _, ok := known[u.Name]; !ok {
			known[u.Name] = u.Password
		}
	}
	inst.Users = []events.DBUser{}
	for _, u := range inv.Users {
		inst.Users = append(inst.Users, events.DBUser{Name: u, Password: known[u]})
		if known[u].Box == "" {
			req.Progress("kept", fmt.Sprintf("user %s came with volume %s: its password is not known to skein (`skein dbpasswd %s %s` sets one)", u, inst.Volume, inst.Name, u))
		}
	}
	if !hasUser(inst, user) {
		return workers.Internal("%s does not list user %s after making it", inst.Kind, user)
	}
	inst.Databases = inv.Databases
	for _, l := range inv.Left {
		req.Progress("kept", "left out of the record: "+l)
	}
	set2, err := files(*inst)
	if err != nil {
		return err
	}
	inst.Applied, err = svc.Apply(ctx, w.host.Runtime, inst.Name, component(inst.Kind), set2, svc.Reload, inst.Applied)
	return err
}

// createIn makes user (new when pw is given) own db in the running instance
// and adds both to inst, with the hba rules that let the user in.
func (w *Worker) createIn(ctx context.Context, inst *events.DBInstance, user, db string, pw []byte, sealed events.Sealed) error {
	pwHash := ""
	if pw != nil {
		var err error
		if pwHash, err = hash(inst.Kind, pw); err != nil {
			return workers.Internal("hashing the password: %v", err)
		}
	}
	sql, err := CreateSQL(inst.Kind, user, db, pwHash, inst.Allow)
	if err != nil {
		return workers.Invalid("%v", err)
	}
	if err := w.runSQL(ctx, inst.Name, inst.Kind, sql); err != nil {
		return err
	}
	if pw != nil {
		inst.Users = append(inst.Users, events.DBUser{Name: user, Password: sealed})
	}
	inst.Databases = append(inst.Databases, events.DBDatabase{Name: db, Owner: user})
	set, err := files(*inst)
	if err != nil {
		return err
	}
	inst.Applied, err = svc.Apply(ctx, w.host.Runtime, inst.Name, component(inst.Kind), set, svc.Reload, inst.Applied)
	return err
}

// Create adds a database owned by a user (made when new) on a running instance.
func (w *Worker) Create(ctx context.Context, req *workers.Request, p events.DBCreate) (events.DBInstance, error) {
	var pw []byte
	if p.Password != nil {
		var err error
		if pw, err = w.open(*p.Password); err != nil {
			return events.DBInstance{}, err
		}
	}
	same := false
	inst, err := w.change(ctx, p.Instance, func(inst *events.DBInstance) error {
		had := slices.ContainsFunc(inst.Databases, func(d events.DBDatabase) bool { return d.Name == p.DB })
		// An attempt after one whose database landed but whose answer was
		// lost finds it made: it tells it as that one would have.
		firstHad, err := req.FirstSaw(ctx, "had", had)
		if err != nil {
			return err
		}
		for _, d := range inst.Databases {
			if d.Name == p.DB {
				if d.Owner == p.User && (pw == nil || hasUser(inst, p.User)) {
					same = firstHad
					return nil
				}
				return workers.Conflict("instance %s already has a database %s (owned by %s): `skein deldb %s %s` first", inst.Name, p.DB, d.Owner, inst.Name, p.DB)
			}
		}
		exists := hasUser(inst, p.User)
		if exists && pw != nil {
			return workers.Conflict("instance %s already has a user %s: give no password (`skein dbpasswd %s %s` changes it)", inst.Name, p.User, inst.Name, p.User)
		}
		if !exists && pw == nil {
			return workers.Invalid("instance %s has no user %s: a new user needs a password", inst.Name, p.User)
		}
		var sealed events.Sealed
		if p.Password != nil {
			sealed = *p.Password
		}
		return w.createIn(ctx, inst, p.User, p.DB, pw, sealed)
	})
	if err == nil && !same {
		w.publish(ctx, events.DBChange{Instance: inst.Name, Change: "database-added", DB: p.DB, User: p.User})
	}
	return inst, err
}

// Drop removes a database, and its owner when asked and it owns no other.
func (w *Worker) Drop(ctx context.Context, req *workers.Request, p events.DBDrop) (events.DBInstance, error) {
	owner := ""
	inst, err := w.change(ctx, p.Instance, func(inst *events.DBInstance) error {
		i := -1
		for j, d := range inst.Databases {
			if d.Name == p.DB {
				i = j
			}
		}
		// An attempt after one whose drop landed but whose result was lost
		// (its agent killed) answers as that one would have.
		first, err := req.FirstSaw(ctx, "found", i >= 0)
		if err != nil {
			return err
		}
		if i < 0 && first {
			return svc.ErrDoneBefore // its event again below: at least once
		}
		if i < 0 {
			return workers.NotFound("instance %s has no database %s: `skein dbinfo %s` shows them", inst.Name, p.DB, inst.Name)
		}
		owner = inst.Databases[i].Owner
		inst.Databases = append(inst.Databases[:i:i], inst.Databases[i+1:]...)
		dropUser := false
		if p.User {
			for _, d := range inst.Databases {
				if d.Owner == owner {
					return workers.Conflict("user %s owns database %s too: drop it first, or drop %s without --user", owner, d.Name, p.DB)
				}
			}
			dropUser = true
			kept := inst.Users[:0:0]
			for _, u := range inst.Users {
				if u.Name != owner {
					kept = append(kept, u)
				}
			}
			inst.Users = kept
		}
		sql, err := DropSQL(inst.Kind, p.DB, owner, dropUser, inst.Allow)
		if err != nil {
			return workers.Invalid("%v", err)
		}
		if err := w.runSQL(ctx, inst.Name, inst.Kind, sql); err != nil {
			return err
		}
		set, err := files(*inst)
		if err != nil {
			return err
		}
		inst.Applied, err = svc.Apply(ctx, w.host.Runtime, inst.Name, component(inst.Kind), set, svc.Reload, inst.Applied)
		return err
	})
	if err == nil {
		ch := events.DBChange{Instance: inst.Name, Change: "database-removed", DB: p.DB}
		if p.User {
			ch.User = owner
		}
		w.publish(ctx, ch)
	}
	return inst, err
}

// Passwd sets a user's password: the old one stops working at once.
func (w *Worker) Passwd(ctx context.Context, req *workers.Request, p events.DBPasswd) (events.DBInstance, error) {
	pw, err := w.open(p.Password)
	if err != nil {
		return events.DBInstance{}, err
	}
	inst, err := w.change(ctx, p.Instance, func(inst *events.DBInstance) error {
		i := userIndex(inst, p.User)
		if i < 0 {
			return workers.NotFound("instance %s has no user %s: `skein dbinfo %s` shows them", inst.Name, p.User, inst.Name)
		}
		h, err := hash(inst.Kind, pw)
		if err != nil {
			return workers.Internal("hashing the password: %v", err)
		}
		sql, err := PasswordSQL(inst.Kind, p.User, h, inst.Allow)
		if err != nil {
			return workers.Invalid("%v", err)
		}
		if err := w.runSQL(ctx, inst.Name, inst.Kind, sql); err != nil {
			return err
		}
		inst.Users[i].Password = p.Password
		return nil
	})
	if err == nil {
		w.publish(ctx, events.DBChange{Instance: inst.Name, Change: "password", User: p.User})
	}
	return inst, err
}

// Reveal seals a user's password to the asker's key.
func (w *Worker) Reveal(ctx context.Context, req *workers.Request, p events.DBReveal) (events.Sealed, error) {
	var none events.Sealed
	e, err := w.kind.Store.Find(ctx, bus.Key(w.host.Server, p.Instance))
	if err != nil {
		return none, workers.FromStore(err, "database instance "+p.Instance)
	}
	if e == nil {
		return none, workers.NotFound("no database instance named %s on server %s: `skein listdbs` shows them", p.Instance, w.host.Server)
	}
	i := userIndex(&e.Value, p.User)
	if i < 0 {
		return none, workers.NotFound("instance %s has no user %s", p.Instance, p.User)
	}
	if e.Value.Users[i].Password.Box == "" {
		return none, workers.NotFound("skein does not know the password of user %s of %s (the user came with the instance's kept volume): `skein dbpasswd %s %s` sets one", p.User, p.Instance, p.Instance, p.User)
	}
	pw, err := w.open(e.Value.Users[i].Password)
	if err != nil {
		return none, err
	}
	s, err := seal.To(p.To, pw)
	if err != nil {
		return none, workers.Invalid("sealing to %s: %v", p.To, err)
	}
	return s, nil
}

// Delete removes an instance and its container; its volume (the data) stays
// for an instance of the same name unless Purge.
func (w *Worker) Delete(ctx context.Context, req *workers.Request, p events.DBInstanceRef) (events.DBInstance, error) {
	inst, err := svc.Remove(ctx, req, w.host, w.kind, p.Name, nil)
	if err != nil {
		return inst, err
	}
	if e, err := w.services.Find(ctx, bus.Key(w.host.Server, p.Name)); err == nil && e != nil {
		_ = w.services.Delete(ctx, e.Key, e.Revision)
	}
	if p.Purge && inst.Volume != "" {
		req.Progress("purge", "deleting volume "+inst.Volume)
		if err := w.host.Runtime.DeleteVolume(ctx, inst.Volume); err != nil {
			return inst, workers.Transient("deleting volume %s: %v", inst.Volume, err)
		}
	}
	w.publish(ctx, events.DBChange{Instance: p.Name, Change: "deleted"})
	return inst, nil
}

// register publishes the instance as the Consul service NAME with a check of
// its port (the discovery worker registers it while an endpoint exists).
func (w *Worker) register(ctx context.Context, inst events.DBInstance) error {
	d := events.Definitions{Container: inst.Name, Server: w.host.Server, Updated: time.Now().UTC(),
		Services: []events.ServiceDef{{Name: inst.Name, Port: inst.Port, Tags: []string{inst.Kind}}},
		Checks:   []events.CheckDef{{Name: "db", Kind: "tcp", Port: inst.Port, Interval: "5s", Timeout: "2s"}}}
	if _, err := w.services.Put(ctx, bus.Key(w.host.Server, inst.Name), d); err != nil {
		return workers.Transient("defining service %s: %v", inst.Name, err)
	}
	return nil
}

// change edits a ready instance; edit acts on the server before the record is written.
func (w *Worker) change(ctx context.Context, name string, edit func(*events.DBInstance) error) (events.DBInstance, error) {
	return svc.Change(ctx, w.host, w.kind, name, edit, func(old, next events.DBInstance) (string, error) { return next.Applied, nil })
}

// open opens a password sealed to this agent.
func (w *Worker) open(s events.Sealed) ([]byte, error) {
	if w.host.Secrets == nil {
		return nil, workers.Internal("this agent cannot open sealed secrets")
	}
	pw, err := w.host.Secrets.Open(s)
	if err != nil {
		return nil, workers.Invalid("the password: %v", err)
	}
	if len(pw) == 0 || len(pw) > 256 {
		return nil, workers.Invalid("a password is 1 to 256 bytes")
	}
	return pw, nil
}

// runSQL feeds statements to the instance's server as its superuser, from a
// file readable by root only that is removed after: nothing of them is on a
// command line.
func (w *Worker) runSQL(ctx context.Context, name, kind, sql string) error {
	_, err := w.sql(ctx, name, sql, flavours[kind].run, kind)
	return err
}

// querySQL runs a query as runSQL does and returns its rows, one a line.
func (w *Worker) querySQL(ctx context.Context, name, kind, sql string) (string, error) {
	return w.sql(ctx, name, sql, flavours[kind].query, kind)
}

func (w *Worker) sql(ctx context.Context, name, sql, client, kind string) (string, error) {
	f := "/run/skein-sql-" + events.NewID()[:12]
	if err := w.host.Runtime.PushFile(ctx, name, f, []byte(sql), 0o600); err != nil {
		return "", workers.Transient("writing statements into %s: %v", name, err)
	}
	res, err := w.host.Runtime.Exec(ctx, name, "sh", "-c", "F="+f+"; "+client+"; rc=$?; rm -f \"$F\"; exit $rc")
	if err != nil {
		return "", workers.Transient("running statements in %s: %v", name, err)
	}
	if res.Code != 0 {
		return "", workers.Invalid("%s refused the statements: %s", kind, strings.TrimSpace(string(res.Stderr)+string(res.Stdout)))
	}
	return string(res.Stdout), nil
}

// sh runs a script of skein's own in the instance's container.
func (w *Worker) sh(ctx context.Context, name, script string) error {
	_, err := w.output(ctx, name, script)
	return err
}

// output runs a script of skein's own in the container and returns what it printed.
func (w *Worker) output(ctx context.Context, name, script string) (string, error) {
	res, err := w.host.Runtime.Exec(ctx, name, "sh", "-c", script)
	if err != nil {
		return "", workers.Transient("running in %s: %v", name, err)
	}
	if res.Code != 0 {
		return "", workers.Transient("in %s: %s: exit %d: %s", name, firstLine(script), res.Code, strings.TrimSpace(string(res.Stderr)+string(res.Stdout)))
	}
	return strings.TrimSpace(string(res.Stdout)), nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// awaitReady waits until the server answers locally.
func (w *Worker) awaitReady(ctx context.Context, name string, f flavour) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := w.host.Runtime.Exec(ctx, name, "sh", "-c", f.ready)
		if err == nil && res.Code == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return workers.Transient("%s in %s does not answer after 60 s", f.unit, name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func hasUser(inst *events.DBInstance, user string) bool { return userIndex(inst, user) >= 0 }

func userIndex(inst *events.DBInstance, user string) int {
	for i, u := range inst.Users {
		if u.Name == user {
			return i
		}
	}
	return -1
}

func (w *Worker) publish(ctx context.Context, ch events.DBChange) {
	if err := w.cfg.Publisher.Publish(ctx, events.TypeDBChanged, ch); err != nil {
		w.cfg.Log.Warn().Err(err).Msg("publishing event")
	}
}
