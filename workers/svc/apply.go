// Package svc is the layer every capability that runs a component in a service
// container shares (Consul endpoints, load balancers, and next web servers,
// databases and keepalived): reserve a name once, launch the container, and
// apply a configuration as one candidate set of files that the component's own
// checker approves before it is reloaded, with the whole previous set restored
// on any failure. Reconcile repairs the records from what really runs.
package svc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/workers"
)

// File is one file of a component's configuration.
type File struct {
	// Path is where the component reads it, in the container.
	Path string
	// Data is its content.
	Data []byte
	// Mode is its permission bits (0600 for keys).
	Mode os.FileMode
	// Remove removes the file instead (a certificate no app serves any more);
	// a failed apply brings it back with the rest of the set.
	Remove bool
}

// Component says how a component in a service container takes a configuration.
type Component struct {
	// Name names the component in messages, e.g. "haproxy".
	Name string
	// Unit is its systemd unit.
	Unit string
	// Check is the shell command that checks the installed files, e.g.
	// "haproxy -c -f /etc/haproxy/haproxy.cfg"; "" checks nothing.
	Check string
	// Before, when set, runs before a reload; its output is $skein_before for Settle.
	Before string
	// Settle, when set, runs after a successful reload and returns once the
	// component serves the new configuration (a reload it takes asynchronously).
	Settle string
}

// ErrRefused marks a configuration that the component's own checker refused.
var ErrRefused = errors.New("refused by the component's checker")

// Exit codes of the apply script.
const (
	exitRefused = 10
	exitReload  = 11
	exitStart   = 12
)

// Digest identifies a set of files: the same files give the same digest.
func Digest(files []File) string {
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	h := sha256.New()
	for _, f := range sorted {
		fmt.Fprintf(h, "%s\x00%o\x00%t\x00%d\x00", f.Path, f.Mode.Perm(), f.Remove, len(f.Data))
		h.Write(f.Data)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// Mode says what Apply does after the files are in place and checked.
type Mode int

const (
	// Reload reloads the component gracefully (or starts it when it is not running).
	Reload Mode = iota
	// NoReload only installs and checks the files: the running component already
	// took the change another way (haproxy's runtime API) and reads them on its next start.
	NoReload
)

// Apply makes files the configuration of component c in container name: they
// are pushed beside the running ones, swapped in together, checked by the
// component's checker, and the component is reloaded and must stay active. On
// any failure the whole previous set is restored (files that did not exist are
// removed) and the component reloaded with it. applied is the digest of what
// runs now: when files have the same digest nothing is done. It returns the
// digest of what runs after.
func Apply(ctx context.Context, rt container.Runtime, name string, c Component, files []File, mode Mode, applied string) (string, error) {
	for _, f := range files {
		if !pathRE.MatchString(f.Path) {
			return applied, workers.Internal("configuration file path %q is not a plain absolute path", f.Path)
		}
	}
	digest := Digest(files)
	if digest == applied {
		return applied, nil
	}
	stage := "/tmp/skein-stage-" + events.NewID()[:12]
	staged := make([]string, len(files))
	for i, f := range files {
		staged[i] = fmt.Sprintf("%s-%d", stage, i)
		if f.Remove {
			continue
		}
		if err := rt.PushFile(ctx, name, staged[i], f.Data, f.Mode); err != nil {
			return applied, workers.Transient("writing %s into %s: %v", f.Path, name, err)
		}
	}
	res, err := rt.Exec(ctx, name, "sh", "-c", Script(c, files, staged, mode))
	if err != nil {
		return applied, workers.Transient("applying the configuration of %s: %v", name, err)
	}
	out := strings.TrimSpace(string(res.Stderr) + string(res.Stdout))
	switch res.Code {
	case 0:
		return digest, nil
	case exitRefused:
		return applied, fmt.Errorf("%w: %w", ErrRefused, workers.Invalid("%s refused the new configuration of %s (the old one keeps serving): %s", c.Name, name, out))
	case exitReload:
		return applied, workers.Invalid("%s of %s failed to take the new configuration; the previous one was restored: %s", c.Name, name, out)
	case exitStart:
		return applied, workers.Transient("starting %s in %s: %s", c.Name, name, out)
	default:
		return applied, workers.Transient("applying the configuration of %s: exit %d: %s", name, res.Code, out)
	}
}

// Script renders the shell script that installs staged files as files, checks,
// reloads and restores: a pure function, golden-tested and run for real by the
// tests. Paths come from skein's code, never from a user, and are quoted anyway.
func Script(c Component, files []File, staged []string, mode Mode) string {
	var b strings.Builder
	b.WriteString("set -u\n")
	dirs := map[string]bool{}
	var targets []string
	for _, f := range files {
		dirs[path.Dir(f.Path)] = true
		targets = append(targets, f.Path)
	}
	var ds []string
	for d := range dirs {
		ds = append(ds, quote(d))
	}
	sort.Strings(ds)
	fmt.Fprintf(&b, "mkdir -p %s || exit 1\n", strings.Join(ds, " "))
	fmt.Fprintf(&b, "files=%s\n", quote(strings.Join(targets, " ")))
	// The previous set is kept outside the component's directories (nginx
	// includes every file of sites-enabled), under bk, by the files' paths.
	fmt.Fprintf(&b, "bk=%s\n", quote(backupRoot))
	b.WriteString("restore() {\n  for f in $files; do\n    if [ -e \"$bk$f.none\" ]; then rm -f \"$f\" \"$bk$f.none\"; elif [ -e \"$bk$f.prev\" ]; then mv -f \"$bk$f.prev\" \"$f\"; fi\n  done\n}\n")
	b.WriteString("done_ok() {\n  for f in $files; do rm -f \"$bk$f.prev\" \"$bk$f.none\"; done\n  exit 0\n}\n")
	// Keep what is there, then move every staged file in: the set changes together.
	b.WriteString("for f in $files; do\n  mkdir -p \"$bk${f%/*}\" || exit 1\n  rm -f \"$bk$f.prev\" \"$bk$f.none\"\n  if [ -e \"$f\" ]; then cp -p \"$f\" \"$bk$f.prev\" || exit 1; else : > \"$bk$f.none\"; fi\ndone\n")
	for i, f := range files {
		if f.Remove {
			fmt.Fprintf(&b, "rm -f %s || { restore; exit 1; }\n", quote(f.Path))
			continue
		}
		fmt.Fprintf(&b, "mv -f %s %s || { restore; exit 1; }\n", quote(staged[i]), quote(f.Path))
	}
	if c.Check != "" {
		fmt.Fprintf(&b, "if ! out=$(%s 2>&1); then restore; echo \"$out\" >&2; exit %d; fi\n", c.Check, exitRefused)
	}
	if mode == NoReload || c.Unit == "" {
		b.WriteString("done_ok\n")
		return b.String()
	}
	u := quote(c.Unit)
	before, settle := "", ""
	if c.Before != "" {
		before = "  skein_before=$(" + c.Before + ")\n"
	}
	if c.Settle != "" {
		settle = "  " + c.Settle + "\n"
	}
	fmt.Fprintf(&b, "if systemctl is-active -q %[1]s; then\n%[3]s  if ! out=$(systemctl reload %[1]s 2>&1) || ! systemctl is-active -q %[1]s; then\n    restore; systemctl reload %[1]s >/dev/null 2>&1 || systemctl restart %[1]s >/dev/null 2>&1\n    echo \"$out\" >&2; exit %[2]d\n  fi\n%[4]s  done_ok\nfi\n", u, exitReload, before, settle)
	fmt.Fprintf(&b, "systemctl daemon-reload\nsystemctl enable -q %[1]s 2>/dev/null\nif ! out=$(systemctl restart %[1]s 2>&1); then restore; echo \"$out\" >&2; exit %[2]d; fi\ndone_ok\n", u, exitStart)
	return b.String()
}

// backupRoot keeps the previous set of files while a new one is tried.
var backupRoot = "/var/lib/skein/apply"

// pathRE is a configuration file path the script can take unquoted in a list.
var pathRE = regexp.MustCompile(`^/[A-Za-z0-9._/-]+$`)

// quote makes s one shell word.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
