package db

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/validate"
)

// The statements sent to a server are rendered here by pure functions: every
// identifier is validated (validate.DBIdent) and quoted by the server's own
// rules, every value is a literal quoted by those rules, and no password is
// ever in them: only its hash, made here (MariaDB's mysql_native_password,
// PostgreSQL's SCRAM-SHA-256 verifier), so the plaintext never enters the
// container.

// Ports the instances listen on.
const (
	mysqlPort    = 3306
	postgresPort = 5432
)

// ident quotes a database or user name for the kind's server: backticks for
// MariaDB, double quotes for PostgreSQL, the quote doubled inside. The name
// is validated first; quoting is the second line.
func ident(kind, name string) (string, error) {
	if err := validate.DBIdent.Check(name); err != nil {
		return "", fmt.Errorf("%w: %q: %v", validate.ErrInvalid, name, err)
	}
	if kind == events.DBMySQL {
		return "`" + strings.ReplaceAll(name, "`", "``") + "`", nil
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`, nil
}

// literal quotes a string value for the kind's server: single quotes doubled,
// and for MariaDB (whose strings take backslash escapes) backslashes doubled.
func literal(kind, v string) string {
	if kind == events.DBMySQL {
		v = strings.ReplaceAll(v, `\`, `\\`)
	}
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// mysqlHash is MariaDB's mysql_native_password hash of a password: with it
// the server checks a password it never sees.
func mysqlHash(password []byte) string {
	a := sha1.Sum(password)
	b := sha1.Sum(a[:])
	return "*" + strings.ToUpper(hex.EncodeToString(b[:]))
}

// scramVerifier is PostgreSQL's SCRAM-SHA-256 verifier of a password, with a
// fresh salt.
func scramVerifier(password []byte) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	return scramWithSalt(password, salt, 4096)
}

func scramWithSalt(password, salt []byte, iter int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, string(password), salt, iter, 32)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	server := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(server)), nil
}

// hash is the password's hash for the kind's server.
func hash(kind string, password []byte) (string, error) {
	if kind == events.DBMySQL {
		return mysqlHash(password), nil
	}
	return scramVerifier(password)
}

// mysqlHosts are MariaDB's host patterns for the allowed networks
// (address/netmask, the form MariaDB matches).
func mysqlHosts(allow []string) ([]string, error) {
	var out []string
	for _, a := range allow {
		p, err := netip.ParsePrefix(a)
		if err != nil || !p.Addr().Is4() || p != p.Masked() {
			return nil, fmt.Errorf("%w: %q is not an IPv4 network", validate.ErrInvalid, a)
		}
		mask := ^uint32(0) << (32 - p.Bits())
		if p.Bits() == 0 {
			mask = 0
		}
		out = append(out, fmt.Sprintf("%s/%d.%d.%d.%d", p.Addr(), mask>>24, mask>>16&255, mask>>8&255, mask&255))
	}
	return out, nil
}

// CreateSQL renders the statements that make user (with the password hash
// pwHash, when the user is new) own database db, reachable from allow. Each
// is idempotent: run again after a failure it converges.
func CreateSQL(kind, user, db, pwHash string, allow []string) (string, error) {
	u, err := ident(kind, user)
	if err != nil {
		return "", err
	}
	d, err := ident(kind, db)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if kind == events.DBMySQL {
		hosts, err := mysqlHosts(allow)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "CREATE DATABASE IF NOT EXISTS %s;\n", d)
		for _, h := range hosts {
			acct := literal(kind, user) + "@" + literal(kind, h)
			if pwHash != "" {
				fmt.Fprintf(&b, "CREATE USER IF NOT EXISTS %s IDENTIFIED BY PASSWORD %s;\n", acct, literal(kind, pwHash))
			}
			fmt.Fprintf(&b, "GRANT ALL PRIVILEGES ON %s.* TO %s;\n", d, acct)
		}
		return b.String(), nil
	}
	// psql's \gexec runs each statement the query yields: none when the role
	// or database exists, so a retry converges (CREATE DATABASE cannot run in
	// a DO block).
	if pwHash != "" {
		fmt.Fprintf(&b, "SELECT %s WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s)\n\\gexec\n",
			literal(kind, "CREATE ROLE "+u+" LOGIN PASSWORD "+literal(kind, pwHash)), literal(kind, user))
	}
	fmt.Fprintf(&b, "SELECT %s WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = %s)\n\\gexec\n",
		literal(kind, "CREATE DATABASE "+d+" OWNER "+u), literal(kind, db))
	// A database kept on the volume of an earlier instance may have another owner.
	fmt.Fprintf(&b, "ALTER DATABASE %s OWNER TO %s;\n", d, u)
	fmt.Fprintf(&b, "REVOKE ALL ON DATABASE %s FROM PUBLIC;\n", d)
	return b.String(), nil
}

// PasswordSQL renders the statement that sets user's password hash.
func PasswordSQL(kind, user, pwHash string, allow []string) (string, error) {
	u, err := ident(kind, user)
	if err != nil {
		return "", err
	}
	if kind != events.DBMySQL {
		return fmt.Sprintf("ALTER ROLE %s PASSWORD %s;\n", u, literal(kind, pwHash)), nil
	}
	hosts, err := mysqlHosts(allow)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s;\n", literal(kind, user), literal(kind, h), literal(kind, pwHash))
	}
	return b.String(), nil
}

// DropSQL renders the statements that remove database db, and user when dropUser.
func DropSQL(kind, db, user string, dropUser bool, allow []string) (string, error) {
	d, err := ident(kind, db)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if kind == events.DBMySQL {
		fmt.Fprintf(&b, "DROP DATABASE IF EXISTS %s;\n", d)
	} else {
		fmt.Fprintf(&b, "DROP DATABASE IF EXISTS %s WITH (FORCE);\n", d)
	}
	if !dropUser {
		return b.String(), nil
	}
	u, err := ident(kind, user)
	if err != nil {
		return "", err
	}
	if kind != events.DBMySQL {
		fmt.Fprintf(&b, "DROP ROLE IF EXISTS %s;\n", u)
		return b.String(), nil
	}
	hosts, err := mysqlHosts(allow)
	if err != nil {
		return "", err
	}
	for _, h := range hosts {
		fmt.Fprintf(&b, "DROP USER IF EXISTS %s@%s;\n", literal(kind, user), literal(kind, h))
	}
	return b.String(), nil
}

// RenderHBA renders PostgreSQL's pg_hba.conf: local connections by peer (the
// agent runs psql as postgres), and each database reachable by its owner only,
// from the allowed networks, with SCRAM passwords. A pure function.
func RenderHBA(inst events.DBInstance) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by skein for database instance %s; skein rewrites it.\n", inst.Name)
	b.WriteString("local   all             postgres                                peer\n")
	b.WriteString("local   all             all                                     peer\n")
	dbs := append([]events.DBDatabase(nil), inst.Databases...)
	sort.Slice(dbs, func(i, j int) bool { return dbs[i].Name < dbs[j].Name })
	for _, d := range dbs {
		dq, err := ident(events.DBPostgreSQL, d.Name)
		if err != nil {
			return "", err
		}
		uq, err := ident(events.DBPostgreSQL, d.Owner)
		if err != nil {
			return "", err
		}
		for _, a := range inst.Allow {
			if err := validate.CIDR.Check(a); err != nil {
				return "", fmt.Errorf("%w: allow %q: %v", validate.ErrInvalid, a, err)
			}
			fmt.Fprintf(&b, "host    %-15s %-15s %-23s scram-sha-256\n", dq, uq, a)
		}
	}
	return b.String(), nil
}

// Paths of the instances' configuration in their container.
const (
	mysqlConf    = "/etc/mysql/mariadb.conf.d/60-skein.cnf"
	postgresConf = "/etc/postgresql/15/main/conf.d/skein.conf"
	postgresHBA  = "/etc/postgresql/15/main/pg_hba.conf"
)

// RenderConf renders the server's own settings: listen on every address,
// match clients by address (no name lookups), keep passwords hashed.
func RenderConf(kind string) string {
	if kind == events.DBMySQL {
		return "# Written by skein; skein rewrites it.\n[mysqld]\nbind-address = 0.0.0.0\nskip-name-resolve\ndatadir = /var/lib/mysql\n"
	}
	return "# Written by skein; skein rewrites it.\nlisten_addresses = '*'\npassword_encryption = 'scram-sha-256'\n"
}

// superusers are the accounts a server makes for itself: never a user of
// skein's record, never the owner it names.
var superusers = map[string]bool{"root": true, "mysql": true, "mariadb.sys": true, "postgres": true}

// InventorySQL renders the query of what a server holds, one fact a line:
// "u USER" for each user, "d DB" for each database and "g DB USER" for each
// user with rights on it (its owner for PostgreSQL), and for MariaDB "h HOST"
// for each account of user (its password is set on every one).
func InventorySQL(kind, user string) (string, error) {
	if _, err := ident(kind, user); err != nil {
		return "", err
	}
	if kind == events.DBMySQL {
		return "SELECT DISTINCT CONCAT('u ', User) FROM mysql.global_priv WHERE User NOT IN ('root', 'mysql', 'mariadb.sys', '');\n" +
			"SELECT CONCAT('d ', SCHEMA_NAME) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys');\n" +
			"SELECT DISTINCT CONCAT('g ', Db, ' ', User) FROM mysql.db WHERE User <> '';\n" +
			"SELECT CONCAT('h ', Host) FROM mysql.global_priv WHERE User = " + literal(kind, user) + ";\n", nil
	}
	return "SELECT 'u ' || rolname FROM pg_roles WHERE rolcanlogin AND rolname <> 'postgres';\n" +
		"SELECT 'd ' || datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres';\n" +
		"SELECT 'g ' || d.datname || ' ' || r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE NOT d.datistemplate AND d.datname <> 'postgres';\n", nil
}

// TablesSQL renders the query of how many tables (views, sequences and the
// like too) database db holds: one number. A restore goes only into a
// database that holds none, unless asked to replace what it holds.
func TablesSQL(kind, db string) (string, error) {
	d, err := ident(kind, db)
	if err != nil {
		return "", err
	}
	if kind == events.DBMySQL {
		return "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = " + literal(kind, db) + ";\n", nil
	}
	return "\\connect " + d + "\n" +
		"SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace " +
		"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%';\n", nil
}

// Inventory is what a server holds, as InventorySQL reads it.
type Inventory struct {
	// Users are its users, sorted.
	Users []string
	// Databases are its databases with their owners, sorted by name.
	Databases []events.DBDatabase
	// Hosts are the host patterns of the asked user's MariaDB accounts.
	Hosts []string
	// Left are what the record cannot hold (a name skein would refuse, a
	// database no user of it owns), one line each, to be told.
	Left []string
}

// ParseInventory reads InventorySQL's output. A database's owner is prefer
// when that user has rights on it, else the first such user by name.
func ParseInventory(out, prefer string) Inventory {
	var inv Inventory
	users := map[string]bool{}
	grants := map[string][]string{}
	var dbs []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "u":
			if superusers[f[1]] {
				continue
			}
			if validate.DBIdent.Check(f[1]) != nil {
				inv.Left = append(inv.Left, "user "+strconv.Quote(f[1])+": not a name skein takes")
				continue
			}
			users[f[1]] = true
		case len(f) == 2 && f[0] == "d":
			dbs = append(dbs, f[1])
		case len(f) == 3 && f[0] == "g":
			grants[f[1]] = append(grants[f[1]], f[2])
		case len(f) == 2 && f[0] == "h":
			inv.Hosts = append(inv.Hosts, f[1])
		}
	}
	for u := range users {
		inv.Users = append(inv.Users, u)
	}
	sort.Strings(inv.Users)
	sort.Strings(dbs)
	for _, d := range dbs {
		if validate.DBIdent.Check(d) != nil {
			inv.Left = append(inv.Left, "database "+strconv.Quote(d)+": not a name skein takes")
			continue
		}
		owner := ""
		gs := append([]string(nil), grants[d]...)
		sort.Strings(gs)
		for _, u := range gs {
			if u == prefer && users[u] {
				owner = u
				break
			}
			if owner == "" && users[u] {
				owner = u
			}
		}
		if owner == "" {
			inv.Left = append(inv.Left, "database "+d+": owned by no user skein knows")
			continue
		}
		inv.Databases = append(inv.Databases, events.DBDatabase{Name: d, Owner: owner})
	}
	sort.Strings(inv.Hosts)
	return inv
}

// AccountsPasswordSQL renders the statements that set user's password hash
// on each of its MariaDB accounts (HOSTS as the server lists them).
func AccountsPasswordSQL(user, pwHash string, hosts []string) (string, error) {
	if _, err := ident(events.DBMySQL, user); err != nil {
		return "", err
	}
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s;\n", literal(events.DBMySQL, user), literal(events.DBMySQL, h), literal(events.DBMySQL, pwHash))
	}
	return b.String(), nil
}
