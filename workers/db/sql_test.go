package db

import (
	"flag"
	"regexp"
	"strings"
	"testing"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

const fixedHash = "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"

// MariaDB's hash of "password" is the one its PASSWORD() gives; the SCRAM
// verifier has PostgreSQL's shape and changes with its salt.
func TestHashes(t *testing.T) {
	if got := mysqlHash([]byte("password")); got != fixedHash {
		t.Errorf("mysqlHash = %s", got)
	}
	a, _ := scramVerifier([]byte("pencil"))
	b, _ := scramVerifier([]byte("pencil"))
	shape := regexp.MustCompile(`^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}$`)
	if !shape.MatchString(a) || a == b {
		t.Errorf("verifiers %q %q", a, b)
	}
	if strings.Contains(a, "pencil") {
		t.Error("the verifier holds the password")
	}
}

// The statements are golden, per kind.
func TestSQLGolden(t *testing.T) {
	allow := []string{"10.77.0.0/16", "192.168.1.0/24"}
	for _, kind := range []string{events.DBMySQL, events.DBPostgreSQL} {
		pw := fixedHash
		if kind == events.DBPostgreSQL {
			pw = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$c3RvcmVkc3RvcmVkc3RvcmVkc3RvcmVkc3RvcmVkc3Q=:c2VydmVyc2VydmVyc2VydmVyc2VydmVyc2VydmVyc2U="
		}
		create, err := CreateSQL(kind, "wordpress", "wordpress", pw, allow)
		if err != nil {
			t.Fatal(err)
		}
		grant, _ := CreateSQL(kind, "wordpress", "blog", "", allow)
		passwd, _ := PasswordSQL(kind, "wordpress", pw, allow)
		drop, _ := DropSQL(kind, "wordpress", "wordpress", true, allow)
		inv, _ := InventorySQL(kind, "wordpress")
		tables, _ := TablesSQL(kind, "wordpress")
		out := "-- create\n" + create + "-- existing user\n" + grant + "-- passwd\n" + passwd + "-- drop\n" + drop + "-- inventory\n" + inv + "-- tables\n" + tables + "-- conf\n" + RenderConf(kind)
		if kind == events.DBMySQL {
			accounts, _ := AccountsPasswordSQL("wordpress", pw, []string{"10.77.0.0/255.255.0.0", "%"})
			out += "-- every account\n" + accounts
		}
		if kind == events.DBPostgreSQL {
			hba, err := RenderHBA(events.DBInstance{Resource: events.Resource{Name: "pg-1"}, Kind: kind, Allow: allow,
				Databases: []events.DBDatabase{{Name: "wordpress", Owner: "wordpress"}, {Name: "blog", Owner: "wp2"}}})
			if err != nil {
				t.Fatal(err)
			}
			out += "-- pg_hba.conf\n" + hba
		}
		testutil.Golden(t, kind, out, *update)
	}
}

// Names that are not identifiers, reserved words and bad networks are refused.
func TestRefuses(t *testing.T) {
	for _, bad := range []string{"x; DROP DATABASE y", "a'b", "select", "user", "Wordpress", "", "a-b", "1abc", strings.Repeat("a", 64), "a`b", `a"b`} {
		for _, kind := range []string{events.DBMySQL, events.DBPostgreSQL} {
			if _, err := CreateSQL(kind, bad, "db", "h", []string{"10.0.0.0/8"}); err == nil {
				t.Errorf("%s user %q was taken", kind, bad)
			}
			if _, err := CreateSQL(kind, "u", bad, "h", []string{"10.0.0.0/8"}); err == nil {
				t.Errorf("%s database %q was taken", kind, bad)
			}
			if _, err := TablesSQL(kind, bad); err == nil {
				t.Errorf("%s database %q was taken to count its tables", kind, bad)
			}
		}
	}
	for _, a := range []string{"10.0.0.1/8", "10.0.0.0", "10.0.0.0/33", "::/0", "10.0.0.0/8'"} {
		if _, err := CreateSQL(events.DBMySQL, "u", "d", "h", []string{a}); err == nil {
			t.Errorf("network %q was taken", a)
		}
		if _, err := RenderHBA(events.DBInstance{Allow: []string{a}, Databases: []events.DBDatabase{{Name: "d", Owner: "u"}}}); err == nil {
			t.Errorf("hba network %q was taken", a)
		}
	}
}

// No value, however made, ends its literal early: once every literal is
// blanked the statements are the plain ones.
func FuzzSQLLiterals(f *testing.F) {
	f.Add("*ABC", "10.0.0.0/8")
	f.Add("x'); DROP DATABASE y; --", "10.0.0.0/8")
	f.Add(`\'; DROP`, "10.0.0.0/8")
	f.Fuzz(func(t *testing.T, hash, network string) {
		if hash == "" {
			return // no password hash: an existing user, no CREATE USER at all
		}
		for _, kind := range []string{events.DBMySQL, events.DBPostgreSQL} {
			got, err := CreateSQL(kind, "u", "d", hash, []string{network})
			if err != nil {
				continue
			}
			want, _ := CreateSQL(kind, "u", "d", "H", []string{network})
			if blank(kind, got) != blank(kind, want) {
				t.Fatalf("%s: a value changed the statements:\n%s\n--- plain:\n%s", kind, got, want)
			}
		}
		// A host pattern comes from the server of a kept volume: a value too.
		got, _ := AccountsPasswordSQL("u", hash, []string{network})
		want, _ := AccountsPasswordSQL("u", "H", []string{"h"})
		if blank(events.DBMySQL, got) != blank(events.DBMySQL, want) {
			t.Fatalf("a host or hash changed the statements:\n%s\n--- plain:\n%s", got, want)
		}
	})
}

// blank replaces each literal of the kind's dialect with L.
func blank(kind, sql string) string {
	var b strings.Builder
	in := false
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case !in && c == '\'':
			in = true
			b.WriteString("L")
		case in && kind == events.DBMySQL && c == '\\':
			i++
		case in && c == '\'' && i+1 < len(sql) && sql[i+1] == '\'':
			i++
		case in && c == '\'':
			in = false
		case !in:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// The dump and restore commands: consistent dumps, failures that fail
// (pipefail), the database name validated before it reaches a shell.
func TestDumpAndRestoreScripts(t *testing.T) {
	for _, kind := range []string{events.DBMySQL, events.DBPostgreSQL} {
		f := scratchFile{dir: scratchDir, id: "0123abcd", path: scratchDir + "/skein-dump-0123abcd.2.gz"}
		d, err := dumpScript(kind, "wpdb", f)
		if err != nil || !strings.HasPrefix(d, "set -o pipefail; umask 077; D=/var/tmp/skein; F=/var/tmp/skein/skein-dump-0123abcd.2.gz;") || !strings.Contains(d, `exec 9>"$D/0123abcd.lock" && flock -n 9 ||`) || !strings.HasSuffix(d, `| gzip -c > "$F" && sha256sum < "$F" && wc -c < "$F"`) {
			t.Errorf("%s dump: %q %v", kind, d, err)
		}
		if kind == events.DBMySQL && !strings.Contains(d, "--single-transaction") {
			t.Errorf("the MariaDB dump is not one transaction: %q", d)
		}
		r, err := restoreScript(kind, "wpdb", "wpuser")
		if err != nil || !strings.HasPrefix(r, "set -o pipefail;") || !strings.Contains(r, `gunzip -c "$F"`) {
			t.Errorf("%s restore: %q %v", kind, r, err)
		}
		if kind == events.DBPostgreSQL && !strings.Contains(r, `SET ROLE "wpuser";`) {
			t.Errorf("PostgreSQL restores as the owner: %q", r)
		}
		for _, bad := range []string{"x; rm -rf /", "a'b", "$(id)", "select"} {
			if _, err := dumpScript(kind, bad, f); err == nil {
				t.Errorf("%s dump of %q was rendered", kind, bad)
			}
			if _, err := restoreScript(kind, bad, "u"); err == nil {
				t.Errorf("%s restore into %q was rendered", kind, bad)
			}
		}
	}
	if _, err := restoreScript(events.DBPostgreSQL, "d", "u'; DROP"); err == nil {
		t.Error("an injected owner was rendered")
	}
}

// What a server holds, read back: superusers and names skein refuses are left
// out (and told), a database's owner is the asked user when it has rights.
func TestParseInventory(t *testing.T) {
	out := "u wpuser\nu user2\nu root\nu Bad-Name\n" +
		"d wpdb\nd db2\nd shared\nd orphan\nd My-DB\n" +
		"g wpdb wpuser\ng db2 user2\ng shared user2\ng shared wpuser\ng orphan root\n" +
		"h 10.77.2.0/255.255.255.0\nh %\n\n"
	inv := ParseInventory(out, "wpuser")
	if got := strings.Join(inv.Users, ","); got != "user2,wpuser" {
		t.Errorf("users %s", got)
	}
	var dbs []string
	for _, d := range inv.Databases {
		dbs = append(dbs, d.Name+":"+d.Owner)
	}
	if got := strings.Join(dbs, ","); got != "db2:user2,shared:wpuser,wpdb:wpuser" {
		t.Errorf("databases %s", got)
	}
	if got := strings.Join(inv.Hosts, ","); got != "%,10.77.2.0/255.255.255.0" {
		t.Errorf("hosts %s", got)
	}
	if got := strings.Join(inv.Left, "; "); got != `user "Bad-Name": not a name skein takes; database "My-DB": not a name skein takes; database orphan: owned by no user skein knows` {
		t.Errorf("left %s", got)
	}
	if inv := ParseInventory(out, "user9"); inv.Databases[1].Owner != "user2" {
		t.Errorf("without the asked user's rights the first user by name owns it: %+v", inv.Databases)
	}
}
