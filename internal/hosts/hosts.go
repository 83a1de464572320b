// Package hosts keeps skein's entries in a hosts file (/etc/hosts): one
// clearly marked block that skein owns, edited by a pure function and written
// atomically, every other line left byte for byte as it was.
package hosts

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/skeinhq/skein/internal/validate"
)

// Path is the system's hosts file.
const Path = "/etc/hosts"

// The lines that mark skein's block.
const (
	Begin = "# BEGIN skein: entries of skein addhosts; skein delhosts removes them"
	End   = "# END skein"
)

// Entry is one host name and its address.
type Entry struct {
	// Name is the host name.
	Name string `json:"name"`
	// IP is its IPv4 address.
	IP string `json:"ip"`
}

// split cuts content into what comes before skein's block, the block's
// entries, and what comes after; a file without a block is all before.
func split(content []byte) (before []byte, entries []Entry, after []byte, err error) {
	b := bytes.Index(content, []byte(Begin+"\n"))
	if b < 0 || (b > 0 && content[b-1] != '\n') {
		return content, nil, nil, nil
	}
	rest := content[b+len(Begin)+1:]
	e := bytes.Index(rest, []byte(End+"\n"))
	if e < 0 || (e > 0 && rest[e-1] != '\n') {
		return nil, nil, nil, fmt.Errorf("skein's block in the hosts file has no %q line: fix the file by hand", End)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(rest[:e]), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, nil, nil, fmt.Errorf("skein's block in the hosts file has a line %q that skein did not write: fix the file by hand", line)
		}
		entries = append(entries, Entry{Name: f[1], IP: f[0]})
	}
	return content[:b], entries, rest[e+len(End)+1:], nil
}

// Entries are the entries of skein's block in content.
func Entries(content []byte) ([]Entry, error) {
	_, es, _, err := split(content)
	return es, err
}

// Check refuses a name that is not a host name and an address that is not IPv4.
func Check(e Entry) error {
	if !validate.Host.Valid(e.Name) {
		return fmt.Errorf("%q is not a host name: want one such as mywordpress.org", e.Name)
	}
	if a, err := netip.ParseAddr(e.IP); err != nil || !a.Is4() || validate.IPv4.Check(e.IP) != nil {
		return fmt.Errorf("%q is not an IPv4 address such as 10.77.1.5", e.IP)
	}
	return nil
}

// Set returns content with name mapped to ip in skein's block (replacing
// its entry, if any), the block made at the end when there is none. Every
// line outside the block is kept as it was. A pure function.
func Set(content []byte, e Entry) ([]byte, error) {
	if err := Check(e); err != nil {
		return nil, err
	}
	before, es, after, err := split(content)
	if err != nil {
		return nil, err
	}
	out := []Entry{e}
	for _, x := range es {
		if x.Name != e.Name {
			out = append(out, x)
		}
	}
	return join(before, out, after), nil
}

// Remove returns content without name's entry in skein's block (and without
// the block when it is left empty); found says whether there was one.
func Remove(content []byte, name string) (out []byte, found bool, err error) {
	before, es, after, err := split(content)
	if err != nil {
		return nil, false, err
	}
	var keep []Entry
	for _, x := range es {
		if x.Name == name {
			found = true
			continue
		}
		keep = append(keep, x)
	}
	if !found {
		return content, false, nil
	}
	return join(before, keep, after), true, nil
}

// join puts the block, sorted by name, between before and after.
func join(before []byte, es []Entry, after []byte) []byte {
	var b bytes.Buffer
	b.Write(before)
	if len(es) > 0 {
		if len(before) > 0 && before[len(before)-1] != '\n' {
			b.WriteByte('\n')
		}
		sort.Slice(es, func(i, j int) bool { return es[i].Name < es[j].Name })
		b.WriteString(Begin + "\n")
		for _, e := range es {
			fmt.Fprintf(&b, "%s %s\n", e.IP, e.Name)
		}
		b.WriteString(End + "\n")
	}
	b.Write(after)
	return b.Bytes()
}

// Write replaces the file at path with content atomically (a new file renamed
// over it, with the old one's permissions). A hosts file that is a mount point
// (a container's) cannot be renamed over: it is rewritten in place then.
func Write(path string, content []byte) error {
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hosts.skein-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	err = os.Rename(tmp.Name(), path)
	if errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EXDEV) {
		return os.WriteFile(path, content, mode)
	}
	return err
}
