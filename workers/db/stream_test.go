package db

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/seal"
	"github.com/skeinhq/skein/internal/testutil"
)

// dumpBed is the database worker's rig with a container that dumps and
// restores as the scripts would, as far as files go: the dump script
// leaves its gzip in its file and prints its sums, rm removes, and a
// restore records what its file held when it ran.
type dumpBed struct {
	*dbRig
	admin *seal.Keys
	mu    sync.Mutex
	// dump is what the next dump writes (dumpSize bytes of sum dumpSum when
	// nil: PullHook makes them).
	dump     []byte
	dumpSum  string
	dumpSize int64
	// dumpExit is the dump script's exit status; it leaves its file then.
	dumpExit int
	// restored is what each restore's file held.
	restored [][]byte
	// removed are the sizes of the files of restores when they were removed.
	removed []int
	// dumpRemovals counts the removals of dumps' files.
	dumpRemovals int
	// dumpGarbled has the dump exit 0 but print no sums.
	dumpGarbled bool
	// busy has each prelude find an earlier attempt still running.
	busy bool
	// preludes are the files of the scripts whose prelude ran.
	preludes []string
}

func newDumpBed(t *testing.T) *dumpBed {
	t.Helper()
	b := &dumpBed{dbRig: newDBRig(t)}
	var err error
	if b.admin, err = seal.New(); err != nil {
		t.Fatal(err)
	}
	// Called with the fake's lock held: Files is the fake's to touch.
	b.fake.ExecHook = func(name string, argv []string) (container.ExecResult, error) {
		script := argv[len(argv)-1]
		switch {
		case argv[0] == "rm":
			b.mu.Lock()
			for _, f := range argv[3:] {
				if data, ok := b.fake.Files[name+":"+f]; ok && strings.Contains(f, "skein-restore-") {
					b.removed = append(b.removed, len(data))
				}
				delete(b.fake.Files, name+":"+f)
			}
			if strings.HasPrefix(argv[3], scratchDir+"/skein-dump-") {
				b.dumpRemovals++
			}
			b.mu.Unlock()
			return container.ExecResult{}, nil
		case argv[0] == "list-files":
			var list []string
			for k := range b.fake.Files {
				list = append(list, k)
			}
			return container.ExecResult{Stdout: []byte(strings.Join(list, "\n"))}, nil
		}
		if strings.Contains(script, "flock -n 9") {
			// The prelude: the command's lock, and its earlier attempts' files removed.
			f := scriptFile(t, script)
			b.mu.Lock()
			busy := b.busy
			b.preludes = append(b.preludes, f)
			b.mu.Unlock()
			if busy {
				return container.ExecResult{Code: exitBusy, Stderr: []byte("an earlier attempt of this command still runs")}, nil
			}
			id := f[strings.LastIndex(f, "-")+1 : strings.Index(f, ".")]
			for k := range b.fake.Files {
				if p := strings.TrimPrefix(k, name+":"); p != k && strings.Contains(p, "-"+id+".") && p != f && p != f+".part" {
					delete(b.fake.Files, k)
				}
			}
		}
		switch {
		case strings.Contains(script, "mariadb-dump"):
			f := scriptFile(t, script)
			b.mu.Lock()
			defer b.mu.Unlock()
			sum, size := b.dumpSum, b.dumpSize
			if b.dump != nil {
				b.fake.Files[name+":"+f] = bytes.Clone(b.dump)
				s := sha256.Sum256(b.dump)
				sum, size = hex.EncodeToString(s[:]), int64(len(b.dump))
			}
			if b.dumpExit != 0 {
				return container.ExecResult{Code: b.dumpExit, Stderr: []byte("mariadb-dump: Got error: 2013: Lost connection")}, nil
			}
			if b.dumpGarbled {
				return container.ExecResult{Stdout: []byte("gzip: stdout: No space left on device\n")}, nil
			}
			return container.ExecResult{Stdout: fmt.Appendf(nil, "%s  -\n%d\n", sum, size)}, nil
		case strings.Contains(script, "gunzip"):
			f := scriptFile(t, script)
			b.mu.Lock()
			defer b.mu.Unlock()
			// mv "$F.part" "$F", the restore, rm "$F".
			b.restored = append(b.restored, bytes.Clone(b.fake.Files[name+":"+f+".part"]))
			delete(b.fake.Files, name+":"+f+".part")
		case strings.Contains(script, "skein-sql"):
			// The tables of the database restored into: none.
			return container.ExecResult{Stdout: []byte("0\n")}, nil
		}
		return container.ExecResult{}, nil
	}
	return b
}

// scriptFile is the F=FILE a script names.
func scriptFile(t *testing.T, script string) string {
	_, rest, ok := strings.Cut(script, "F=")
	f, _, _ := strings.Cut(rest, ";")
	if !ok || f == "" {
		t.Errorf("no F= in %q", script)
	}
	return f
}

// backup takes a backup of db1's d1 and returns its description.
func (b *dumpBed) backup(t *testing.T) events.DBBackupInfo {
	t.Helper()
	res, err := b.call(t, events.TypeDBBackup, events.DBBackup{Instance: "db1", DB: "d1", To: b.admin.Public()})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	var info events.DBBackupInfo
	if err := json.Unmarshal(res.Output, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// restore restores backup into db1's d1.
func (b *dumpBed) restore(t *testing.T, backup string) error {
	t.Helper()
	return b.restoreInto(t, backup, "d1")
}

// restoreInto restores backup into db1's database db.
func (b *dumpBed) restoreInto(t *testing.T, backup, db string) error {
	t.Helper()
	_, err := b.call(t, events.TypeDBRestore, events.DBRestore{Instance: "db1", DB: db, Backup: backup})
	return err
}

// leftovers are the files of skein's dumps and restores still in db1,
// read under the fake's lock, by an Exec its hook answers.
func (b *dumpBed) leftovers(t *testing.T) []string {
	t.Helper()
	res, err := b.fake.Exec(b.ctx, "db1", "list-files")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range strings.Fields(string(res.Stdout)) {
		if strings.Contains(f, "skein-dump-") || strings.Contains(f, "skein-restore-") {
			out = append(out, f)
		}
	}
	return out
}

// A dump of many chunks is backed up through the fake container and the
// bus's store, described whole, and restored byte for byte; the dump's and
// the restore's files are removed, and the store holds nothing of the dump.
func TestBackupRestoresByteForByte(t *testing.T) {
	b := newDumpBed(t)
	b.dump = make([]byte, 9*seal.ChunkSize/2+77)
	rand.NewChaCha8([32]byte{1}).Read(b.dump)
	info := b.backup(t)
	want := sha256.Sum256(b.dump)
	if info.Size != int64(len(b.dump)) || info.SHA256 != hex.EncodeToString(want[:]) {
		t.Fatalf("backed up %d bytes of sha256 %s, the dump is %d of %x", info.Size, info.SHA256, len(b.dump), want)
	}
	obs, err := b.js.ObjectStore(b.ctx, info.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	oi, err := obs.GetInfo(b.ctx, info.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got := BackupInfo(oi); got.Size != info.Size || got.SHA256 != info.SHA256 || oi.Metadata[MetaKeyAgent] == "" || oi.Metadata[MetaKeyAdmin] == "" {
		t.Fatalf("the store describes it as %+v, metadata %v", got, oi.Metadata)
	}
	box, err := obs.GetBytes(b.ctx, info.Name)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(box, b.dump[1000:1032]) || !bytes.HasPrefix(box, []byte("skein-sealed-2\n")) {
		t.Fatal("the store holds the dump, or not sealed")
	}
	if left := b.leftovers(t); len(left) != 0 {
		t.Fatalf("left in the container after the backup: %v", left)
	}
	if err := b.restore(t, info.Name); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if len(b.restored) != 1 || !bytes.Equal(b.restored[0], b.dump) {
		t.Fatalf("restored %d times; the file held %d bytes, the dump is %d", len(b.restored), len(b.restored[0]), len(b.dump))
	}
	if left := b.leftovers(t); len(left) != 0 {
		t.Fatalf("left in the container after the restore: %v", left)
	}
}

// The plain dump in the container is removed whatever becomes of the
// backup. A dump that failed is an error, and no backup is listed; so is
// one that exited 0 but printed no sums, the error saying what it printed. An
// attempt whose reading of the dump failed, or read what is not the dump
// summed, removes it and lists nothing: the next attempt (the command is
// retried) takes the backup, listed once, from a file of its own; so does
// one whose reading was cut short (io.ErrUnexpectedEOF, as an HTTP body
// ends).
func TestDumpFileIsRemovedWhateverHappens(t *testing.T) {
	b := newDumpBed(t)
	b.dump = make([]byte, 2*seal.ChunkSize)
	rand.NewChaCha8([32]byte{7}).Read(b.dump)
	listed := func(t *testing.T) []*jetstream.ObjectInfo {
		obs, err := b.js.ObjectStore(b.ctx, bus.BackupsBucket(server))
		if err != nil {
			t.Fatal(err)
		}
		list, err := obs.List(b.ctx)
		if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
			t.Fatal(err)
		}
		return list
	}
	removals := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		n := b.dumpRemovals
		b.dumpRemovals = 0
		return n
	}

	b.mu.Lock()
	b.dumpExit = 2
	b.mu.Unlock()
	_, err := b.call(t, events.TypeDBBackup, events.DBBackup{Instance: "db1", DB: "d1", To: b.admin.Public()})
	if err == nil || !strings.Contains(err.Error(), "the dump of d1 failed (exit 2): mariadb-dump: Got error: 2013") {
		t.Fatalf("a failed dump: %v", err)
	}
	if left, n := b.leftovers(t), removals(); len(left) != 0 || n != 1 || len(listed(t)) != 0 {
		t.Fatalf("a failed dump: left %v, removed %d times, %d backups listed", left, n, len(listed(t)))
	}
	b.mu.Lock()
	b.dumpExit, b.dumpGarbled = 0, true
	b.mu.Unlock()
	_, err = b.call(t, events.TypeDBBackup, events.DBBackup{Instance: "db1", DB: "d1", To: b.admin.Public()})
	if err == nil || !strings.Contains(err.Error(), `the dump of d1 printed no checksum and size: "gzip: stdout: No space left on device"`) {
		t.Fatalf("a dump that printed no sums: %v", err)
	}
	if left, n := b.leftovers(t), removals(); len(left) != 0 || n != 1 || len(listed(t)) != 0 {
		t.Fatalf("a dump that printed no sums: left %v, removed %d times, %d backups listed", left, n, len(listed(t)))
	}
	b.mu.Lock()
	b.dumpGarbled = false
	b.mu.Unlock()

	for _, tc := range []struct {
		name  string
		first io.Reader
	}{
		{"its reading failed", io.MultiReader(bytes.NewReader(b.dump[:seal.ChunkSize]), iotest.ErrReader(errors.New("connection reset")))},
		{"it was not the dump summed", bytes.NewReader(b.dump[:len(b.dump)-1])},
		{"it was cut short", &cutBody{bytes.NewReader(b.dump[:seal.ChunkSize])}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pulls atomic.Int32
			var paths [2]atomic.Value
			b.fake.PullHook = func(name, path string) (io.ReadCloser, int64, error) {
				if n := pulls.Add(1); n <= 2 {
					paths[n-1].Store(path)
				}
				if pulls.Load() == 1 {
					return io.NopCloser(tc.first), -1, nil
				}
				return io.NopCloser(bytes.NewReader(b.dump)), int64(len(b.dump)), nil
			}
			before := len(listed(t))
			info := b.backup(t)
			if pulls.Load() != 2 {
				t.Fatalf("the dump was read %d times: the test did not test", pulls.Load())
			}
			// Each attempt its own file: an earlier one's exec may still run.
			p1, p2 := paths[0].Load().(string), paths[1].Load().(string)
			if p1 == p2 || !strings.HasPrefix(p1, scratchDir+"/skein-dump-") || !strings.HasSuffix(p1, ".1.gz") || !strings.HasSuffix(p2, ".2.gz") {
				t.Fatalf("the attempts read %s and %s", p1, p2)
			}
			if left, n := b.leftovers(t), removals(); len(left) != 0 || n != 2 {
				t.Fatalf("left %v, the dump removed %d times in 2 attempts", left, n)
			}
			list := listed(t)
			taken := 0
			for _, o := range list {
				if o.Name == info.Name && BackupInfo(o).SHA256 == info.SHA256 {
					taken++
				}
			}
			if len(list) != before+1 || taken != 1 {
				t.Fatalf("%d backups listed after %d, want the one taken", len(list), before)
			}
		})
	}
}

// A stored backup changed in any way is refused before anything is
// restored or made: a byte of its sealed data changed, its final chunk
// missing (refused only at its end, once the rest was in the container),
// its checksum not the dump's. The file written into the container is
// removed, no restore runs, and a database to make for it is not made.
func TestTamperedBackupIsNotRestored(t *testing.T) {
	b := newDumpBed(t)
	b.dump = make([]byte, 9*seal.ChunkSize/2+77)
	rand.NewChaCha8([32]byte{2}).Read(b.dump)
	sealedChunk := seal.ChunkSize + 16
	for _, tc := range []struct {
		name   string
		db     string
		tamper func(box []byte, meta jetstream.ObjectMeta) ([]byte, jetstream.ObjectMeta)
		want   string
	}{
		{"a byte changed", "d1", func(box []byte, meta jetstream.ObjectMeta) ([]byte, jetstream.ObjectMeta) {
			box[len(box)/2] ^= 0x20
			return box, meta
		}, "the sealed data is damaged or its key is another's"},
		{"the final chunk missing", "d1", func(box []byte, meta jetstream.ObjectMeta) ([]byte, jetstream.ObjectMeta) {
			return box[:len("skein-sealed-2\n")+4*sealedChunk], meta
		}, "the sealed data is damaged or its key is another's"},
		{"another checksum", "d1", func(box []byte, meta jetstream.ObjectMeta) ([]byte, jetstream.ObjectMeta) {
			meta.Metadata[metaSHA256] = strings.Repeat("ab", 32)
			return box, meta
		}, "it is damaged: its checksum is "},
		{"another checksum, into a database to make", "d9", func(box []byte, meta jetstream.ObjectMeta) ([]byte, jetstream.ObjectMeta) {
			meta.Metadata[metaSHA256] = strings.Repeat("ab", 32)
			return box, meta
		}, "it is damaged: its checksum is "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := b.backup(t)
			obs, err := b.js.ObjectStore(b.ctx, info.Bucket)
			if err != nil {
				t.Fatal(err)
			}
			oi, err := obs.GetInfo(b.ctx, info.Name)
			if err != nil {
				t.Fatal(err)
			}
			box, err := obs.GetBytes(b.ctx, info.Name)
			if err != nil {
				t.Fatal(err)
			}
			box, meta := tc.tamper(box, oi.ObjectMeta)
			if _, err := bus.PutBackup(b.ctx, b.js, info.Bucket, meta, bytes.NewReader(box)); err != nil {
				t.Fatal(err)
			}
			err = b.restoreInto(t, info.Name, tc.db)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("restore: %v, want %q", err, tc.want)
			}
			b.mu.Lock()
			restored, removed := len(b.restored), b.removed
			b.removed = nil
			b.mu.Unlock()
			if restored != 0 {
				t.Fatalf("restored %d times", restored)
			}
			// What was written of it into the container was there, and removed.
			if len(removed) != 1 || removed[0] < seal.ChunkSize {
				t.Fatalf("files of the restore removed: %v bytes, want the one written", removed)
			}
			if left := b.leftovers(t); len(left) != 0 {
				t.Fatalf("left in the container: %v", left)
			}
			rec, err := b.w.kind.Store.Get(b.ctx, bus.Key(server, "db1"))
			if err != nil || len(rec.Value.Databases) != 1 {
				t.Fatalf("db1's databases after the refusal: %+v %v", rec.Value.Databases, err)
			}
		})
	}
}

// A backup or restore whose earlier attempt still runs its script in the
// container (its prelude finds the command's lock held) is retried, never
// sharing that attempt's file, and is taken once the lock is free. A
// restore's file is written as its .part, and restored once moved.
func TestAttemptWaitsForAnEarlierOneStillRunning(t *testing.T) {
	b := newDumpBed(t)
	b.dump = make([]byte, seal.ChunkSize+9)
	rand.NewChaCha8([32]byte{8}).Read(b.dump)
	for _, what := range []string{"backup", "restore"} {
		info := events.DBBackupInfo{}
		if what == "restore" {
			info = b.backup(t)
		}
		b.mu.Lock()
		b.busy, b.preludes = true, nil
		b.mu.Unlock()
		// The lock is freed once two preludes were refused.
		stop := make(chan struct{})
		go func() {
			defer close(stop)
			testutil.Eventually(t, 20*time.Second, func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				if len(b.preludes) >= 2 {
					b.busy = false
					return true
				}
				return false
			}, "no retry of a %s refused", what)
		}()
		if what == "backup" {
			info = b.backup(t)
		} else if err := b.restore(t, info.Name); err != nil {
			t.Fatalf("restore: %v", err)
		}
		<-stop
		b.mu.Lock()
		preludes := b.preludes
		b.mu.Unlock()
		if len(preludes) < 3 || preludes[0] == preludes[len(preludes)-1] {
			t.Fatalf("%s: preludes ran for %v: want one file per attempt", what, preludes)
		}
		if left := b.leftovers(t); len(left) != 0 {
			t.Fatalf("%s: left %v", what, left)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.restored) != 1 || !bytes.Equal(b.restored[0], b.dump) {
		t.Fatalf("restored %d times", len(b.restored))
	}
}

// A container that answers a file's writing before it read the file to its
// end is not taken at its word: the end, where the checksum is checked,
// was not reached, so the restore fails and the file is removed.
func TestRestoreNeedsTheFileReadToItsEnd(t *testing.T) {
	b := newDumpBed(t)
	b.dump = make([]byte, 3*seal.ChunkSize)
	rand.NewChaCha8([32]byte{3}).Read(b.dump)
	info := b.backup(t)
	b.fake.PushHook = func(name, path string, r io.Reader, mode os.FileMode) error {
		_, err := io.CopyN(io.Discard, r, seal.ChunkSize)
		return err
	}
	if err := b.restore(t, info.Name); err == nil || !strings.Contains(err.Error(), "before its end") {
		t.Fatalf("restore: %v", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.restored) != 0 {
		t.Fatal("restored a file not known whole")
	}
}

// metaLostAck is a JetStream whose next publish of a backup's description
// lands but is heard as failed, once armed: an agent cut from the bus as
// its backup was described.
type metaLostAck struct {
	jetstream.JetStream
	armed *atomic.Bool
}

func (j metaLostAck) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.PublishMsg(ctx, m, opts...)
	if err == nil && strings.HasPrefix(m.Subject, "$O."+bus.BackupsBucket(server)+".M.") && j.armed.CompareAndSwap(true, false) {
		return nil, context.DeadlineExceeded
	}
	return ack, err
}

// A backup whose first attempt stored it whole but heard an error (its
// description's acknowledgement lost) is retried under the same name, kept
// in the command's journal, and found stored: one backup is listed, not two.
func TestRedeliveredBackupIsListedOnce(t *testing.T) {
	b := newDumpBed(t)
	b.dump = make([]byte, 2*seal.ChunkSize+3)
	rand.NewChaCha8([32]byte{9}).Read(b.dump)
	armed := &atomic.Bool{}
	armed.Store(true)
	b.w.cfg.JS = metaLostAck{JetStream: b.w.cfg.JS, armed: armed}
	info := b.backup(t)
	if armed.Load() {
		t.Fatal("the description's acknowledgement was never lost: the test did not test")
	}
	obs, err := b.js.ObjectStore(b.ctx, bus.BackupsBucket(server))
	if err != nil {
		t.Fatal(err)
	}
	list, err := obs.List(b.ctx)
	if err != nil || len(list) != 1 || list[0].Name != info.Name {
		names := []string{}
		for _, o := range list {
			names = append(names, o.Name)
		}
		t.Fatalf("listed %v (%v), want %s alone", names, err, info.Name)
	}
}

// cutBody ends as net/http's body does when its connection is cut short:
// with io.ErrUnexpectedEOF, not io.EOF.
type cutBody struct{ r io.Reader }

func (c *cutBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// memPeak samples the heap every few milliseconds until stop is called,
// which returns the highest heap in use and live heap (marked by the last
// collection) seen.
func memPeak() (stop func() (inuse, live uint64)) {
	var peakInuse, peakLive uint64
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		var ms runtime.MemStats
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		tick := time.NewTicker(3 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			metrics.Read(sample)
			peakInuse, peakLive = max(peakInuse, ms.HeapInuse), max(peakLive, sample[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() (uint64, uint64) { close(done); <-finished; return peakInuse, peakLive }
}

// A 256 MiB dump (DUMP_MIB sets another size) is backed up from the
// container into a real JetStream store, and restored into the container,
// with the heap in use (the embedded NATS server's included) never 64 MiB
// above what it was, the live heap never 32 MiB: the dump is streamed,
// never held.
func TestBackupStreamsABigDump(t *testing.T) {
	if testing.Short() {
		t.Skip("256 MiB through the store")
	}
	size := int64(256 << 20)
	if s := os.Getenv("DUMP_MIB"); s != "" {
		if _, err := fmt.Sscan(s, &size); err != nil {
			t.Fatalf("DUMP_MIB=%s: %v", s, err)
		}
		size <<= 20
	}
	seed := [32]byte{4}
	dump := func() io.Reader { return io.LimitReader(rand.NewChaCha8(seed), size) }
	h := sha256.New()
	if _, err := io.Copy(h, dump()); err != nil {
		t.Fatal(err)
	}
	b := newDumpBed(t)
	b.dumpSum, b.dumpSize = hex.EncodeToString(h.Sum(nil)), size
	b.fake.PullHook = func(name, path string) (io.ReadCloser, int64, error) { return io.NopCloser(dump()), size, nil }
	var pushed atomic.Value
	b.fake.PushHook = func(name, path string, r io.Reader, mode os.FileMode) error {
		h := sha256.New()
		n, err := io.Copy(h, r)
		pushed.Store(fmt.Sprintf("%x %d", h.Sum(nil), n))
		return err
	}
	// The heap in use is at most what is held plus what the collector
	// lets pile up before it runs: that pile is kept to half of what is
	// held, so that what is measured is what is held.
	defer debug.SetGCPercent(debug.SetGCPercent(50))
	const budget, liveBudget = 64 << 20, 32 << 20
	measure := func(what string, do func()) {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		stop := memPeak()
		start := time.Now()
		do()
		inuse, live := stop()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		t.Logf("%s of %d MiB in %v: heap in use %d MiB before, at most %d MiB (+%d MiB), live at most %d MiB; %d MiB allocated in all",
			what, size>>20, time.Since(start).Round(time.Millisecond), before.HeapInuse>>20, inuse>>20, (inuse-min(inuse, before.HeapInuse))>>20, live>>20, (after.TotalAlloc-before.TotalAlloc)>>20)
		if inuse > before.HeapInuse+budget || live > before.HeapAlloc+liveBudget {
			t.Errorf("%s: the heap in use grew by %d MiB (at most %d), the live heap to %d MiB from %d (at most +%d): the dump is held",
				what, (inuse-min(inuse, before.HeapInuse))>>20, budget>>20, live>>20, before.HeapAlloc>>20, liveBudget>>20)
		}
	}
	var info events.DBBackupInfo
	measure("the backup", func() { info = b.backup(t) })
	if info.Size != size || info.SHA256 != b.dumpSum {
		t.Fatalf("backed up %d bytes of %s", info.Size, info.SHA256)
	}
	measure("the restore", func() {
		if err := b.restore(t, info.Name); err != nil {
			t.Fatalf("restore: %v", err)
		}
	})
	if got := pushed.Load(); got != fmt.Sprintf("%s %d", b.dumpSum, size) {
		t.Fatalf("the container was given %v, the dump is %s %d", got, b.dumpSum, size)
	}
}

// A backup is described (listed, with its size and checksum) only once
// all of it is stored and it is the dump that was described: a dump that
// is not the one summed, or whose reading fails, or cut short as an HTTP
// body is (io.ErrUnexpectedEOF), leaves nothing listed.
func TestStoreBackupDescribesOnlyAWholeBackup(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obs, err := bus.EnsureBackupsStore(ctx, conn.JS, server)
	if err != nil {
		t.Fatal(err)
	}
	agent, _ := seal.New()
	admin, _ := seal.New()
	dump := make([]byte, 3*seal.ChunkSize+5)
	rand.NewChaCha8([32]byte{6}).Read(dump)
	sum := sha256.Sum256(dump)
	meta := func(name string) jetstream.ObjectMeta {
		return jetstream.ObjectMeta{Name: name, Metadata: map[string]string{metaSHA256: hex.EncodeToString(sum[:]), metaSize: fmt.Sprint(len(dump))}}
	}
	other := bytes.Clone(dump)
	other[len(other)-1] ^= 1
	for _, tc := range []struct {
		name string
		src  io.Reader
		want string
	}{
		{"another-dump", bytes.NewReader(other), "it changed while it was read"},
		{"a-shorter-one", bytes.NewReader(dump[:len(dump)-1]), "it changed while it was read"},
		{"a-failed-read", io.MultiReader(bytes.NewReader(dump[:2*seal.ChunkSize]), iotest.ErrReader(errors.New("connection reset"))), "connection reset"},
		{"a-body-cut-short", &cutBody{bytes.NewReader(dump[:2*seal.ChunkSize])}, "unexpected EOF"},
		{"a-body-cut-within-a-chunk", &cutBody{bytes.NewReader(dump[:seal.ChunkSize+100])}, "unexpected EOF"},
	} {
		err := StoreBackup(ctx, conn.JS, bus.BackupsBucket(server), meta(tc.name), tc.src, agent.Public(), admin.Public())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if _, err := obs.GetInfo(ctx, tc.name); !errors.Is(err, jetstream.ErrObjectNotFound) {
			t.Errorf("%s is described: %v", tc.name, err)
		}
	}
	if err := StoreBackup(ctx, conn.JS, bus.BackupsBucket(server), meta("whole"), bytes.NewReader(dump), agent.Public(), admin.Public()); err != nil {
		t.Fatal(err)
	}
	// The same backup stored again (a redelivery) is stored once.
	st, err := conn.JS.Stream(ctx, "OBJ_"+bus.BackupsBucket(server))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := st.Info(ctx)
	if err := StoreBackup(ctx, conn.JS, bus.BackupsBucket(server), meta("whole"), bytes.NewReader(dump), agent.Public(), admin.Public()); err != nil {
		t.Fatal(err)
	}
	if after, _ := st.Info(ctx); after.State.Msgs != before.State.Msgs {
		t.Errorf("whole stored again: %d messages in the store, %d before", after.State.Msgs, before.State.Msgs)
	}
	list, err := obs.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "whole" || BackupInfo(list[0]).SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("listed %v (%v), want whole alone, described", list, err)
	}
	box, oi, err := bus.GetBackup(ctx, conn.JS, bus.BackupsBucket(server), "whole")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := OpenBackup(box, oi.Metadata, agent, MetaKeyAgent)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(plain); err != nil || !bytes.Equal(got, dump) {
		t.Fatalf("whole opens as %d bytes: %v", len(got), err)
	}
}
