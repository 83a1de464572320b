//go:build e2e

package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
)

// skeinIn runs the CLI with stdin.
func skeinIn(stdin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, skeinBin, append([]string{"--nats", natsURL, "--creds", adminCreds, "--timeout", "4m"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), err
}

func mustSkeinIn(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := skeinIn(stdin, args...)
	if err != nil {
		t.Fatalf("skein %v: %v\nstdout: %s\nstderr: %s", args, err, out, errOut)
	}
	return out
}

// pushFile writes data into a container's file through stdin (a password
// never goes on a command line).
func pushFile(t *testing.T, container, project, path, data string) {
	t.Helper()
	cmd := exec.Command("incus", "file", "push", "-", container+path, "--project", project, "--mode", "0600")
	cmd.Stdin = strings.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pushing %s into %s: %v %s", path, container, err, out)
	}
}

// inContainer runs a shell command in a container and returns its output and error.
func inContainer(container, project, script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "incus", "exec", container, "--project", project, "--", "sh", "-c", script).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// psWatch samples the processes' arguments on the host and in containers
// every 50 ms until stopped, and reports whether any held secret.
type psWatch struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	samples int
	found   []string
}

func watchPS(secrets []string, containers map[string]string) *psWatch {
	w := &psWatch{stop: make(chan struct{}), done: make(chan struct{})}
	first := make(chan struct{})
	defer func() { <-first }() // one sample is taken before the command starts
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			outs := map[string]string{}
			if out, err := exec.Command("ps", "axww", "-o", "args").CombinedOutput(); err == nil {
				outs["host"] = string(out)
			}
			for c, project := range containers {
				if out, err := exec.Command("incus", "exec", c, "--project", project, "--", "ps", "axww", "-o", "args").CombinedOutput(); err == nil {
					outs[c] = string(out)
				}
			}
			w.mu.Lock()
			w.samples++
			for where, out := range outs {
				for _, s := range secrets {
					if strings.Contains(out, s) {
						w.found = append(w.found, where)
					}
				}
			}
			w.mu.Unlock()
			if w.samples == 1 {
				close(first)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return w
}

func (w *psWatch) end(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	if len(w.found) > 0 {
		t.Errorf("a password was in a process's arguments: %v", w.found)
	}
	if w.samples < 2 {
		t.Errorf("ps was sampled only %d times", w.samples)
	}
	t.Logf("ps sampled %d times on the host and in the containers while commands ran: no password", w.samples)
}

// unreadable reads every message of a backup's object store with the
// credentials of role (as `nats stream get` does) and fails the test when
// what they hold is usable: the dump in clear, gzip data, or a part of it.
func unreadable(t *testing.T, b *events.DBBackupInfo, who string, role, inbox string) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command(skeinBin, append(append([]string{"creds"}, strings.Fields(role)...), "--data", dataDir, "-o", dir)...).CombinedOutput(); err != nil {
		t.Fatalf("creds %s: %v %s", role, err, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.creds"))
	nc, err := nats.Connect(natsURL, nats.UserCredentials(files[0]), nats.CustomInboxPrefix(inbox))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "OBJ_"+b.Bucket)
	if err != nil {
		t.Fatalf("%s cannot even see the stream (the attack needs it): %v", who, err)
	}
	var chunks bytes.Buffer
	read := 0
	for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		read++
		if strings.Contains(m.Subject, ".C.") {
			chunks.Write(m.Data)
		}
		for _, marker := range []string{"INSERT INTO", "CREATE TABLE", "v12345"} {
			if bytes.Contains(m.Data, []byte(marker)) {
				t.Errorf("%s read %q in clear in %s", who, marker, m.Subject)
			}
		}
	}
	if read == 0 || chunks.Len() < int(b.Size) {
		t.Fatalf("%s read %d messages, %d bytes of chunks: the test did not read the backup", who, read, chunks.Len())
	}
	if zr, err := gzip.NewReader(bytes.NewReader(chunks.Bytes())); err == nil {
		if _, err := io.ReadAll(zr); err == nil {
			t.Errorf("%s read the backup as gzip", who)
		}
	}
	t.Logf("%s read %d messages of %s (%d bytes of chunks): sealed, nothing usable", who, read, b.Bucket, chunks.Len())
}

// dsn reads the connection string dbinfo --dsn prints.
func dsn(t *testing.T, inst, db string) *url.URL {
	t.Helper()
	u, err := url.Parse(strings.TrimSpace(mustSkein(t, "dbinfo", inst, db, "--dsn")))
	if err != nil || u.User == nil {
		t.Fatalf("dbinfo --dsn: %v %v", u, err)
	}
	return u
}

// A MariaDB and a PostgreSQL instance: users own databases that the real
// clients reach from an allowed network (and not from another, nor with a
// wrong password), data that survives a restart, an agent's kill -9 and a
// re-created container, a password that rotates, bad input refused with
// nothing made, and passwords in clear nowhere.
func TestDatabases(t *testing.T) {
	dumpOnFailure(t)
	cleanup(t, "dbc2", "dbc3")
	t.Cleanup(func() {
		_, _, _ = skein("deldbinstance", "my1", "--purge")
		_, _, _ = skein("deldbinstance", "pg1", "--purge")
		_, _, _ = skein("delep", "consul-33")
	})
	w := tap(t)
	mustSkein(t, "launch", "skein-service", "dbc2", "-s", "s2")
	mustSkein(t, "launch", "skein-service", "dbc3", "-s", "s3")
	mustSkein(t, "addep", "s3", "10.77.3.33", "-n", "consul-33")
	allow := "10.77.2.0/24" // s2's containers: dbc2 is in, dbc3 (s3) is out
	const pw1, pw2, pw3, pgpw, pgpw2 = "Known-pw-1-aZ9x", "Rotated-pw-2-Qm7k", "Recreated-pw-4-Vn2c", "Pg-known-pw-3-Lw4e", "Pg-second-pw-5-Jd8r"

	ps := watchPS([]string{pw1, pw2, pgpw}, map[string]string{"my1": "skein-s1", "pg1": "skein-s3"})
	out := mustSkeinIn(t, pw1+"\n", "adddb", "mysql", "s1", "wpuser", "wpdb", "-n", "my1", "-a", allow, "-p", "-")
	if !strings.Contains(out, "added mysql instance my1 on s1") || strings.Contains(out, pw1) {
		t.Errorf("adddb said %q", out)
	}
	mustSkeinIn(t, pgpw+"\n", "adddb", "postgresql", "s3", "pguser", "pgdb", "-n", "pg1", "-a", allow, "-p", "-")
	ps.end(t)

	my := dsn(t, "my1", "wpdb")
	if pw, _ := my.User.Password(); pw != pw1 || my.Scheme != "mysql" || my.Path != "/wpdb" || my.User.Username() != "wpuser" {
		t.Fatalf("dbinfo --dsn = %s", my.Redacted())
	}
	if plain := mustSkein(t, "dbinfo", "my1", "wpdb"); strings.Contains(plain, pw1) || !strings.HasPrefix(plain, "mysql://wpuser@") {
		t.Errorf("dbinfo without --dsn = %q", plain)
	}
	myCnf := func(pw string) string {
		return fmt.Sprintf("[client]\nhost=%s\nport=%s\nuser=%s\npassword=%s\ndatabase=wpdb\n", my.Hostname(), my.Port(), my.User.Username(), pw)
	}
	pushFile(t, "dbc2", "skein-s2", "/root/.my.cnf", myCnf(pw1))
	pushFile(t, "dbc2", "skein-s2", "/root/bad.cnf", myCnf("wrong-password"))
	pushFile(t, "dbc3", "skein-s3", "/root/.my.cnf", myCnf(pw1))
	mysql := func(container, project, args string) (string, error) {
		defaults := ""
		if rest, ok := strings.CutPrefix(args, "--defaults-file="); ok {
			// mariadb takes --defaults-file first only.
			file, more, _ := strings.Cut(rest, " ")
			defaults, args = "--defaults-file="+file+" ", more
		}
		return inContainer(container, project, "mariadb "+defaults+"--batch --skip-column-names --connect-timeout=5 "+args)
	}
	sum := func() string {
		out, _ := mysql("dbc2", "skein-s2", `-e "SELECT SUM(i) FROM t"`)
		return out
	}

	t.Run("the user reaches its MariaDB database through the DSN from an allowed network", func(t *testing.T) {
		if out, err := mysql("dbc2", "skein-s2", `-e "CREATE TABLE t (i INT); INSERT INTO t VALUES (40), (2); SELECT SUM(i) FROM t"`); err != nil || out != "42" {
			t.Fatalf("mariadb from dbc2: %v %q", err, out)
		}
		if out, err := mysql("dbc3", "skein-s3", `-e "SELECT 1"`); err == nil {
			t.Errorf("a client outside -a got in: %q", out)
		} else {
			t.Logf("from outside -a: %s", out)
		}
		if out, err := mysql("dbc2", "skein-s2", `--defaults-file=/root/bad.cnf -e "SELECT 1"`); err == nil || !strings.Contains(out, "Access denied") {
			t.Errorf("a wrong password: %v %q", err, out)
		}
	})

	t.Run("PostgreSQL: the same with psql", func(t *testing.T) {
		pg := dsn(t, "pg1", "pgdb")
		if pw, _ := pg.User.Password(); pw != pgpw || pg.Scheme != "postgres" || pg.Port() != "5432" {
			t.Fatalf("dbinfo --dsn = %s", pg.Redacted())
		}
		pgpass := fmt.Sprintf("%s:5432:pgdb:pguser:%s\n", pg.Hostname(), pgpw)
		pushFile(t, "dbc2", "skein-s2", "/root/.pgpass", pgpass)
		pushFile(t, "dbc3", "skein-s3", "/root/.pgpass", pgpass)
		psql := func(container, project, sql string) (string, error) {
			return inContainer(container, project, fmt.Sprintf(`PGCONNECT_TIMEOUT=5 psql -X -A -t -h %s -U pguser -d pgdb -c "%s"`, pg.Hostname(), sql))
		}
		if out, err := psql("dbc2", "skein-s2", "CREATE TABLE t (i int); INSERT INTO t VALUES (7); SELECT sum(i) FROM t"); err != nil || !strings.HasSuffix(out, "7") {
			t.Fatalf("psql from dbc2: %v %q", err, out)
		}
		if out, err := psql("dbc3", "skein-s3", "SELECT 1"); err == nil || !strings.Contains(out, "pg_hba.conf") {
			t.Errorf("a client outside -a: %v %q", err, out)
		}
		pushFile(t, "dbc2", "skein-s2", "/root/.pgpass", fmt.Sprintf("%s:5432:pgdb:pguser:wrong\n", pg.Hostname()))
		if out, err := psql("dbc2", "skein-s2", "SELECT 1"); err == nil || !strings.Contains(out, "password authentication failed") {
			t.Errorf("a wrong password: %v %q", err, out)
		}
	})

	t.Run("the data survives a restart of the instance and a kill -9 of its agent", func(t *testing.T) {
		mustSkein(t, "restart", "my1")
		eventually(t, 60*time.Second, func() bool { return sum() == "42" }, "the data is not there after a restart")
		agents["s1"].kill9()
		agents["s1"].start()
		eventually(t, 30*time.Second, func() bool { return serverStatus(t)["s1"].Status == "up" }, "s1 not up again")
		if got := sum(); got != "42" {
			t.Errorf("after the agent's kill -9: %q", got)
		}
		eventually(t, 30*time.Second, func() bool {
			out, _ := inContainer("dbc2", "skein-s2", "nslookup my1.service.consul")
			return strings.Contains(out, my.Hostname())
		}, "my1.service.consul does not resolve to %s", my.Hostname())
	})

	t.Run("dbpasswd: the old password is refused, the new one works", func(t *testing.T) {
		ps := watchPS([]string{pw1, pw2}, map[string]string{"my1": "skein-s1"})
		mustSkeinIn(t, pw2+"\n", "dbpasswd", "my1", "wpuser", "-p", "-")
		ps.end(t)
		if out, err := mysql("dbc2", "skein-s2", `-e "SELECT 1"`); err == nil || !strings.Contains(out, "Access denied") {
			t.Errorf("the old password still works: %v %q", err, out)
		}
		pushFile(t, "dbc2", "skein-s2", "/root/.my.cnf", myCnf(pw2))
		if got := sum(); got != "42" {
			t.Errorf("the new password: %q", got)
		}
		if pw, _ := dsn(t, "my1", "wpdb").User.Password(); pw != pw2 {
			t.Error("dbinfo --dsn does not show the new password")
		}
	})

	t.Run("databases and users on demand on a running instance", func(t *testing.T) {
		mustSkeinIn(t, "Second-user-pw-8Hq\n", "adddb", "--on", "my1", "user2", "db2", "-p", "-")
		var views []struct {
			Name      string   `json:"name"`
			Databases []string `json:"databases"`
			Users     []string `json:"users"`
			Version   string   `json:"version"`
			IP        string   `json:"ip"`
			Size      int64    `json:"size"`
		}
		if err := json.Unmarshal([]byte(mustSkein(t, "listdbs", "-o", "json")), &views); err != nil || len(views) != 2 {
			t.Fatalf("listdbs -o json: %v %+v", err, views)
		}
		if v := views[0]; v.Name != "my1" || strings.Join(v.Databases, ",") != "db2,wpdb" || strings.Join(v.Users, ",") != "user2,wpuser" || !strings.Contains(v.Version, "MariaDB") || v.IP == "" || v.Size < 1<<20 {
			t.Errorf("listdbs: %+v", v)
		}
		// The same again changes nothing; a new database for an existing user needs no password.
		mustSkein(t, "adddb", "--on", "my1", "user2", "db2")
		mustSkein(t, "adddb", "--on", "my1", "wpuser", "db3")
		mustSkein(t, "deldb", "my1", "db2", "--user")
		mustSkein(t, "deldb", "my1", "db3")
		out := mustSkein(t, "dbinfo", "my1")
		if strings.Contains(out, "db2") || strings.Contains(out, "db3") || !strings.Contains(out, "wpdb") {
			t.Errorf("dbinfo after deldb: %q", out)
		}
		if got, _ := inContainer("my1", "skein-s1", `mariadb --batch --skip-column-names -e "SELECT COUNT(*) FROM mysql.user WHERE user = 'user2'"`); got != "0" {
			t.Errorf("user2 is still in MariaDB: %q", got)
		}
	})

	t.Run("a backup taken while a writer inserts restores consistently; a deleted database's backup fails", func(t *testing.T) {
		nc, err := natsConnect()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		backedUp, err := nc.SubscribeSync("skein.event.s1." + events.TypeDBBackedUp)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := mysql("dbc2", "skein-s2", `-e "CREATE TABLE w (id INT PRIMARY KEY, v VARCHAR(24))"`); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		// The writer: 30,000 autocommitted inserts in order, in the background; it stops by itself.
		if out, err := inContainer("dbc2", "skein-s2", `(setsid sh -c 'seq 1 30000 | sed "s/.*/INSERT INTO w VALUES (&, \"v&\");/" | mariadb > /root/writer.log 2>&1; echo done >> /root/writer.log' < /dev/null > /dev/null 2>&1 &)`); err != nil {
			t.Fatalf("starting the writer: %v %s", err, out)
		}
		count := func(db, where string) string {
			out, _ := mysql("dbc2", "skein-s2", `-e "SET SESSION group_concat_max_len = 16777216; SELECT COUNT(*), MAX(id), MD5(GROUP_CONCAT(id, ':', v ORDER BY id)) FROM `+db+`.w `+where+`"`)
			return out
		}
		eventually(t, 30*time.Second, func() bool {
			f := strings.Fields(count("wpdb", ""))
			return len(f) == 3 && f[0] > "0" && len(f[0]) >= 3
		}, "the writer does not write")
		file := t.TempDir() + "/wpdb.sql.gz"
		out := mustSkein(t, "backupdb", "my1", "wpdb", "--to", file)
		name := strings.Fields(strings.SplitN(out, ": ", 2)[1])[0]
		var list []events.DBBackupInfo
		if err := json.Unmarshal([]byte(mustSkein(t, "backups", "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		var b *events.DBBackupInfo
		for i := range list {
			if list[i].Name == name {
				b = &list[i]
			}
		}
		data, _ := os.ReadFile(file)
		sum := sha256.Sum256(data)
		if b == nil || b.SHA256 != hex.EncodeToString(sum[:]) || b.Size != int64(len(data)) || b.Instance != "my1" || b.DB != "wpdb" {
			t.Fatalf("backups lists %+v; the file has %d bytes, sha256 %x", b, len(data), sum)
		}
		unreadable(t, b, "the observer", "observer", "_INBOX.observer")
		unreadable(t, b, "agent s2", "agent s2", "_INBOX.agent-s2")
		m, err := backedUp.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("no db.backedup event: %v", err)
		}
		if env, err := events.Decode(m.Data); err != nil || !strings.Contains(string(env.Data), `"ok":true`) {
			t.Errorf("db.backedup: %v %s", err, m.Data)
		}

		mustSkein(t, "restoredb", "my1", "wprestored", name)
		got := strings.Fields(count("wprestored", ""))
		if len(got) != 3 || got[0] != got[1] || got[0] == "0" {
			t.Fatalf("restored rows: %q, want a count equal to the highest id (no row missing)", got)
		}
		if src := strings.Fields(count("wpdb", "WHERE id <= "+got[1])); strings.Join(src, " ") != strings.Join(got, " ") {
			t.Errorf("restored %q, the source's first %s rows %q", got, got[1], src)
		}
		eventually(t, 60*time.Second, func() bool {
			out, _ := inContainer("dbc2", "skein-s2", "cat /root/writer.log")
			return strings.Contains(out, "done")
		}, "the writer does not end")
		final := strings.Fields(count("wpdb", ""))
		t.Logf("backup of %s rows taken while the writer went on to %s; restored with equal checksums", got[0], final[0])

		// The local file restores too, into a database made for it.
		mustSkein(t, "adddb", "--on", "my1", "wpuser", "wpfile")
		mustSkein(t, "restoredb", "my1", "wpfile", "--from", file)
		if again := strings.Fields(count("wpfile", "")); strings.Join(again, " ") != strings.Join(got, " ") {
			t.Errorf("restored from the file: %q, want %q", again, got)
		}
		// Not again into a database that holds tables (the two would mix),
		// unless asked to replace what it holds.
		if errOut := skeinFails(t, "restoredb", "my1", "wpfile", "--from", file); !strings.Contains(errOut, "database wpfile of instance my1 is not empty") || !strings.Contains(errOut, "--replace") {
			t.Errorf("a restore into a database that holds tables: %q", errOut)
		}
		mustSkein(t, "restoredb", "my1", "wpfile", "--from", file, "--replace")
		if again := strings.Fields(count("wpfile", "")); strings.Join(again, " ") != strings.Join(got, " ") {
			t.Errorf("restored with --replace: %q, want %q (each row once)", again, got)
		}

		// PostgreSQL's too.
		pgout := mustSkein(t, "backupdb", "pg1", "pgdb")
		pgname := strings.Fields(strings.SplitN(pgout, ": ", 2)[1])[0]
		mustSkein(t, "restoredb", "pg1", "pgcopy", pgname)
		pg := dsn(t, "pg1", "pgcopy")
		pushFile(t, "dbc2", "skein-s2", "/root/.pgpass", fmt.Sprintf("%s:5432:pgcopy:pguser:%s\n", pg.Hostname(), pgpw))
		if out, err := inContainer("dbc2", "skein-s2", fmt.Sprintf(`psql -X -A -t -h %s -U pguser -d pgcopy -c "SELECT sum(i) FROM t"`, pg.Hostname())); err != nil || out != "7" {
			t.Errorf("the restored PostgreSQL database: %v %q", err, out)
		}
		if errOut := skeinFails(t, "restoredb", "pg1", "pgcopy", pgname); !strings.Contains(errOut, "database pgcopy of instance pg1 is not empty") {
			t.Errorf("a restore into a PostgreSQL database that holds tables: %q", errOut)
		}
		mustSkein(t, "restoredb", "pg1", "pgcopy", pgname, "--replace")
		if out, err := inContainer("dbc2", "skein-s2", fmt.Sprintf(`psql -X -A -t -h %s -U pguser -d pgcopy -c "SELECT sum(i) FROM t"`, pg.Hostname())); err != nil || out != "7" {
			t.Errorf("the PostgreSQL database restored with --replace: %v %q (want 7: each row once)", err, out)
		}

		// A deleted database: a clear error, and an event that says it failed.
		mustSkein(t, "adddb", "--on", "my1", "wpuser", "gone")
		mustSkein(t, "deldb", "my1", "gone")
		if errOut := skeinFails(t, "backupdb", "my1", "gone"); !strings.Contains(errOut, "has no database gone to back up") {
			t.Errorf("backup of a deleted database: %q", errOut)
		}
		failed := false
		for !failed {
			m, err := backedUp.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("no db.backedup event of the failure: %v", err)
			}
			failed = strings.Contains(string(m.Data), `"ok":false`) && strings.Contains(string(m.Data), "gone")
		}
		mustSkein(t, "deldb", "my1", "wprestored")
		mustSkein(t, "deldb", "my1", "wpfile")
	})

	t.Run("bad input is refused with the fix and nothing is made or changed", func(t *testing.T) {
		before := mustSkein(t, "listdbs", "-o", "json")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"adddb", "oracle", "s1", "u", "d"}, "unknown database kind"},
			{[]string{"adddb", "mysql", "s1", "x; DROP DATABASE y", "d"}, "is not a valid name"},
			{[]string{"adddb", "mysql", "s1", "u", "a'b"}, "is not a valid name"},
			{[]string{"adddb", "mysql", "s1", "select", "d"}, "reserved word"},
			{[]string{"adddb", "mysql", "s1", "u", "d", "-a", "10.77.2.0/33"}, "is not a network"},
			{[]string{"adddb", "mysql", "s1", "u", "d", "-a", "10.77.2.1/24"}, "host bits"},
			{[]string{"adddb", "--on", "nope", "u", "d"}, "no database instance named"},
			{[]string{"adddb", "--on", "my1", "wpuser", "db9", "-p", "x"}, "already has a user wpuser"},
			{[]string{"deldb", "my1", "nodb"}, "has no database nodb"},
			{[]string{"dbpasswd", "my1", "nouser"}, "has no user nouser"},
			{[]string{"adddb", "mysql", "s1", "u", "d", "-n", "my1"}, "already exists"},
		} {
			if errOut := skeinFails(t, tc.args...); !strings.Contains(errOut, tc.want) {
				t.Errorf("skein %q: %q does not say %q", tc.args, strings.TrimSpace(errOut), tc.want)
			}
		}
		// Past the CLI, the agent refuses the same.
		refusedRaw(t, "s1", events.TypeDBCreate, events.DBCreate{Instance: "my1", User: "a'b", DB: "d"}, "lower-case letters")
		refusedRaw(t, "s1", events.TypeDBCreate, events.DBCreate{Instance: "my1", User: "u", DB: "select"}, "reserved word")
		refusedRaw(t, "s1", events.TypeDBAdd, events.DBAdd{Kind: "mysql", User: "u", DB: "d", Allow: []string{"10.0.0.0/33"}}, "/allow/0")
		refusedRaw(t, "s1", events.TypeDBAdd, events.DBAdd{Kind: "mysql", User: "u", DB: "d", Allow: []string{}}, "allow")
		if after := mustSkein(t, "listdbs", "-o", "json"); after != before {
			t.Errorf("a refused command changed the instances:\n%s\n%s", before, after)
		}
		if got := sum(); got != "42" {
			t.Errorf("the data after refused commands: %q", got)
		}
	})

	t.Run("a re-created instance finds its data, takes the new password and lists what the server has; --purge removes it", func(t *testing.T) {
		mustSkeinIn(t, "Kept-user-pw-5Tz\n", "adddb", "--on", "my1", "user3", "keptdb", "-p", "-")
		mustSkein(t, "deldbinstance", "my1")
		mustSkeinIn(t, pw3+"\n", "adddb", "mysql", "s1", "wpuser", "wpdb", "-n", "my1", "-a", allow, "-p", "-")
		my = dsn(t, "my1", "wpdb") // a new container, maybe a new address
		if pw, _ := my.User.Password(); pw != pw3 {
			t.Errorf("dbinfo --dsn shows %q, not the new password", pw)
		}
		pushFile(t, "dbc2", "skein-s2", "/root/.my.cnf", myCnf(pw3))
		eventually(t, 30*time.Second, func() bool { return sum() == "42" }, "the re-created instance lost the data, or refuses the new password")
		pushFile(t, "dbc2", "skein-s2", "/root/old.cnf", myCnf(pw2))
		if out, err := mysql("dbc2", "skein-s2", `--defaults-file=/root/old.cnf -e "SELECT 1"`); err == nil || !strings.Contains(out, "Access denied") {
			t.Errorf("the old password still works on the re-created instance: %v %q", err, out)
		}
		view := func(name string) (dbs, users string) {
			var views []struct {
				Name      string   `json:"name"`
				Databases []string `json:"databases"`
				Users     []string `json:"users"`
			}
			if err := json.Unmarshal([]byte(mustSkein(t, "listdbs", "-o", "json")), &views); err != nil {
				t.Fatal(err)
			}
			for _, v := range views {
				if v.Name == name {
					return strings.Join(v.Databases, ","), strings.Join(v.Users, ",")
				}
			}
			t.Fatalf("listdbs has no %s", name)
			return "", ""
		}
		onServer, _ := inContainer("my1", "skein-s1", `mariadb --batch --skip-column-names -e "SELECT GROUP_CONCAT(SCHEMA_NAME ORDER BY SCHEMA_NAME) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ('mysql','information_schema','performance_schema','sys'); SELECT GROUP_CONCAT(DISTINCT User ORDER BY User) FROM mysql.global_priv WHERE User NOT IN ('root','mysql','mariadb.sys','')"`)
		if dbs, users := view("my1"); dbs+"\n"+users != onServer || dbs != "keptdb,wpdb" {
			t.Errorf("listdbs says databases %q, users %q; MariaDB has %q", dbs, users, onServer)
		}
		if _, errOut, err := skein("dbinfo", "my1", "keptdb", "--dsn"); err == nil || !strings.Contains(errOut, "skein dbpasswd my1 user3") {
			t.Errorf("the DSN of a user whose password skein does not know: %v %q", err, errOut)
		}

		mustSkein(t, "deldbinstance", "pg1")
		mustSkeinIn(t, pgpw2+"\n", "adddb", "postgresql", "s3", "pguser", "pgdb", "-n", "pg1", "-a", allow, "-p", "-")
		pg := dsn(t, "pg1", "pgdb")
		psql := func(pw string) (string, error) {
			pushFile(t, "dbc2", "skein-s2", "/root/.pgpass", fmt.Sprintf("%s:5432:pgdb:pguser:%s\n", pg.Hostname(), pw))
			return inContainer("dbc2", "skein-s2", fmt.Sprintf(`PGCONNECT_TIMEOUT=5 psql -X -A -t -h %s -U pguser -d pgdb -c "SELECT sum(i) FROM t"`, pg.Hostname()))
		}
		eventually(t, 30*time.Second, func() bool { out, _ := psql(pgpw2); return out == "7" }, "the re-created PostgreSQL instance refuses the new password or lost the data")
		if out, err := psql(pgpw); err == nil || !strings.Contains(out, "password authentication failed") {
			t.Errorf("the old PostgreSQL password still works: %v %q", err, out)
		}
		pgOnServer, _ := inContainer("pg1", "skein-s3", `cd / && su postgres -s /bin/sh -c "psql -X -A -t -c \"SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'\""`)
		if dbs, users := view("pg1"); dbs != pgOnServer || dbs != "pgcopy,pgdb" || users != "pguser" {
			t.Errorf("listdbs says databases %q, users %q; PostgreSQL has %q", dbs, users, pgOnServer)
		}

		mustSkein(t, "deldbinstance", "my1", "--purge")
		if out, _ := incusCmd("storage", "volume", "list", "skein", "--project", "skein-s1", "-f", "csv", "-c", "n"); strings.Contains(out, "skein-db-my1") {
			t.Errorf("the volume is still there after --purge: %s", out)
		}
	})

	t.Run("the passwords are in clear nowhere", func(t *testing.T) {
		for _, s := range []string{pw1, pw2, pw3, pgpw, pgpw2} {
			secretNowhere(t, w, s)
		}
	})
}
