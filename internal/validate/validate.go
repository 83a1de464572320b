// Package validate is skein's one set of validators for what users type: names,
// host names (RFC 1123), addresses (through net/netip), identifiers, durations
// and URLs. The CLI checks arguments with it, the JSON Schemas take their
// patterns from it (the `valid:"KIND"` tag on a field), the runtime checks every
// decoded payload with it, and the renderers refuse a record it refuses: a
// user's string never lands raw in a configuration file or a command line.
package validate

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind is one kind of string a user gives.
type Kind struct {
	// Name is the kind's name, as written in `valid:"NAME"` tags.
	Name string
	// What says what the string must be, for error messages.
	What string
	// Pattern is the regular expression (RE2, anchored) the JSON Schema carries.
	Pattern string
	// MaxLength bounds the string.
	MaxLength int
	// check, when set, tests what a pattern cannot (ranges, lengths of labels).
	check func(string) error
	// re compiles Pattern on first use: compiling every kind's cost milliseconds
	// at the start of every skein command.
	re func() *regexp.Regexp
}

const (
	label   = `[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?`
	octet   = `(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])`
	ipv4    = octet + `\.` + octet + `\.` + octet + `\.` + octet
	port    = `[0-9]{1,5}`
	hostPat = label + `(\.` + label + `)*`
)

// The kinds, by name.
var kinds = map[string]*Kind{}

func kind(k *Kind) *Kind {
	p := k.Pattern
	k.re = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(p) })
	kinds[k.Name] = k
	return k
}

// The kinds of string skein takes from users.
var (
	// Name is a container's or resource's name: a letter, then letters, digits and hyphens.
	Name = kind(&Kind{Name: "name", What: "1-63 letters, digits and '-', starting with a letter", Pattern: `^[a-zA-Z][a-zA-Z0-9-]{0,62}$`, MaxLength: 63})
	// Ident is a backend's or check's name: letters, digits, '-' and '_'.
	Ident = kind(&Kind{Name: "ident", What: "1-63 letters, digits, '-' and '_', starting with a letter or digit", Pattern: `^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$`, MaxLength: 63})
	// Service is a Consul service or ad-hoc entry name, a DNS label.
	Service = kind(&Kind{Name: "service", What: "1-63 letters, digits and '-', starting with a letter or digit", Pattern: `^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$`, MaxLength: 63})
	// Host is a host name per RFC 1123: dot-separated labels of letters, digits and hyphens.
	Host = kind(&Kind{Name: "host", What: "a host name such as mywordpress.org (letters, digits, '-' and dots, labels up to 63)", Pattern: `^` + hostPat + `$`, MaxLength: 253})
	// IPv4 is an IPv4 address in dotted decimal.
	IPv4 = kind(&Kind{Name: "ipv4", What: "an IPv4 address such as 10.77.1.5", Pattern: `^` + ipv4 + `$`, MaxLength: 15, check: checkIPv4})
	// AddrPort is IPv4:PORT.
	AddrPort = kind(&Kind{Name: "addrport", What: "IP:PORT, e.g. 10.77.1.10:8600", Pattern: `^` + ipv4 + `:` + port + `$`, MaxLength: 21, check: checkAddrPort})
	// BackendHost is a backend's host: an IPv4 address, or a Consul service name NAME.service.consul.
	BackendHost = kind(&Kind{Name: "backendhost", What: "an IPv4 address or a Consul name (NAME.service.consul)", Pattern: `^(` + ipv4 + `|` + hostPat + `\.service\.consul)$`, MaxLength: 253, check: checkBackendHost})
	// TargetHost is an app's target host: an IPv4 address, a Consul name
	// (NAME.service.consul) or a skein container's name.
	TargetHost = kind(&Kind{Name: "targethost", What: "an IPv4 address, a Consul name (NAME.service.consul) or a container name", Pattern: `^(` + ipv4 + `|` + hostPat + `\.service\.consul|[a-zA-Z][a-zA-Z0-9-]{0,62})$`, MaxLength: 253, check: checkBackendHost})
	// Duration is a check's interval or timeout, e.g. 500ms, 10s, 1m.
	Duration = kind(&Kind{Name: "duration", What: "a duration such as 500ms, 10s or 1m", Pattern: `^[0-9]{1,6}(ms|s|m)$`, MaxLength: 8, check: checkDuration})
	// Image is an Incus image alias.
	Image = kind(&Kind{Name: "image", What: "an image alias: letters, digits, '.', '_', '-', '/' and ':'", Pattern: `^[a-zA-Z0-9][a-zA-Z0-9._/:-]*$`, MaxLength: 256})
	// Tag is a Consul tag.
	Tag = kind(&Kind{Name: "tag", What: "1-63 letters, digits and '.', '_', ':', '=', '-'", Pattern: `^[a-zA-Z0-9][a-zA-Z0-9._:=-]{0,62}$`, MaxLength: 63})
	// XKey is a public curve key (nkeys xkeys): X and 55 base32 characters.
	XKey = kind(&Kind{Name: "xkey", What: "a public curve key (X...)", Pattern: `^X[A-Z2-7]{55}$`, MaxLength: 56})
	// WGKey is a WireGuard public key: 32 bytes in standard base64.
	WGKey = kind(&Kind{Name: "wgkey", What: "a WireGuard public key (44 characters of base64)", Pattern: `^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$`, MaxLength: 44})
	// Base64 is standard base64.
	Base64 = kind(&Kind{Name: "base64", What: "base64", Pattern: `^[A-Za-z0-9+/]*={0,2}$`, MaxLength: 262144})
	// UUID is a lower-case UUID, e.g. a Consul ACL token.
	UUID = kind(&Kind{Name: "uuid", What: "a UUID", Pattern: `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`, MaxLength: 36})
	// Text is a setting's value: printable ASCII on one line.
	Text = kind(&Kind{Name: "text", What: "printable characters on one line", Pattern: `^[ -~]*$`, MaxLength: 1024})
	// CheckURL is an http check's target: a path on the container, or an http(s) URL.
	CheckURL = kind(&Kind{Name: "checkurl", What: "a path (/health), a host name (mywordpress.org) or an http(s) URL", Pattern: `^[!-~]+$`, MaxLength: 2048, check: checkURL})
	// DBIdent is a database or database user name: lower-case letters, digits
	// and '_', not a reserved word of MariaDB or PostgreSQL.
	DBIdent = kind(&Kind{Name: "dbident", What: "1-63 lower-case letters, digits and '_', starting with a letter or '_', not an SQL reserved word", Pattern: `^[a-z_][a-z0-9_]{0,62}$`, MaxLength: 63, check: checkDBIdent})
	// Backup is a database backup's name: INSTANCE.DB.TIME, or an upload's.
	Backup = kind(&Kind{Name: "backup", What: "a backup name such as my1.wordpress.20261126T101500.123Z (`skein backups` lists them)", Pattern: `^[a-zA-Z][a-zA-Z0-9_.-]{0,199}$`, MaxLength: 200})
	// IfName is a network interface's name.
	IfName = kind(&Kind{Name: "ifname", What: "an interface name such as eth0 (1-15 letters, digits, '.', '_', '-')", Pattern: `^[a-zA-Z0-9][a-zA-Z0-9._-]{0,14}$`, MaxLength: 15})
	// CIDR is an IPv4 network in CIDR notation, its host bits zero.
	CIDR = kind(&Kind{Name: "cidr", What: "an IPv4 network such as 10.77.0.0/16 (host bits zero)", Pattern: `^` + ipv4 + `/[0-9]{1,2}$`, MaxLength: 18, check: checkCIDR})
	// Arg is one word of a command skein runs itself (no shell): a program
	// or an argument, without quotes, spaces or shell syntax.
	Arg = kind(&Kind{Name: "arg", What: "a program or an argument without spaces, quotes or shell syntax (letters, digits and _ . / : = , @ % + ? ~ ^ -); put a pipeline in a script", Pattern: `^[A-Za-z0-9_./:=,@%+?~^-]+$`, MaxLength: 1024})
	// HTTPSURL is an https URL such as an ACME directory.
	HTTPSURL = kind(&Kind{Name: "httpsurl", What: "an https URL such as https://acme-v02.api.letsencrypt.org/directory", Pattern: `^https://[!-~]+$`, MaxLength: 2048, check: checkHTTPSURL})
)

func checkCIDR(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return err
	}
	if !p.Addr().Is4() || p != p.Masked() {
		return fmt.Errorf("host bits set: the network is %s", p.Masked())
	}
	return nil
}

// reserved are words MariaDB or PostgreSQL reserve: a name among them needs
// quoting everywhere a user types it, so skein refuses it. Built on first use.
var reserved = sync.OnceValue(func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`accessible add all alter analyse analyze and any array as asc asensitive asymmetric
authorization before between bigint binary blob both by call cascade case cast change char character check collate
collation column concurrently condition constraint continue convert create cross current_catalog current_date
current_role current_schema current_time current_timestamp current_user cursor database databases day_hour
day_microsecond day_minute day_second dec decimal declare default deferrable delayed delete delete_domain_id desc
describe deterministic distinct distinctrow div do double drop dual each else elseif enclosed end escaped except
exists exit explain false fetch float float4 float8 for force foreign freeze from full fulltext general grant group
having high_priority hour_microsecond hour_minute hour_second if ignore ignore_domain_ids ignore_server_ids ilike
in index infile initially inner inout insensitive insert int int1 int2 int3 int4 int8 integer intersect interval
into is isnull iterate join key keys kill lateral leading leave left like limit linear lines load localtime
localtimestamp lock long longblob longtext loop low_priority master_heartbeat_period master_ssl_verify_server_cert
match maxvalue mediumblob mediumint mediumtext middleint minute_microsecond minute_second mod modifies natural not
notnull no_write_to_binlog null numeric offset on only optimize option optionally or order out outer outfile over
overlaps page_checksum parse_vcol_expr partition placing position precision primary procedure purge range read
reads read_write real recursive ref_system_id references regexp release rename repeat replace require resignal
restrict return returning revoke right rlike role rows schema schemas second_microsecond select sensitive
separator session_user set show signal similar slow smallint some spatial specific sql sql_big_result
sql_calc_found_rows sql_small_result sqlexception sqlstate sqlwarning ssl starting stats_auto_recalc
stats_persistent stats_sample_pages straight_join symmetric system_user table tablesample terminated then tinyblob
tinyint tinytext to trailing trigger true undo union unique unlock unsigned update usage use user using utc_date
utc_time utc_timestamp values varbinary varchar varcharacter variadic varying verbose when where while window with
write xor year_month zerofill postgres mysql root template0 template1 information_schema performance_schema sys`) {
		m[w] = true
	}
	return m
})

func checkDBIdent(s string) error {
	if reserved()[s] {
		return fmt.Errorf("%q is a reserved word or a system name of MariaDB or PostgreSQL: pick another", s)
	}
	return nil
}

func checkHTTPSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return errors.New("want https://HOST[:PORT]/PATH")
	}
	return nil
}

// ErrInvalid is what every refusal of this package wraps.
var ErrInvalid = errors.New("invalid")

// ByPattern returns the kind whose pattern is p.
func ByPattern(p string) (*Kind, bool) {
	for _, k := range kinds {
		if k.Pattern == p {
			return k, true
		}
	}
	return nil, false
}

// Lookup returns the kind named name.
func Lookup(name string) (*Kind, bool) {
	k, ok := kinds[name]
	return k, ok
}

// Check tests s against the kind; the error says what s must be.
func (k *Kind) Check(s string) error {
	if len(s) > k.MaxLength || !k.re().MatchString(s) {
		return fmt.Errorf("%w: %q is not %s", ErrInvalid, s, k.What)
	}
	if k.check != nil {
		if err := k.check(s); err != nil {
			return fmt.Errorf("%w: %q: %v", ErrInvalid, s, err)
		}
	}
	return nil
}

// Valid reports whether s is of the kind.
func (k *Kind) Valid(s string) bool { return k.Check(s) == nil }

func checkIPv4(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return errors.New("not an IPv4 address")
	}
	return nil
}

func checkAddrPort(s string) error {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
		return errors.New("want IP:PORT with a port from 1 to 65535")
	}
	return nil
}

func checkBackendHost(s string) error {
	if _, err := netip.ParseAddr(s); err == nil {
		return checkIPv4(s)
	}
	return nil
}

func checkDuration(s string) error {
	if _, err := time.ParseDuration(s); err != nil {
		return err
	}
	return nil
}

func checkURL(s string) error {
	if strings.HasPrefix(s, "/") {
		return nil
	}
	raw := s
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme %q: use http or https", u.Scheme)
	}
	h := u.Hostname()
	if _, err := netip.ParseAddr(h); err != nil && !Host.Valid(h) {
		return fmt.Errorf("host %q is not a host name or an address", h)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q: want 1 to 65535", p)
		}
	}
	return nil
}

// Port checks a port number.
func Port(n int) error {
	if n < 1 || n > 65535 {
		return fmt.Errorf("%w: port %d: want a number from 1 to 65535", ErrInvalid, n)
	}
	return nil
}

// Struct checks every field of v (a struct or a pointer to one, with nested
// structs, pointers and slices) whose `valid:"KIND"` tag names a kind: strings
// and slices of strings. Empty strings pass (the schema says what is required).
// The error names the field by its JSON name.
func Struct(v any) error {
	return walk(reflect.ValueOf(v), "")
}

func walk(v reflect.Value, path string) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return walk(v.Elem(), path)
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if err := walk(v.Index(i), fmt.Sprintf("%s/%d", path, i)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			fv := v.Field(i)
			name := jsonName(f)
			p := path
			if !f.Anonymous {
				p = path + "/" + name
			}
			if tag := f.Tag.Get("valid"); tag != "" {
				k, ok := kinds[tag]
				if !ok {
					return fmt.Errorf("validate: unknown kind %q on %s", tag, p)
				}
				if err := checkValue(k, fv, p); err != nil {
					return err
				}
				continue
			}
			if err := walk(fv, p); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkValue(k *Kind, v reflect.Value, path string) error {
	switch v.Kind() {
	case reflect.String:
		if s := v.String(); s != "" {
			if err := k.Check(s); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			// A field may be left empty; an element of a list may not (found by
			// FuzzRenderSite: an empty resolver rendered "resolver  valid=1s").
			if e := v.Index(i); e.Kind() == reflect.String && e.String() == "" {
				return fmt.Errorf("%s/%d: %w: an empty value in a list", path, i, ErrInvalid)
			}
			if err := checkValue(k, v.Index(i), fmt.Sprintf("%s/%d", path, i)); err != nil {
				return err
			}
		}
	case reflect.Pointer:
		if !v.IsNil() {
			return checkValue(k, v.Elem(), path)
		}
	}
	return nil
}

func jsonName(f reflect.StructField) string {
	tag := f.Tag.Get("json")
	if name, _, _ := strings.Cut(tag, ","); name != "" && name != "-" {
		return name
	}
	return f.Name
}
