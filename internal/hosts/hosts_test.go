package hosts

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const system = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n# a comment\n10.0.0.9   printer.lan printer\n"

// Set adds to one marked block at the end and keeps every other byte; Remove
// takes only its own line and the block once it is empty.
func TestSetAndRemoveKeepTheRest(t *testing.T) {
	a, err := Set([]byte(system), Entry{Name: "app1.test", IP: "10.77.1.5"})
	if err != nil {
		t.Fatal(err)
	}
	want := system + Begin + "\n10.77.1.5 app1.test\n" + End + "\n"
	if string(a) != want {
		t.Fatalf("after Set:\n%s\nwant:\n%s", a, want)
	}
	b, err := Set(a, Entry{Name: "app0.test", IP: "10.77.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	// Lines added by hand after the block stay after it.
	b = append(b, "192.168.1.1 router\n"...)
	c, err := Set(b, Entry{Name: "app1.test", IP: "10.77.1.7"})
	if err != nil {
		t.Fatal(err)
	}
	want = system + Begin + "\n10.77.1.6 app0.test\n10.77.1.7 app1.test\n" + End + "\n192.168.1.1 router\n"
	if string(c) != want {
		t.Fatalf("after two Sets:\n%s\nwant:\n%s", c, want)
	}
	d, found, err := Remove(c, "app0.test")
	if err != nil || !found {
		t.Fatalf("Remove: found %v, %v", found, err)
	}
	e, found, err := Remove(d, "app1.test")
	if err != nil || !found {
		t.Fatalf("Remove: found %v, %v", found, err)
	}
	if string(e) != system+"192.168.1.1 router\n" {
		t.Fatalf("after removing both:\n%q", e)
	}
	if _, found, _ := Remove(e, "app1.test"); found {
		t.Error("Remove found an entry that is gone")
	}
	es, err := Entries(c)
	if err != nil || len(es) != 2 || es[0].Name != "app0.test" {
		t.Fatalf("Entries = %v, %v", es, err)
	}
	// A file that does not end in a newline gets one before the block only.
	f, _ := Set([]byte("127.0.0.1 localhost"), Entry{Name: "x.test", IP: "10.77.1.1"})
	if !strings.HasPrefix(string(f), "127.0.0.1 localhost\n"+Begin) {
		t.Errorf("no newline before the block: %q", f)
	}
}

// A name that is not a host name or an address that is not IPv4 is refused,
// injections included; a block someone broke is not rewritten.
func TestRefuses(t *testing.T) {
	for _, e := range []Entry{
		{"a.com; location / {}", "10.0.0.1"}, {"a.com\n10.0.0.2 evil.com", "10.0.0.1"}, {"-a.com", "10.0.0.1"},
		{"a.com", "10.0.0.1 b.com"}, {"a.com", "::1"}, {"a.com", "10.0.0.256"}, {"", "10.0.0.1"},
	} {
		if _, err := Set([]byte(system), e); err == nil {
			t.Errorf("Set(%q, %q) was taken", e.Name, e.IP)
		}
	}
	broken := system + Begin + "\n10.0.0.1 a.test\n"
	if _, err := Set([]byte(broken), Entry{Name: "b.test", IP: "10.0.0.2"}); err == nil || !strings.Contains(err.Error(), "by hand") {
		t.Errorf("a block without its end: %v", err)
	}
	odd := system + Begin + "\n10.0.0.1 a.test b.test\n" + End + "\n"
	if _, err := Set([]byte(odd), Entry{Name: "b.test", IP: "10.0.0.2"}); err == nil {
		t.Error("a block with a line skein did not write was rewritten")
	}
}

// Write replaces the file whole and keeps its permissions.
func TestWrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(p, []byte(system), 0o640); err != nil {
		t.Fatal(err)
	}
	next, _ := Set([]byte(system), Entry{Name: "a.test", IP: "10.0.0.1"})
	if err := Write(p, next); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if !bytes.Equal(got, next) || fi.Mode().Perm() != 0o640 {
		t.Errorf("file %q mode %v", got, fi.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".hosts.skein-*"))
	if len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}
}

// No name or address, however made, adds a line outside the block or a
// second block: the rest of the file is kept byte for byte.
func FuzzSet(f *testing.F) {
	f.Add("app.test", "10.0.0.1")
	f.Add("a.com\n1.1.1.1 b", "10.0.0.1")
	f.Fuzz(func(t *testing.T, name, ip string) {
		out, err := Set([]byte(system), Entry{Name: name, IP: ip})
		if err != nil {
			return
		}
		if !bytes.HasPrefix(out, []byte(system)) {
			t.Fatalf("the rest changed: %q", out)
		}
		if got := strings.Count(string(out), "\n"); got != strings.Count(system, "\n")+3 {
			t.Fatalf("%d lines for one entry: %q", got, out)
		}
	})
}
