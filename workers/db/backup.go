package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	gohash "hash"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/workers"
)

// Metadata keys of a backup in the store.
const (
	metaInstance = "instance"
	metaDB       = "db"
	metaKind     = "kind"
	metaOwner    = "owner"
	metaServer   = "server"
	metaSHA256   = "sha256"
	metaTaken    = "taken"
	metaSize     = "size"
	// MetaKeyAgent and MetaKeyAdmin are the backup's data key sealed to the
	// server's agent and to the admin's backup key (MetaAdminKey).
	MetaKeyAgent = "key_agent"
	MetaKeyAdmin = "key_admin"
	MetaAdminKey = "admin_key"
)

// Keyring opens what was sealed to its public key (seal.Keys).
type Keyring interface {
	Open(events.Sealed) ([]byte, error)
	Public() string
}

// SealBackup returns a writer that seals what is written to it into dst
// under a key of its own, sealed to the server's agent and to the admin's
// backup key, and records in meta what opens it, before anything is
// written: the stream holds nothing another server or an observer can read.
// Close seals the end.
func SealBackup(dst io.Writer, agentKey, adminKey string, meta map[string]string) (io.WriteCloser, error) {
	w, key, err := seal.NewSealer(dst)
	if err != nil {
		return nil, err
	}
	forAgent, err := seal.To(agentKey, key)
	if err != nil {
		return nil, &keyError{fmt.Errorf("sealing to the agent: %w", err)}
	}
	forAdmin, err := seal.To(adminKey, key)
	if err != nil {
		return nil, &keyError{fmt.Errorf("sealing to the admin's backup key: %w", err)}
	}
	meta[MetaKeyAgent], meta[MetaKeyAdmin], meta[MetaAdminKey] = sealedText(forAgent), sealedText(forAdmin), adminKey
	return w, nil
}

// keyError is a reader's key a backup cannot be sealed to: no retry helps.
type keyError struct{ err error }

func (e *keyError) Error() string { return e.err.Error() }
func (e *keyError) Unwrap() error { return e.err }

// OpenBackup returns a reader of the dump a sealed backup (box) holds,
// opened with the keys of its reader (MetaKeyAgent or MetaKeyAdmin). It
// hands out only chunks that authenticated, and checks the whole against
// its checksum at the end: its last Read fails instead of returning io.EOF
// when the backup is damaged, cut short or not the one described. What it
// handed out is to be used only once it returned io.EOF.
func OpenBackup(box io.Reader, meta map[string]string, k Keyring, reader string) (io.Reader, error) {
	key, err := openKey(meta, k, reader)
	if err != nil {
		return nil, err
	}
	return checked(seal.OpenStream(box, key), meta[metaSHA256], -1, func(sum string, _ int64) error {
		return &damagedError{fmt.Sprintf("it is damaged: its checksum is %s, it was stored as %s", sum, meta[metaSHA256])}
	}), nil
}

// openKey opens a backup's data key with the keys of its reader.
func openKey(meta map[string]string, k Keyring, reader string) ([]byte, error) {
	s, ok := textSealed(meta[reader])
	if !ok {
		return nil, fmt.Errorf("it holds no key for %s: take a new backup", readerName(reader))
	}
	key, err := k.Open(s)
	if err != nil {
		if reader == MetaKeyAdmin {
			return nil, fmt.Errorf("it is sealed to the admin's backup key %s, not to this one (%s): use the backup.xk of the server that took it", meta[MetaAdminKey], k.Public())
		}
		return nil, fmt.Errorf("it is not sealed to this server's agent: restore it with `skein restoredb`, which seals it to the agent first")
	}
	return key, nil
}

// damagedError is a backup whose dump is not the one its checksum describes.
type damagedError struct{ msg string }

func (e *damagedError) Error() string { return e.msg }

// isDamaged reports whether a backup's stream failed for what it holds
// (and a retry would read the same) rather than for the reading.
func isDamaged(err error) bool {
	var d *damagedError
	return errors.As(err, &d) || errors.Is(err, seal.ErrDamaged) || errors.Is(err, seal.ErrNotSealed) || errors.Is(err, bus.ErrBackupDamaged)
}

// checkedReader hands out what r reads and, at its end, fails with
// mismatch unless it read size bytes (any number when size < 0) whose
// SHA-256 is sum.
type checkedReader struct {
	r        io.Reader
	h        gohash.Hash
	n        int64
	sum      string
	size     int64
	mismatch func(sum string, size int64) error
}

func checked(r io.Reader, sum string, size int64, mismatch func(string, int64) error) *checkedReader {
	return &checkedReader{r: r, h: sha256.New(), sum: sum, size: size, mismatch: mismatch}
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if err == io.EOF {
		if got := hex.EncodeToString(c.h.Sum(nil)); got != c.sum || c.size >= 0 && c.n != c.size {
			return n, c.mismatch(got, c.n)
		}
	}
	return n, err
}

// StoreBackup seals what src reads as it reads it (SealBackup) into
// bucket, as the object meta describes: src must read the size and SHA-256
// meta gives, or nothing is described (the object's metadata is written
// once its chunks are stored, never for a stream that failed), so that no
// backup is listed but whole and as it was described. One of that name
// already described with that SHA-256 is the same backup, stored: it is
// not stored again.
func StoreBackup(ctx context.Context, js jetstream.JetStream, bucket string, meta jetstream.ObjectMeta, src io.Reader, agentKey, adminKey string) error {
	size, err := strconv.ParseInt(meta.Metadata[metaSize], 10, 64)
	if err != nil || len(meta.Metadata[metaSHA256]) != 2*sha256.Size {
		return fmt.Errorf("backup %s is described without its size and checksum", meta.Name)
	}
	if obs, err := js.ObjectStore(ctx, bucket); err == nil {
		if oi, err := obs.GetInfo(ctx, meta.Name); err == nil && oi.Metadata[metaSHA256] == meta.Metadata[metaSHA256] {
			return nil
		}
	}
	pr, pw := io.Pipe()
	sw, err := SealBackup(pw, agentKey, adminKey, meta.Metadata)
	if err != nil {
		return err
	}
	in := checked(src, meta.Metadata[metaSHA256], size, func(sum string, n int64) error {
		return fmt.Errorf("it changed while it was read: %d bytes of SHA-256 %s, not the %d bytes of %s it was", n, sum, size, meta.Metadata[metaSHA256])
	})
	sealed := make(chan error, 1)
	go func() {
		_, err := io.Copy(sw, in)
		if err == nil {
			err = sw.Close()
		}
		// nil is io.EOF for the store: the end, once the final chunk is out.
		// A failure is handed on as words (%v) so that no io.EOF or
		// io.ErrUnexpectedEOF of src's is taken by the store for an end.
		if err != nil {
			err = fmt.Errorf("reading the dump: %v", err)
		}
		pw.CloseWithError(err)
		sealed <- err
	}()
	_, err = bus.PutBackup(ctx, js, bucket, meta, pr)
	// A store that stopped reading stops the sealing.
	pr.CloseWithError(errors.New("the store stopped reading"))
	if serr := <-sealed; err == nil && serr != nil {
		err = serr
	}
	return err
}

// ResealBackup returns meta with the backup's key sealed to another agent,
// opened with the admin's backup key: the data is not touched.
func ResealBackup(meta map[string]string, admin Keyring, agentKey string) (map[string]string, error) {
	s, ok := textSealed(meta[MetaKeyAdmin])
	if !ok {
		return nil, fmt.Errorf("it holds no key for the admin: take a new backup")
	}
	key, err := admin.Open(s)
	if err != nil {
		return nil, fmt.Errorf("it is sealed to the admin's backup key %s, not to this one (%s): use the backup.xk of the server that took it", meta[MetaAdminKey], admin.Public())
	}
	forAgent, err := seal.To(agentKey, key)
	if err != nil {
		return nil, fmt.Errorf("sealing to the agent: %w", err)
	}
	out := make(map[string]string, len(meta))
	for k, v := range meta {
		out[k] = v
	}
	out[MetaKeyAgent] = sealedText(forAgent)
	return out, nil
}

func readerName(reader string) string {
	if reader == MetaKeyAdmin {
		return "the admin"
	}
	return "the agent"
}

// sealedText is a sealed key as one metadata value: SENDER:BOX.
func sealedText(s events.Sealed) string { return s.Sender + ":" + s.Box }

func textSealed(v string) (events.Sealed, bool) {
	sender, box, ok := strings.Cut(v, ":")
	return events.Sealed{Sender: sender, Box: box}, ok && sender != "" && box != ""
}

// dumpScript renders the command that writes a consistent, gzip-compressed
// dump of db into f (root's alone, after f's prelude) and prints its
// SHA-256 and size:
// MariaDB's in one transaction (--single-transaction, no table locks),
// PostgreSQL's pg_dump (one snapshot), without owners so that it restores
// into any database. The name is a validated identifier; bash's pipefail
// makes a failed dump a failure.
func dumpScript(kind, db string, f scratchFile) (string, error) {
	if _, err := ident(kind, db); err != nil {
		return "", err
	}
	dump := "su postgres -s /bin/sh -c 'pg_dump --no-owner --no-acl -d " + db + "'"
	if kind == events.DBMySQL {
		dump = "mariadb-dump --single-transaction --quick --routines --triggers --no-create-db --skip-add-locks " + db
	}
	return f.prelude() + dump + " | gzip -c > \"$F\" && sha256sum < \"$F\" && wc -c < \"$F\"", nil
}

// dumpSums reads the SHA-256 and size dumpScript prints.
func dumpSums(out []byte) (string, int64, bool) {
	f := strings.Fields(string(out))
	if len(f) != 3 || len(f[0]) != 2*sha256.Size || f[1] != "-" {
		return "", 0, false
	}
	if _, err := hex.DecodeString(f[0]); err != nil {
		return "", 0, false
	}
	n, err := strconv.ParseInt(f[2], 10, 64)
	return f[0], n, err == nil && n >= 0
}

// scratchDir holds skein's plain dumps in a container: on disk (/run is a
// small tmpfs), and root's alone, since /var/tmp is anyone's to write in.
const scratchDir = "/var/tmp/skein"

// Exit statuses of a scratch file's prelude.
const (
	// exitBusy: an earlier attempt of the command still runs a script.
	exitBusy = 75
	// exitNotOwn: scratchDir is not a directory root's alone.
	exitNotOwn = 76
)

// scratchFile is one attempt's plain dump in a container. Each attempt has
// its own: an Incus exec outlives the agent that started it, and the
// command is redelivered meanwhile.
type scratchFile struct {
	// dir is scratchDir.
	dir string
	// id is hex of the command's id, the same for each attempt.
	id string
	// path is this attempt's file, hex and digits alone.
	path string
}

// scratch is the plain dump (what: dump or restore) of this attempt of req.
func scratch(req *workers.Request, what string) scratchFile {
	sum := sha256.Sum256([]byte(req.ID()))
	id := hex.EncodeToString(sum[:8])
	return scratchFile{dir: scratchDir, id: id, path: fmt.Sprintf("%s/skein-%s-%s.%d.gz", scratchDir, what, id, max(req.Attempt, 1))}
}

// part is where a restore's file is written: it is moved to path only once
// it was read to its end and checked.
func (f scratchFile) part() string { return f.path + ".part" }

// prelude renders the start of a bash script that uses f as $F: it makes
// f's directory, root's alone, and refuses one that is not (a container's
// user could have made it, or its files); it takes the command's lock,
// refusing (exitBusy) while an earlier attempt's script still holds it;
// and it removes the files the command's earlier attempts left.
func (f scratchFile) prelude() string {
	return "set -o pipefail; umask 077; D=" + f.dir + "; F=" + f.path + "; " +
		`mkdir -m 0700 "$D" 2>/dev/null; if [ -L "$D" ] || [ ! -d "$D" ] || [ "$(stat -c %u:%a "$D")" != "$(id -u):700" ]; then echo "$D is not a directory root's alone: remove it" >&2; exit ` + strconv.Itoa(exitNotOwn) + `; fi; ` +
		`exec 9>"$D/` + f.id + `.lock" && flock -n 9 || { echo "an earlier attempt of this command still runs" >&2; exit ` + strconv.Itoa(exitBusy) + `; }; ` +
		`for g in "$D"/skein-*-` + f.id + `.*; do [ "$g" = "$F" ] || [ "$g" = "$F.part" ] || rm -f -- "$g"; done; `
}

// preludeError is what a script's exit status says when its prelude
// refused, or nil.
func preludeError(name string, res container.ExecResult) error {
	switch res.Code {
	case exitBusy:
		return workers.Transient("in %s, an earlier attempt of this command still runs: %s", name, strings.TrimSpace(string(res.Stderr)))
	case exitNotOwn:
		return workers.Invalid("in %s, %s", name, strings.TrimSpace(string(res.Stderr)))
	}
	return nil
}

// prepare makes f's directory in container name, and removes what earlier
// attempts left, before a file is written into it.
func (w *Worker) prepare(ctx context.Context, name string, f scratchFile) error {
	res, err := w.host.Runtime.Exec(ctx, name, "bash", "-c", f.prelude()+"true")
	if err != nil {
		return workers.Transient("preparing %s in %s: %v", f.dir, name, err)
	}
	if err := preludeError(name, res); err != nil {
		return err
	}
	if res.Code != 0 {
		return workers.Internal("preparing %s in %s: exit %d: %s", f.dir, name, res.Code, strings.TrimSpace(string(res.Stderr)))
	}
	return nil
}

// remove deletes an attempt's plain dump of skein's in a container,
// whatever became of the command: its context may have ended.
func (w *Worker) remove(ctx context.Context, name string, f scratchFile) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	res, err := w.host.Runtime.Exec(ctx, name, "rm", "-f", "--", f.path, f.part())
	if err == nil && res.Code != 0 {
		err = fmt.Errorf("exit %d: %s", res.Code, strings.TrimSpace(string(res.Stderr)))
	}
	if err != nil {
		w.cfg.Log.Warn().Err(err).Str("container", name).Str("file", f.path).Msg("removing a plain dump")
	}
}

// restoreScript renders the command that restores the compressed dump in file
// F into db, as owner for PostgreSQL (the objects are the owner's).
func restoreScript(kind, db, owner string) (string, error) {
	if _, err := ident(kind, db); err != nil {
		return "", err
	}
	if kind == events.DBMySQL {
		return "set -o pipefail; gunzip -c \"$F\" | mariadb --batch " + db, nil
	}
	o, err := ident(kind, owner)
	if err != nil {
		return "", err
	}
	return "set -o pipefail; { echo 'SET ROLE " + o + ";'; gunzip -c \"$F\"; } | su postgres -s /bin/sh -c 'psql -X -q -v ON_ERROR_STOP=1 -d " + db + "'", nil
}

// backups is this server's backups store, opened on first use.
type backups struct {
	mu  sync.Mutex
	obs jetstream.ObjectStore
}

// store opens this server's backups store: made by the bus's server for
// every agent it issued credentials to; made here on a bus without
// authentication (an agent may not make or change a stream).
func (w *Worker) store(ctx context.Context) (jetstream.ObjectStore, error) {
	w.backups.mu.Lock()
	defer w.backups.mu.Unlock()
	if w.backups.obs != nil {
		return w.backups.obs, nil
	}
	bucket := bus.BackupsBucket(w.host.Server)
	obs, err := w.cfg.JS.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && w.cfg.JS.Conn().AuthRequired() {
		return nil, workers.Transient("the backups store %s does not exist: `skein server` makes it for every agent it issued credentials to (restart it, or run `skein init` against an external NATS)", bucket)
	}
	if err != nil {
		obs, err = bus.EnsureBackupsStore(ctx, w.cfg.JS, w.host.Server)
	}
	if err != nil {
		return nil, workers.Transient("the backups store %s: %v", bucket, err)
	}
	w.backups.obs = obs
	return obs, nil
}

// Backup takes a consistent dump of a database, compressed, into this
// server's backups store with its checksum. A failure is an error and a
// db.backedup event saying so.
func (w *Worker) Backup(ctx context.Context, req *workers.Request, p events.DBBackup) (events.DBBackupInfo, error) {
	info, err := w.backup(ctx, req, p)
	ev := events.DBBackupEvent{Instance: p.Instance, DB: p.DB, OK: err == nil}
	if err != nil {
		ev.Error = err.Error()
	} else {
		ev.Backup, ev.Size, ev.SHA256 = info.Name, info.Size, info.SHA256
	}
	if perr := w.cfg.Publisher.Publish(ctx, events.TypeDBBackedUp, ev); perr != nil {
		w.cfg.Log.Warn().Err(perr).Msg("publishing event")
	}
	return info, err
}

func (w *Worker) backup(ctx context.Context, req *workers.Request, p events.DBBackup) (events.DBBackupInfo, error) {
	var none events.DBBackupInfo
	e, err := w.kind.Store.Find(ctx, bus.Key(w.host.Server, p.Instance))
	if err != nil {
		return none, workers.FromStore(err, "database instance "+p.Instance)
	}
	if e == nil || e.Value.Status != events.StatusReady {
		return none, workers.NotFound("no database instance named %s on server %s: `skein listdbs` shows them", p.Instance, w.host.Server)
	}
	inst := e.Value
	owner := ""
	for _, d := range inst.Databases {
		if d.Name == p.DB {
			owner = d.Owner
		}
	}
	if owner == "" {
		return none, workers.NotFound("instance %s has no database %s to back up: `skein dbinfo %s` shows its databases", inst.Name, p.DB, inst.Name)
	}
	file := scratch(req, "dump")
	script, err := dumpScript(inst.Kind, p.DB, file)
	if err != nil {
		return none, workers.Invalid("%v", err)
	}
	if w.host.Secrets == nil {
		return none, workers.Internal("this agent has no key to seal a backup with")
	}
	// Made first: a dump with nowhere to go is not taken.
	obs, err := w.store(ctx)
	if err != nil {
		return none, err
	}
	// The name is the first attempt's: a redelivery names the same backup.
	stamp, err := req.Once(ctx, "taken", func() (string, error) { return time.Now().UTC().Format(time.RFC3339Nano), nil })
	if err != nil {
		return none, err
	}
	taken, err := time.Parse(time.RFC3339Nano, stamp)
	if err != nil {
		return none, workers.Internal("the journaled time of the backup, %q: %v", stamp, err)
	}
	name := fmt.Sprintf("%s.%s.%s", inst.Name, p.DB, taken.Format("20060102T150405.000Z"))
	// Described only once stored whole: an earlier attempt took it.
	if oi, err := obs.GetInfo(ctx, name); err == nil {
		return BackupInfo(oi), nil
	}
	req.Progress("dump", "dumping "+p.DB)
	// The plain dump is on the container's disk until here, whatever happens.
	defer w.remove(ctx, inst.Name, file)
	res, err := w.host.Runtime.Exec(ctx, inst.Name, "bash", "-c", script)
	if err != nil {
		return none, workers.Transient("dumping %s in %s: %v", p.DB, inst.Name, err)
	}
	if err := preludeError(inst.Name, res); err != nil {
		return none, err
	}
	if res.Code != 0 {
		return none, workers.Invalid("the dump of %s failed (exit %d): %s", p.DB, res.Code, strings.TrimSpace(string(res.Stderr)))
	}
	sum, size, ok := dumpSums(res.Stdout)
	if !ok {
		return none, workers.Internal("the dump of %s printed no checksum and size: %q (stderr %q)", p.DB, strings.TrimSpace(string(res.Stdout)), strings.TrimSpace(string(res.Stderr)))
	}
	if size == 0 {
		return none, workers.Invalid("the dump of %s is empty: %s", p.DB, strings.TrimSpace(string(res.Stderr)))
	}
	info := events.DBBackupInfo{Name: name, Bucket: bus.BackupsBucket(w.host.Server),
		Instance: inst.Name, DB: p.DB, Kind: inst.Kind, Owner: owner, Server: w.host.Server, Size: size, SHA256: sum, Taken: taken}
	req.Progress("store", fmt.Sprintf("sealing and storing %d bytes as %s", info.Size, info.Name))
	meta := jetstream.ObjectMeta{Name: info.Name, Description: "backup of " + inst.Kind + " database " + p.DB + " of " + inst.Name,
		Metadata: map[string]string{metaInstance: inst.Name, metaDB: p.DB, metaKind: inst.Kind, metaOwner: owner, metaServer: w.host.Server, metaSHA256: info.SHA256,
			metaTaken: taken.Format(time.RFC3339Nano), metaSize: strconv.FormatInt(info.Size, 10)}}
	dump, n, err := w.host.Runtime.PullFile(ctx, inst.Name, file.path)
	if err != nil {
		return none, workers.Transient("reading the dump of %s in %s: %v", p.DB, inst.Name, err)
	}
	defer dump.Close()
	if n >= 0 && n != size {
		return none, workers.Transient("the dump of %s in %s is %d bytes, %d when it was taken", p.DB, inst.Name, n, size)
	}
	if err := StoreBackup(ctx, w.cfg.JS, bus.BackupsBucket(w.host.Server), meta, dump, w.host.Secrets.Public(), p.To); err != nil {
		var k *keyError
		if errors.As(err, &k) {
			return none, workers.Invalid("%v", err)
		}
		return none, workers.Transient("storing backup %s: %v", info.Name, err)
	}
	return info, nil
}

// BackupInfo reads a backup's description from its object's metadata.
func BackupInfo(o *jetstream.ObjectInfo) events.DBBackupInfo {
	m := o.Metadata
	taken, _ := time.Parse(time.RFC3339Nano, m[metaTaken])
	size := int64(o.Size)
	if s, err := strconv.ParseInt(m[metaSize], 10, 64); err == nil {
		size = s
	}
	return events.DBBackupInfo{Name: o.Name, Bucket: o.Bucket, Instance: m[metaInstance], DB: m[metaDB], Kind: m[metaKind], Owner: m[metaOwner],
		Server: m[metaServer], Size: size, SHA256: m[metaSHA256], Taken: taken}
}

// Restore restores a backup of this server's store into a database of an
// instance: the dump is checked against its checksum first, and the database
// is made (owned by the backup's owner) when it does not exist.
func (w *Worker) Restore(ctx context.Context, req *workers.Request, p events.DBRestore) (events.DBInstance, error) {
	obs, err := w.store(ctx)
	if err != nil {
		return events.DBInstance{}, err
	}
	oi, err := obs.GetInfo(ctx, p.Backup)
	if err != nil {
		return events.DBInstance{}, workers.NotFound("no backup %s in %s: `skein backups` lists them", p.Backup, bus.BackupsBucket(w.host.Server))
	}
	b := BackupInfo(oi)
	if w.host.Secrets == nil {
		return events.DBInstance{}, workers.Internal("this agent has no key to open a backup with")
	}
	// Refused before anything is made: a backup this agent cannot open.
	if _, err := openKey(oi.Metadata, w.host.Secrets, MetaKeyAgent); err != nil {
		return events.DBInstance{}, workers.Invalid("backup %s: %v", p.Backup, err)
	}
	inst, err := w.change(ctx, p.Instance, func(inst *events.DBInstance) error {
		if b.Kind != inst.Kind {
			return workers.Invalid("backup %s is of a %s database: instance %s is %s", p.Backup, b.Kind, inst.Name, inst.Kind)
		}
		// In the container and checked before anything is made or restored.
		f := scratch(req, "restore")
		// Registered before anything is written: whatever happens next.
		defer w.remove(ctx, inst.Name, f)
		if err := w.prepare(ctx, inst.Name, f); err != nil {
			return err
		}
		req.Progress("backup", fmt.Sprintf("writing %s (%d bytes) into %s", p.Backup, b.Size, inst.Name))
		size, err := w.pushBackup(ctx, p.Backup, inst.Name, f)
		if err != nil {
			return err
		}
		owner := ""
		for _, d := range inst.Databases {
			if d.Name == p.DB {
				owner = d.Owner
			}
		}
		if owner == "" {
			if !hasUser(inst, b.Owner) {
				return workers.Invalid("instance %s has no database %s and no user %s to own it: `skein adddb --on %s USER %s` first", inst.Name, p.DB, b.Owner, inst.Name, p.DB)
			}
			owner = b.Owner
			req.Progress("database", "making database "+p.DB+" owned by "+owner)
			if err := w.createIn(ctx, inst, owner, p.DB, nil, events.Sealed{}); err != nil {
				return err
			}
		}
		// Made just now or not, it holds nothing a restore would mix with
		// (one left on the server, or this command's own cut short).
		if err := w.emptyFor(ctx, req, inst, p, owner); err != nil {
			return err
		}
		script, err := restoreScript(inst.Kind, p.DB, owner)
		if err != nil {
			return workers.Invalid("%v", err)
		}
		req.Progress("restore", fmt.Sprintf("restoring %s (%d bytes) into %s", p.Backup, size, p.DB))
		// Moved to its name under the lock, only once checked (pushBackup).
		res, err := w.host.Runtime.Exec(ctx, inst.Name, "bash", "-c", f.prelude()+`mv -f -- "$F.part" "$F" || exit 1; `+script+`; rc=$?; rm -f -- "$F"; exit $rc`)
		if err != nil {
			return workers.Transient("restoring in %s: %v", inst.Name, err)
		}
		if err := preludeError(inst.Name, res); err != nil {
			return err
		}
		if res.Code != 0 {
			return workers.Invalid("restoring %s into %s failed: %s", p.Backup, p.DB, strings.TrimSpace(string(res.Stderr)+string(res.Stdout)))
		}
		return nil
	})
	if err == nil {
		w.publish(ctx, events.DBChange{Instance: inst.Name, Change: "restored", DB: p.DB})
	}
	return inst, err
}

// pushBackup writes the dump backup holds into f's part file in container
// name as it is read and opened, and checks it: when it is damaged, or the
// writing failed, the file is removed and an error returned. It returns
// its size.
func (w *Worker) pushBackup(ctx context.Context, backup, name string, f scratchFile) (int64, error) {
	src, oi, err := bus.GetBackup(ctx, w.cfg.JS, bus.BackupsBucket(w.host.Server), backup)
	if err != nil {
		return 0, workers.Transient("reading backup %s: %v", backup, err)
	}
	plain, err := OpenBackup(src, oi.Metadata, w.host.Secrets, MetaKeyAgent)
	if err != nil {
		return 0, workers.Invalid("backup %s: %v", backup, err)
	}
	in := &endReader{r: plain}
	err = w.host.Runtime.PushFileFrom(ctx, name, f.part(), in, 0o600)
	if err == nil && in.eof {
		return in.n, nil
	}
	w.remove(ctx, name, f)
	switch {
	case in.err != nil && isDamaged(in.err):
		return 0, workers.Invalid("backup %s: %v", backup, in.err)
	case in.err != nil:
		return 0, workers.Transient("reading backup %s: %v", backup, in.err)
	case err == nil:
		// Checked only at its end: a file not read to it is not known whole.
		return 0, workers.Internal("writing the backup into %s: the container took the file before its end", name)
	}
	return 0, workers.Transient("writing the backup into %s: %v", name, err)
}

// endReader remembers how what it reads ended: whoever it was handed to
// may report the failure in words of its own, or not at all.
type endReader struct {
	r   io.Reader
	n   int64
	eof bool
	err error
}

func (e *endReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.n += int64(n)
	switch {
	case err == io.EOF:
		e.eof = true
	case err != nil:
		e.err = err
	}
	return n, err
}

// emptyFor makes sure database p.DB of inst, owned by owner, holds nothing
// a restore would mix with: one that holds tables is refused, unless
// p.Replace, or unless this command's first attempt found it empty (what
// it holds is then this command's own restore, cut short): it is dropped
// and made again, empty, for its owner.
func (w *Worker) emptyFor(ctx context.Context, req *workers.Request, inst *events.DBInstance, p events.DBRestore, owner string) error {
	q, err := TablesSQL(inst.Kind, p.DB)
	if err != nil {
		return workers.Invalid("%v", err)
	}
	out, err := w.querySQL(ctx, inst.Name, inst.Kind, q)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return workers.Internal("counting the tables of %s: %q", p.DB, strings.TrimSpace(out))
	}
	firstEmpty, err := req.FirstSaw(ctx, "empty", n == 0)
	if err != nil {
		return err
	}
	switch {
	case n == 0:
		return nil
	case !p.Replace && !firstEmpty:
		tables := "tables"
		if n == 1 {
			tables = "table"
		}
		return workers.Conflict("database %s of instance %s is not empty (%d %s): restore into a new database (`skein restoredb %s NEWDB %s`), or pass --replace to drop what %s holds first", p.DB, inst.Name, n, tables, inst.Name, p.Backup, p.DB)
	}
	req.Progress("replace", fmt.Sprintf("dropping the %d tables of %s: made again, empty, for %s", n, p.DB, owner))
	drop, err := DropSQL(inst.Kind, p.DB, owner, false, inst.Allow)
	if err != nil {
		return workers.Invalid("%v", err)
	}
	create, err := CreateSQL(inst.Kind, owner, p.DB, "", inst.Allow)
	if err != nil {
		return workers.Invalid("%v", err)
	}
	return w.runSQL(ctx, inst.Name, inst.Kind, drop+create)
}
