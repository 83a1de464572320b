package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/internal/testutil"
	"github.com/skeinhq/skein/workers/db"
)

// backupBed is a bus, the admin's backup key, two agents' and a local
// backup file of several chunks, as backupdb --to writes it.
type backupBed struct {
	ctx              context.Context
	cl               *cli
	admin, s1, s2    *seal.Keys
	file             string
	data             []byte
	instance, dbName string
}

func newBackupBed(t *testing.T) *backupBed {
	t.Helper()
	conn, _ := testutil.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	b := &backupBed{ctx: ctx, cl: &cli{g: &globals{}, conn: conn, client: bus.NewClient(conn, "cli")}, instance: "db1", dbName: "d1"}
	for _, k := range []**seal.Keys{&b.admin, &b.s1, &b.s2} {
		var err error
		if *k, err = seal.New(); err != nil {
			t.Fatal(err)
		}
	}
	// A gzip header, then what stands for its compressed dump.
	b.data = append([]byte{0x1f, 0x8b, 8, 0}, make([]byte, 5*seal.ChunkSize+99)...)
	rand.NewChaCha8([32]byte{5}).Read(b.data[4:])
	b.file = filepath.Join(t.TempDir(), "d1.sql.gz")
	if err := os.WriteFile(b.file, b.data, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// upload stores the local file in server s1's store, sealed to s1's agent.
func (b *backupBed) upload(t *testing.T) events.DBBackupInfo {
	t.Helper()
	d := events.DBInstance{Resource: events.Resource{Name: b.instance, Server: "s1"}, Kind: events.DBMySQL, Databases: []events.DBDatabase{{Name: b.dbName, Owner: "u1"}}}
	name, err := uploadBackup(b.ctx, b.cl, b.admin, b.s1.Public(), d, b.dbName, b.file)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	return b.info(t, bus.BackupsBucket("s1"), name)
}

// info reads a backup's description from its store.
func (b *backupBed) info(t *testing.T, bucket, name string) events.DBBackupInfo {
	t.Helper()
	obs, err := b.cl.conn.JS.ObjectStore(b.ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	oi, err := obs.GetInfo(b.ctx, name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, bucket, err)
	}
	return db.BackupInfo(oi)
}

// open reads backup with an agent's key, as a restore would.
func (b *backupBed) open(t *testing.T, bucket, name string, k *seal.Keys) ([]byte, error) {
	t.Helper()
	box, oi, err := bus.GetBackup(b.ctx, b.cl.conn.JS, bucket, name)
	if err != nil {
		return nil, err
	}
	plain, err := db.OpenBackup(box, oi.Metadata, k, db.MetaKeyAgent)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(plain)
}

// A local backup file is uploaded as it is read, described by its
// checksum and size, opens for its server's agent byte for byte, and is
// downloaded back whole, nothing left beside it, a FILE.part already there
// untouched.
func TestBackupFileUploadsAndDownloads(t *testing.T) {
	b := newBackupBed(t)
	info := b.upload(t)
	sum := sha256.Sum256(b.data)
	if info.Size != int64(len(b.data)) || info.SHA256 != hex.EncodeToString(sum[:]) || info.Instance != b.instance || info.DB != b.dbName {
		t.Fatalf("uploaded as %+v; the file is %d bytes of %x", info, len(b.data), sum)
	}
	if got, err := b.open(t, info.Bucket, info.Name, b.s1); err != nil || !bytes.Equal(got, b.data) {
		t.Fatalf("s1's agent opens %d bytes: %v", len(got), err)
	}
	dir := t.TempDir()
	to := filepath.Join(dir, "back.sql.gz")
	// Someone else's FILE.part: neither truncated nor taken.
	if err := os.WriteFile(to+".part", []byte("not ours"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := saveBackup(b.ctx, b.cl, b.admin, info, to); err != nil {
		t.Fatalf("download: %v", err)
	}
	if got, err := os.ReadFile(to); err != nil || !bytes.Equal(got, b.data) {
		t.Fatalf("downloaded %d bytes: %v", len(got), err)
	}
	if got, _ := os.ReadFile(to + ".part"); string(got) != "not ours" {
		t.Errorf("%s.part holds %q, not what it held", to, got)
	}
	if left := dirNames(t, dir); left != "back.sql.gz back.sql.gz.part" {
		t.Errorf("in the directory: %s", left)
	}
	if err := os.WriteFile(b.file, []byte("CREATE TABLE t;"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := uploadBackup(b.ctx, b.cl, b.admin, b.s1.Public(), events.DBInstance{Resource: events.Resource{Name: b.instance, Server: "s1"}, Databases: []events.DBDatabase{{Name: b.dbName, Owner: "u1"}}}, b.dbName, b.file); err == nil || !strings.Contains(err.Error(), "not a gzip file") {
		t.Errorf("a file that is not gzip: %v", err)
	}
}

// A backup that is not the one described is not downloaded: nothing is
// written, a file already at the place is left as it was, and nothing is
// left beside it.
func TestDamagedBackupIsNotDownloaded(t *testing.T) {
	b := newBackupBed(t)
	info := b.upload(t)
	obs, err := b.cl.conn.JS.ObjectStore(b.ctx, info.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	oi, err := obs.GetInfo(b.ctx, info.Name)
	if err != nil {
		t.Fatal(err)
	}
	oi.Metadata["sha256"] = strings.Repeat("cd", 32)
	if err := bus.UpdateBackupMeta(b.ctx, b.cl.conn.JS, info.Bucket, info.Name, oi.ObjectMeta); err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(t.TempDir(), "back.sql.gz")
	if err := os.WriteFile(to, []byte("yesterday's"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = saveBackup(b.ctx, b.cl, b.admin, info, to)
	if err == nil || !strings.Contains(err.Error(), "it is damaged: its checksum is") || !strings.HasSuffix(err.Error(), "nothing written") {
		t.Fatalf("download of a damaged backup: %v", err)
	}
	if got, _ := os.ReadFile(to); string(got) != "yesterday's" {
		t.Errorf("the file at the place holds %d bytes, not what it held", len(got))
	}
	if left := dirNames(t, filepath.Dir(to)); left != "back.sql.gz" {
		t.Errorf("in the directory: %s", left)
	}
}

// dirNames are the names in dir, sorted, joined by spaces.
func dirNames(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// A backup is copied to another server's store as it is read, still
// sealed, with its key resealed to that server's agent, which opens it
// byte for byte; a source missing a chunk is not copied (nothing is
// described in the other store).
func TestBackupIsCopiedSealedForAnotherServer(t *testing.T) {
	b := newBackupBed(t)
	info := b.upload(t)
	to := bus.BackupsBucket("s2")
	if err := sealFor(b.ctx, b.cl, b.admin, b.s2.Public(), info, to); err != nil {
		t.Fatalf("sealFor: %v", err)
	}
	if got, err := b.open(t, to, info.Name, b.s2); err != nil || !bytes.Equal(got, b.data) {
		t.Fatalf("s2's agent opens the copy's %d bytes: %v", len(got), err)
	}
	if _, err := b.open(t, to, info.Name, b.s1); err == nil {
		t.Error("s1's agent opens the copy made for s2")
	}
	copied := b.info(t, to, info.Name)
	if copied.SHA256 != info.SHA256 || copied.Size != info.Size {
		t.Errorf("the copy is described as %+v, the backup as %+v", copied, info)
	}

	second := b.upload(t)
	obs, err := b.cl.conn.JS.ObjectStore(b.ctx, second.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	oi, err := obs.GetInfo(b.ctx, second.Name)
	if err != nil {
		t.Fatal(err)
	}
	st, err := b.cl.conn.JS.Stream(b.ctx, "OBJ_"+second.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(b.ctx, "$O."+second.Bucket+".C."+oi.NUID)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(b.ctx, m.Sequence); err != nil {
		t.Fatal(err)
	}
	if err := sealFor(b.ctx, b.cl, b.admin, b.s2.Public(), second, to); !errors.Is(err, bus.ErrBackupDamaged) {
		t.Fatalf("sealFor of a backup missing a chunk: %v", err)
	}
	dst, err := b.cl.conn.JS.ObjectStore(b.ctx, to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst.GetInfo(b.ctx, second.Name); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("a copy cut short is described in %s: %v", to, err)
	}
}
