package db

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/seal"
)

// A backup is sealed to its server's agent and the admin: each opens it, and
// another agent or anyone reading the store gets neither the dump nor its key;
// the admin reseals it to another agent without touching the data.
func TestBackupOpensForItsAgentAndTheAdminOnly(t *testing.T) {
	var dump bytes.Buffer
	zw := gzip.NewWriter(&dump)
	zw.Write([]byte(strings.Repeat("INSERT INTO t VALUES (42, 'secret-row');\n", 100)))
	zw.Close()
	plain := dump.Bytes()
	agent, _ := seal.New()
	admin, _ := seal.New()
	other, _ := seal.New()
	sum := sha256.Sum256(plain)
	meta := map[string]string{metaSHA256: hex.EncodeToString(sum[:])}
	box := sealBackup(t, plain, agent.Public(), admin.Public(), meta)
	if bytes.Contains(box, plain[:16]) || bytes.HasPrefix(box, []byte{0x1f, 0x8b}) {
		t.Fatal("the stored backup holds the dump")
	}
	if _, err := gzip.NewReader(bytes.NewReader(box)); err == nil {
		t.Error("the stored backup reads as gzip")
	}
	for _, r := range []struct {
		k      Keyring
		reader string
	}{{agent, MetaKeyAgent}, {admin, MetaKeyAdmin}} {
		got, err := openBackup(box, meta, r.k, r.reader)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("%s: %v", r.reader, err)
		}
	}
	if _, err := openBackup(box, meta, other, MetaKeyAgent); err == nil || !strings.Contains(err.Error(), "not sealed to this server's agent") {
		t.Errorf("another agent: %v", err)
	}
	if _, err := openBackup(box, meta, other, MetaKeyAdmin); err == nil || !strings.Contains(err.Error(), admin.Public()) {
		t.Errorf("another admin key: %v, want the key it is sealed to named", err)
	}
	moved, err := ResealBackup(meta, admin, other.Public())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := openBackup(box, moved, other, MetaKeyAgent); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("resealed to another agent: %v", err)
	}
	if _, err := ResealBackup(meta, other, agent.Public()); err == nil {
		t.Error("a key that is not the admin's resealed it")
	}
	meta[metaSHA256] = strings.Repeat("0", 64)
	if _, err := openBackup(box, meta, agent, MetaKeyAgent); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("a wrong checksum: %v", err)
	}
	if _, err := openBackup(box, map[string]string{}, agent, MetaKeyAgent); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Errorf("a backup with no key: %v", err)
	}
}

// sealBackup seals plain as SealBackup does into a backup's stream.
func sealBackup(t *testing.T, plain []byte, agentKey, adminKey string, meta map[string]string) []byte {
	t.Helper()
	var box bytes.Buffer
	w, err := SealBackup(&box, agentKey, adminKey, meta)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return box.Bytes()
}

// openBackup reads what OpenBackup hands out to its end.
func openBackup(box []byte, meta map[string]string, k Keyring, reader string) ([]byte, error) {
	r, err := OpenBackup(bytes.NewReader(box), meta, k, reader)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// The dump script, run by bash with stand-ins for mariadb-dump, su and
// pg_dump: the gzip lands in the file, root's alone, and what it prints is
// the file's SHA-256 and size; a dump that fails fails the script (pipefail)
// and prints no checksum.
func TestDumpScriptWritesTheFileAndItsSums(t *testing.T) {
	for _, tool := range []string{"bash", "gzip", "sha256sum", "wc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
	}
	bin := t.TempDir()
	stub := func(name, body string) {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stub("mariadb-dump", `[ "$DUMP_FAILS" ] && { echo 'CREATE TABLE half'; echo 'mariadb-dump: Got error: 2013' >&2; exit 2; }; echo "-- dump of $*"; echo "INSERT INTO t VALUES (1, 'row');"`)
	stub("pg_dump", `[ "$DUMP_FAILS" ] && { echo 'pg_dump: error: connection failed' >&2; exit 1; }; echo "-- pg_dump $*"; echo "COPY t FROM stdin;"`)
	stub("su", `exec /bin/sh -c "$5"`)
	for _, kind := range []string{events.DBMySQL, events.DBPostgreSQL} {
		dir := filepath.Join(t.TempDir(), "skein")
		file := filepath.Join(dir, "skein-dump-0123abcd.1.gz")
		script, err := dumpScript(kind, "wpdb", scratchFile{dir: dir, id: "0123abcd", path: file})
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("bash", "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(file)
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		plain, _ := io.ReadAll(zr)
		if !strings.Contains(string(plain), "wpdb") || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: the file holds %q, mode %v", kind, plain, fi.Mode())
		}
		sum, size, ok := dumpSums(out)
		want := sha256.Sum256(data)
		if !ok || sum != hex.EncodeToString(want[:]) || size != int64(len(data)) {
			t.Errorf("%s printed %q: %s %d %v, the file is %x, %d bytes", kind, out, sum, size, ok, want, len(data))
		}
		cmd = exec.Command("bash", "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "DUMP_FAILS=1")
		out, err = cmd.Output()
		if err == nil || len(out) != 0 {
			t.Errorf("%s: a failed dump: %v, printed %q", kind, err, out)
		}
	}
	for _, bad := range []string{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  -\n", "zz  -\n12\n", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  -\n-1\n"} {
		if _, _, ok := dumpSums([]byte(bad)); ok {
			t.Errorf("%q read as sums", bad)
		}
	}
}

// The scratch prelude, run by bash in a directory of the test's: it makes
// the directory, root's (its runner's) alone; it refuses one that is
// anyone's to write in, or a link, touching nothing; it refuses while the
// command's lock is held (an earlier attempt still running), touching
// nothing; and it removes the files of the command's earlier attempts,
// keeping this attempt's and other commands'.
func TestScratchPreludeLocksAndSweeps(t *testing.T) {
	for _, tool := range []string{"bash", "flock", "stat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
	}
	run := func(f scratchFile) (int, string) {
		cmd := exec.Command("bash", "-c", f.prelude()+"echo ran")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), stderr.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	at := func(dir string, n int) scratchFile {
		return scratchFile{dir: dir, id: "0123abcd", path: fmt.Sprintf("%s/skein-restore-0123abcd.%d.gz", dir, n)}
	}
	base := t.TempDir()
	dir := filepath.Join(base, "skein")
	if code, out := run(at(dir, 1)); code != 0 || out != "ran\n" {
		t.Fatalf("a new directory: exit %d, %q", code, out)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the directory: %v %v", fi.Mode(), err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o777); err != nil || os.Chmod(open, 0o777) != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{open, link} {
		if code, out := run(at(bad, 1)); code != exitNotOwn || !strings.Contains(out, "not a directory root's alone") {
			t.Errorf("%s: exit %d, %q", bad, code, out)
		}
	}
	files := []string{"skein-dump-0123abcd.1.gz", "skein-restore-0123abcd.1.gz.part", "skein-restore-0123abcd.2.gz", "skein-restore-0123abcd.3.gz.part", "skein-dump-feedbeef.1.gz"}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, "0123abcd.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if code, out := run(at(dir, 3)); code != exitBusy || !strings.Contains(out, "an earlier attempt of this command still runs") {
		t.Errorf("the lock held: exit %d, %q", code, out)
	}
	left := func() []string {
		var names []string
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".lock") {
				names = append(names, e.Name())
			}
		}
		return names
	}
	if got := left(); len(got) != len(files) {
		t.Errorf("a refused prelude touched the files: %v", got)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if code, out := run(at(dir, 3)); code != 0 || out != "ran\n" {
		t.Fatalf("the lock free: exit %d, %q", code, out)
	}
	if got := strings.Join(left(), " "); got != "skein-dump-feedbeef.1.gz skein-restore-0123abcd.3.gz.part" {
		t.Errorf("left after the sweep: %s", got)
	}
}
