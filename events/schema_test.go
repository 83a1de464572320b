package events

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite schemas/ from the Go types")

// TestSchemasMatchTypes fails when a Go type and its published schema drift apart.
func TestSchemasMatchTypes(t *testing.T) {
	want, err := generateAll()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "schemas")
	if *update {
		old, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		for name, b := range want {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("schema %s missing: run `go tool task schemas`", name)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("schemas/%s differs from its Go type: run `go tool task schemas` and review the diff", name)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, f := range files {
		if _, ok := want[filepath.Base(f)]; !ok {
			t.Errorf("schemas/%s has no Go type: remove it or register the type", filepath.Base(f))
		}
	}
}

// TestEverySchemaCompiles: each schema compiles on its first use in a
// process, so one the validator cannot check (a keyword it does not
// implement) fails here rather than at a user's first command of its type.
func TestEverySchemaCompiles(t *testing.T) {
	for name, l := range index().byName {
		if _, err := l.get(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestSchemaErrorsSayWhatAndWhere: a refusal names each field by its JSON
// Pointer and says what a kind's value must be rather than its pattern.
func TestSchemaErrorsSayWhatAndWhere(t *testing.T) {
	for _, tc := range []struct {
		typ     string
		payload any
		want    string
	}{
		{TypeLBAdd, LBAdd{Kind: "nginx", URL: "evil.test; location /pwn"},
			`invalid lb.add: /url: "evil.test; location /pwn" is not a host name such as mywordpress.org (letters, digits, '-' and dots, labels up to 63)`},
		{TypeLBAdd, LBAdd{Kind: "caddy", Backends: []Backend{{Name: "a", Host: "10.0.0.1", Port: 70000}}},
			`invalid lb.add: /backends/0/port: maximum: got 70000, want 65535; /kind: value must be one of 'haproxy', 'nginx'`},
		{TypePing, Ping{Note: strings.Repeat("x", 257)}, `invalid server.ping: /note: longer than 256 characters`},
		{TypeDBAdd, DBAdd{Kind: "mysql", User: "u", DB: "d", Allow: []string{"10.0.0.0/8", "10.0.0.0"}},
			`invalid db.add: /allow/1: "10.0.0.0" is not an IPv4 network such as 10.77.0.0/16 (host bits zero)`},
	} {
		if err := Check(tc.typ, tc.payload); err == nil || err.Error() != tc.want {
			t.Errorf("%s %+v:\n got %v\nwant %s", tc.typ, tc.payload, err, tc.want)
		}
	}
}
