package bus_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/testutil"
)

// What PutBackup and UpdateBackupMeta write, nats.go's object store reads:
// every size around a chunk's, the digest checked by GetBytes, the list,
// and metadata changed in place. The store takes no rollup.
func TestBackupsAreReadByTheObjectStore(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 30*time.Second)
	obs, err := bus.EnsureBackupsStore(ctx, conn.JS, "s1")
	if err != nil {
		t.Fatal(err)
	}
	bucket := bus.BackupsBucket("s1")
	sizes := []int{0, 1, 128 * 1024, 128*1024 + 1, 300 * 1024}
	for _, n := range sizes {
		data := bytes.Repeat([]byte{byte(n)}, n)
		name := fmt.Sprintf("b%d", n)
		if _, err := bus.PutBackup(ctx, conn.JS, bucket, jetstream.ObjectMeta{Name: name, Metadata: map[string]string{"n": fmt.Sprint(n)}}, bytes.NewReader(data)); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		got, err := obs.GetBytes(ctx, name)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%d bytes read back as %d: %v", n, len(got), err)
		}
		r, info, err := bus.GetBackup(ctx, conn.JS, bucket, name)
		if err != nil {
			t.Fatalf("GetBackup of %d bytes: %v", n, err)
		}
		if got, err := io.ReadAll(iotest.HalfReader(r)); err != nil || !bytes.Equal(got, data) || info.Metadata["n"] != fmt.Sprint(n) {
			t.Errorf("GetBackup: %d bytes read back as %d, %v, metadata %v", n, len(got), err, info.Metadata)
		}
	}
	if err := bus.UpdateBackupMeta(ctx, conn.JS, bucket, "b1", jetstream.ObjectMeta{Name: "b1", Metadata: map[string]string{"n": "one"}}); err != nil {
		t.Fatal(err)
	}
	if info, err := obs.GetInfo(ctx, "b1"); err != nil || info.Metadata["n"] != "one" || info.Size != 1 {
		t.Errorf("after UpdateBackupMeta: %+v %v", info, err)
	}
	if got, err := obs.GetBytes(ctx, "b1"); err != nil || !bytes.Equal(got, []byte{1}) {
		t.Errorf("b1 after UpdateBackupMeta: %q %v", got, err)
	}
	list, err := obs.List(ctx)
	if err != nil || len(list) != len(sizes) {
		t.Errorf("listed %d objects (%v), want %d", len(list), err, len(sizes))
	}
	st, err := conn.JS.Stream(ctx, "OBJ_"+bucket)
	if err != nil || st.CachedInfo().Config.AllowRollup {
		t.Errorf("the backups store takes rollups (%v)", err)
	}
}

// GetBackup reads a backup a chunk at a time and fails at its end unless
// it read the chunks stored: one deleted, or an object whose description
// is not its chunks', is ErrBackupDamaged once what is there was read.
func TestGetBackupChecksTheChunks(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 30*time.Second)
	if _, err := bus.EnsureBackupsStore(ctx, conn.JS, "s1"); err != nil {
		t.Fatal(err)
	}
	bucket := bus.BackupsBucket("s1")
	data := []byte(strings.Repeat("0123456789abcdef", 3*128*1024/16+5))
	info, err := bus.PutBackup(ctx, conn.JS, bucket, jetstream.ObjectMeta{Name: "b"}, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	// Another object's chunks in between: read past, not taken.
	if _, err := bus.PutBackup(ctx, conn.JS, bucket, jetstream.ObjectMeta{Name: "other"}, bytes.NewReader(data[:1000])); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.PutBackup(ctx, conn.JS, bucket, jetstream.ObjectMeta{Name: "c"}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	read := func(name string) ([]byte, error) {
		r, _, err := bus.GetBackup(ctx, conn.JS, bucket, name)
		if err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	}
	if got, err := read("c"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("c: %d bytes, %v", len(got), err)
	}
	// Its description's digest changed: the chunks are not the ones described.
	info.Digest, info.ModTime = "SHA-256="+strings.Repeat("A", 43)+"=", time.Time{}
	described, _ := json.Marshal(info)
	if _, err := conn.JS.Publish(ctx, "$O."+bucket+".M."+base64.URLEncoding.EncodeToString([]byte("b")), described); err != nil {
		t.Fatal(err)
	}
	st, err := conn.JS.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := read("b"); !errors.Is(err, bus.ErrBackupDamaged) || !bytes.Equal(got, data) {
		t.Errorf("b described with another digest: %d bytes, %v", len(got), err)
	}
	// A chunk of c deleted: the ones there are read, then the error.
	ci, err := conn.JS.ObjectStore(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	cinfo, _ := ci.GetInfo(ctx, "c")
	m, err := st.GetLastMsgForSubject(ctx, "$O."+bucket+".C."+cinfo.NUID)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, m.Sequence); err != nil {
		t.Fatal(err)
	}
	if got, err := read("c"); !errors.Is(err, bus.ErrBackupDamaged) || len(got) != 3*128*1024 {
		t.Errorf("c without its last chunk: %d bytes, %v", len(got), err)
	}
	if _, _, err := bus.GetBackup(ctx, conn.JS, bucket, "none"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("a backup that is not there: %v", err)
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

// A reader that ends in io.ErrUnexpectedEOF (a body cut short), at a
// chunk's edge or within one, fails PutBackup and leaves nothing described:
// only the reader's own io.EOF is the end.
func TestPutBackupOfABodyCutShortDescribesNothing(t *testing.T) {
	conn, _ := testutil.Bus(t)
	ctx := ctxT(t, 30*time.Second)
	obs, err := bus.EnsureBackupsStore(ctx, conn.JS, "s1")
	if err != nil {
		t.Fatal(err)
	}
	bucket := bus.BackupsBucket("s1")
	for _, n := range []int{0, 1000, 128 * 1024, 2*128*1024 + 7} {
		name := fmt.Sprintf("cut%d", n)
		_, err := bus.PutBackup(ctx, conn.JS, bucket, jetstream.ObjectMeta{Name: name}, &cutBody{bytes.NewReader(make([]byte, n))})
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%d bytes cut short: %v, want io.ErrUnexpectedEOF", n, err)
		}
		if _, err := obs.GetInfo(ctx, name); !errors.Is(err, jetstream.ErrObjectNotFound) {
			t.Errorf("%d bytes cut short are described: %v", n, err)
		}
	}
}
