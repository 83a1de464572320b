//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rssLimit is what a process may hold while a backup streams through it.
const rssLimit = 200 << 20

// rssWatch samples a process's resident set every 50 ms and keeps the most.
type rssWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	max  int64
}

func watchRSS(pid int) *rssWatch {
	w := &rssWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			if kb := vmRSS(pid); kb > 0 {
				w.mu.Lock()
				w.max = max(w.max, kb<<10)
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

// end stops the sampling and returns the most resident bytes seen.
func (w *rssWatch) end() int64 {
	close(w.stop)
	<-w.done
	return w.max
}

// vmRSS is a process's resident set in KiB (0 when it is gone).
func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// A backup is streamed, never held: a MariaDB database of SKEIN_BACKUP_MIB
// MiB (default 256) of random bytes is backed up, restored into another
// database and downloaded with `backupdb --to`, with agent s1's resident
// set (and the CLI's, for the download) under 200 MiB throughout; the
// restored rows equal the source's, and no plain dump stays in the
// container's /var/tmp/skein (root's alone).
func TestBackupIsStreamed(t *testing.T) {
	dumpOnFailure(t)
	mib := 256
	if v, err := strconv.Atoi(os.Getenv("SKEIN_BACKUP_MIB")); err == nil && v > 0 {
		mib = v
	}
	t.Cleanup(func() { _, _, _ = skein("deldbinstance", "big1", "--purge") })
	mustSkeinIn(t, "Big-pw-7-Hq2m\n", "adddb", "mysql", "s1", "biguser", "bigdb", "-n", "big1", "-p", "-")
	// 1 KiB rows, 64 MiB to a statement.
	rows := mib << 10
	start := time.Now()
	script := fmt.Sprintf("set -e; mariadb bigdb -e 'CREATE TABLE r (id INT PRIMARY KEY, b VARBINARY(1024))'; "+
		"for s in $(seq 1 65536 %d); do e=$((s + 65535)); [ $e -gt %d ] && e=%d; mariadb bigdb -e \"INSERT INTO r SELECT seq, RANDOM_BYTES(1024) FROM seq_${s}_to_${e}\"; done", rows, rows, rows)
	if out, err := inContainer("big1", "skein-s1", script); err != nil {
		t.Fatalf("filling bigdb: %v %s", err, out)
	}
	sums := func(db string) string {
		out, err := inContainer("big1", "skein-s1", "mariadb --batch --skip-column-names "+db+" -e 'SELECT COUNT(*), SUM(CRC32(b)) FROM r'")
		if err != nil {
			t.Fatalf("reading %s: %v %s", db, err, out)
		}
		return strings.Join(strings.Fields(out), " ")
	}
	want := sums("bigdb")
	if !strings.HasPrefix(want, strconv.Itoa(rows)+" ") {
		t.Fatalf("bigdb holds %q, want %d rows", want, rows)
	}
	t.Logf("bigdb: %d rows of 1 KiB random bytes written in %.1fs", rows, time.Since(start).Seconds())

	// The CLI with room for a big database: 10 minutes.
	long := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, skeinBin, append([]string{"--nats", natsURL, "--creds", adminCreds, "--timeout", "9m"}, args...)...)
		var e bytes.Buffer
		cmd.Stderr = &e
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("skein %s: %v %s%s", strings.Join(args, " "), err, out, e.String())
		}
		return string(out)
	}
	agent := agents["s1"].cmd.Process.Pid
	before := vmRSS(agent) << 10
	w := watchRSS(agent)
	start = time.Now()
	out := long("backupdb", "big1", "bigdb")
	backedUp := time.Since(start)
	name := strings.Fields(strings.SplitN(out, ": ", 2)[1])[0]
	start = time.Now()
	long("restoredb", "big1", "bigcopy", name)
	restored := time.Since(start)
	agentMax := w.end()
	if got := sums("bigcopy"); got != want {
		t.Errorf("restored rows: %q, the source's %q", got, want)
	}

	// The download, through the CLI: its resident set too.
	file := filepath.Join(t.TempDir(), "big.sql.gz")
	cmd := exec.CommandContext(context.Background(), skeinBin, "--nats", natsURL, "--creds", adminCreds, "--timeout", "9m", "backupdb", "big1", "bigdb", "--to", file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cw, aw := watchRSS(cmd.Process.Pid), watchRSS(agent)
	err := cmd.Wait()
	cliMax, agentMax2 := cw.end(), aw.end()
	if err != nil {
		t.Fatalf("backupdb --to: %v %s", err, stderr.String())
	}
	downloaded := time.Since(start)
	fi, err := os.Stat(file)
	if err != nil || fi.Size() < int64(mib)<<20 {
		t.Errorf("the downloaded file: %v, %d bytes, want at least %d MiB (random bytes do not compress)", err, fi.Size(), mib)
	}
	// Each command leaves its lock file, nothing else.
	left, _ := inContainer("big1", "skein-s1", "ls -A /var/tmp/skein/ | grep -v '[.]lock$' || true")
	if strings.TrimSpace(left) != "" {
		t.Errorf("plain dumps left in the container: %q", left)
	}
	if mode, _ := inContainer("big1", "skein-s1", "stat -c %u:%a /var/tmp/skein"); mode != "0:700" {
		t.Errorf("the dumps' directory is %q, want root's alone (0:700)", mode)
	}
	t.Logf("%d MiB database: backup %.1fs, restore %.1fs, backup and download %.1fs; agent s1's resident set %d MiB before, at most %d MiB backing up and restoring, %d MiB during the download; the CLI's at most %d MiB",
		mib, backedUp.Seconds(), restored.Seconds(), downloaded.Seconds(), before>>20, agentMax>>20, agentMax2>>20, cliMax>>20)
	for what, n := range map[string]int64{"agent s1 backing up and restoring": agentMax, "agent s1 during the download": agentMax2, "the CLI downloading": cliMax} {
		if n > rssLimit {
			t.Errorf("%s held %d MiB, want under %d MiB", what, n>>20, rssLimit>>20)
		}
	}
}
