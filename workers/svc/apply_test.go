package svc

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/workers"

	"github.com/skeinhq/skein/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestScriptGolden keeps the apply script's text under review: one golden
// file per mode, the script after a "---" line.
func TestScriptGolden(t *testing.T) {
	c := Component{Name: "haproxy", Unit: "haproxy", Check: "haproxy -c -q -f /etc/haproxy/haproxy.cfg"}
	files := []File{{Path: "/etc/haproxy/haproxy.cfg", Mode: 0o644}, {Path: "/etc/haproxy/skein.pem", Mode: 0o600}}
	staged := []string{"/tmp/skein-stage-x-0", "/tmp/skein-stage-x-1"}
	for name, mode := range map[string]Mode{"reload": Reload, "noreload": NoReload} {
		t.Run(name, func(t *testing.T) {
			got := "haproxy.cfg and skein.pem, mode " + name + "\n---\n" + Script(c, files, staged, mode)
			testutil.Golden(t, "script-"+name, got, *update)
		})
	}
}

// scriptBed runs the apply script for real with sh, in a temp dir, with a
// systemctl that obeys the test.
type scriptBed struct {
	dir  string
	path string // PATH with the fake systemctl first
}

func newScriptBed(t *testing.T) *scriptBed {
	t.Helper()
	dir := t.TempDir()
	old := backupRoot
	backupRoot = filepath.Join(dir, "backup")
	t.Cleanup(func() { backupRoot = old })
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	// The fake systemctl logs its calls; is-active answers from a file, reload
	// fails while a file says so, and a failed reload leaves the unit inactive.
	fake := `#!/bin/sh
echo "$*" >> "` + dir + `/calls"
case "$1" in
is-active) [ -e "` + dir + `/active" ] ;;
reload) if [ -e "` + dir + `/reload-fails" ]; then echo "job for unit failed" >&2; rm -f "` + dir + `/active"; exit 1; fi ;;
restart) : > "` + dir + `/active" ;;
esac
`
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	return &scriptBed{dir: dir, path: bin + ":" + os.Getenv("PATH")}
}

func (b *scriptBed) file(name string) string { return filepath.Join(b.dir, "etc", name) }

func (b *scriptBed) read(t *testing.T, name string) (string, bool) {
	t.Helper()
	data, err := os.ReadFile(b.file(name))
	if errors.Is(err, os.ErrNotExist) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(data), true
}

// removeMark as a file's content in run asks for the file's removal.
const removeMark = "\x00remove"

// run stages files and runs the script; it returns the exit code and stderr.
func (b *scriptBed) run(t *testing.T, c Component, files map[string]string, mode Mode) (int, string) {
	t.Helper()
	var fs []File
	var staged []string
	i := 0
	for name, data := range files {
		if data == removeMark {
			fs = append(fs, File{Path: b.file(name), Remove: true})
			staged = append(staged, "")
			continue
		}
		st := filepath.Join(b.dir, "stage-"+name)
		if err := os.WriteFile(st, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		fs = append(fs, File{Path: b.file(name), Data: []byte(data), Mode: 0o644})
		staged = append(staged, st)
		i++
	}
	cmd := exec.Command("sh", "-c", Script(c, fs, staged, mode))
	cmd.Env = append(os.Environ(), "PATH="+b.path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stderr.String()
}

func TestScriptSwapsChecksAndRestoresTheWholeSet(t *testing.T) {
	b := newScriptBed(t)
	// The checker accepts a configuration that says "good" and names a key that says "key".
	c := Component{Name: "tool", Unit: "tool", Check: "grep -q good " + b.file("tool.conf") + " && grep -q key " + b.file("tool.key")}

	// First apply: nothing there yet, the unit is not running: it is started.
	if code, out := b.run(t, c, map[string]string{"tool.conf": "good v1", "tool.key": "key v1"}, Reload); code != 0 {
		t.Fatalf("first apply: exit %d: %s", code, out)
	}
	if got, _ := b.read(t, "tool.conf"); got != "good v1" {
		t.Fatalf("tool.conf = %q", got)
	}

	// Refused by the checker: the whole set, key included, is what it was. The
	// checker sees only the candidate set in the directory, no backup beside it.
	c.Check += " && [ $(ls " + filepath.Join(b.dir, "etc") + " | wc -l) -le 3 ]"
	code, out := b.run(t, c, map[string]string{"tool.conf": "bad v2", "tool.key": "key v2"}, Reload)
	if code != exitRefused || !strings.Contains(out, "") {
		t.Fatalf("refused apply: exit %d, want %d", code, exitRefused)
	}
	if conf, _ := b.read(t, "tool.conf"); conf != "good v1" {
		t.Errorf("after a refusal tool.conf = %q, want the old one", conf)
	}
	if key, _ := b.read(t, "tool.key"); key != "key v1" {
		t.Errorf("after a refusal tool.key = %q, want the old one: the set is restored together", key)
	}

	// A file that did not exist before a refused apply does not stay behind.
	if code, _ := b.run(t, c, map[string]string{"tool.conf": "bad v3", "extra.pem": "new"}, Reload); code != exitRefused {
		t.Fatalf("refused apply with a new file: exit %d", code)
	}
	if _, ok := b.read(t, "extra.pem"); ok {
		t.Error("a new file of a refused set stayed behind")
	}

	// The reload fails: the previous set is back and the unit reloaded with it.
	if err := os.WriteFile(filepath.Join(b.dir, "reload-fails"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = b.run(t, c, map[string]string{"tool.conf": "good v4", "tool.key": "key v4"}, Reload)
	if code != exitReload || !strings.Contains(out, "job for unit failed") {
		t.Fatalf("apply with a failing reload: exit %d (%s), want %d with the unit's message", code, out, exitReload)
	}
	if conf, _ := b.read(t, "tool.conf"); conf != "good v1" {
		t.Errorf("after a failed reload tool.conf = %q, want the previous one", conf)
	}
	calls, _ := os.ReadFile(filepath.Join(b.dir, "calls"))
	if !strings.Contains(string(calls), "restart tool") {
		t.Errorf("the unit was not brought back after the failed reload; systemctl calls:\n%s", calls)
	}
	_ = os.Remove(filepath.Join(b.dir, "reload-fails"))

	// Without a reload (the change went live another way) the files change and nothing reloads.
	before, _ := os.ReadFile(filepath.Join(b.dir, "calls"))
	if code, out := b.run(t, c, map[string]string{"tool.conf": "good v5", "tool.key": "key v5"}, NoReload); code != 0 {
		t.Fatalf("apply without reload: exit %d: %s", code, out)
	}
	after, _ := os.ReadFile(filepath.Join(b.dir, "calls"))
	if string(after) != string(before) {
		t.Errorf("an apply without reload called systemctl: %s", strings.TrimPrefix(string(after), string(before)))
	}
	if conf, _ := b.read(t, "tool.conf"); conf != "good v5" {
		t.Errorf("tool.conf = %q, want v5", conf)
	}
	// A removal in a refused set is undone with the rest; in an accepted one it happens.
	if code, _ := b.run(t, c, map[string]string{"tool.conf": "bad v6", "tool.key": removeMark}, Reload); code != exitRefused {
		t.Fatalf("refused apply with a removal: exit %d", code)
	}
	if key, ok := b.read(t, "tool.key"); !ok || key != "key v5" {
		t.Errorf("after a refused removal tool.key = %q (exists %v), want it back", key, ok)
	}
	c.Check = "grep -q good " + b.file("tool.conf")
	if code, out := b.run(t, c, map[string]string{"tool.conf": "good v7", "tool.key": removeMark}, Reload); code != 0 {
		t.Fatalf("apply with a removal: exit %d: %s", code, out)
	}
	if _, ok := b.read(t, "tool.key"); ok {
		t.Error("an accepted removal left the file")
	}
	// No backup is left lying around, and none ever sat beside the files
	// (nginx would read a backup in sites-enabled as a second site).
	var left []string
	_ = filepath.Walk(b.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && (strings.HasSuffix(p, ".prev") || strings.HasSuffix(p, ".none")) {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestApplyMapsOutcomes(t *testing.T) {
	ctx := context.Background()
	fake := container.NewFake("10.77.9.0/24", "img")
	if err := fake.Create(ctx, container.CreateSpec{Name: "lb", Image: "img"}); err != nil {
		t.Fatal(err)
	}
	if err := fake.Start(ctx, "lb"); err != nil {
		t.Fatal(err)
	}
	c := Component{Name: "haproxy", Unit: "haproxy", Check: "haproxy -c"}
	files := []File{{Path: "/etc/haproxy/haproxy.cfg", Data: []byte("global\n"), Mode: 0o644}}
	digest := Digest(files)

	// The same files as what runs: nothing is pushed or run.
	got, err := Apply(ctx, fake, "lb", c, files, Reload, digest)
	if err != nil || got != digest || len(fake.Execs) != 0 || len(fake.Files) != 0 {
		t.Fatalf("unchanged apply = %q %v, execs %v, files %d: want a no-op", got, err, fake.Execs, len(fake.Files))
	}

	tests := []struct {
		name      string
		code      int
		transient bool
		refused   bool
	}{
		{"applied", 0, false, false},
		{"refused by the checker", exitRefused, false, true},
		{"reload failed", exitReload, false, false},
		{"could not start", exitStart, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake.ExecHook = func(name string, argv []string) (container.ExecResult, error) {
				return container.ExecResult{Code: tc.code, Stderr: []byte("[ALERT] parsing: unknown keyword")}, nil
			}
			got, err := Apply(ctx, fake, "lb", c, files, Reload, "old")
			if tc.code == 0 {
				if err != nil || got != digest {
					t.Fatalf("Apply = %q %v, want the new digest", got, err)
				}
				return
			}
			if got != "old" {
				t.Errorf("a failed apply reports digest %q, want the old one", got)
			}
			if workers.IsTransient(err) != tc.transient || errors.Is(err, ErrRefused) != tc.refused {
				t.Errorf("error %v: transient %v refused %v, want %v %v", err, workers.IsTransient(err), errors.Is(err, ErrRefused), tc.transient, tc.refused)
			}
			if !strings.Contains(err.Error(), "unknown keyword") {
				t.Errorf("error %q does not carry the tool's message", err)
			}
		})
	}
	// A path that could be taken as more than one word is refused before anything runs.
	if _, err := Apply(ctx, fake, "lb", c, []File{{Path: "/etc/a b", Mode: 0o644}}, Reload, ""); err == nil {
		t.Error("a path with a space was applied")
	}
}

// Settle runs after a reload that worked, with what Before printed; never
// after one that failed.
func TestScriptSettlesAfterAReload(t *testing.T) {
	b := newScriptBed(t)
	settled := filepath.Join(b.dir, "settled")
	c := Component{Name: "tool", Unit: "tool", Before: "echo workers-42", Settle: `echo "$skein_before" > ` + settled}
	if err := os.WriteFile(filepath.Join(b.dir, "active"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := b.run(t, c, map[string]string{"tool.conf": "v1"}, Reload); code != 0 {
		t.Fatalf("apply: exit %d: %s", code, out)
	}
	if got, err := os.ReadFile(settled); err != nil || strings.TrimSpace(string(got)) != "workers-42" {
		t.Fatalf("Settle did not run with Before's output: %q %v", got, err)
	}
	_ = os.Remove(settled)
	_ = os.WriteFile(filepath.Join(b.dir, "reload-fails"), nil, 0o644)
	if code, _ := b.run(t, c, map[string]string{"tool.conf": "v2"}, Reload); code != exitReload {
		t.Fatalf("failed reload: exit %d", code)
	}
	if _, err := os.Stat(settled); err == nil {
		t.Error("Settle ran after a failed reload")
	}
}
