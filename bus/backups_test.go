package bus_test

import (
	"bytes"
	"fmt"
	"testing"
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
