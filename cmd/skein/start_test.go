package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The bounds of issue 29 on the start of a skein command, on a 2-core machine.
const (
	maxInit    = 10 * time.Millisecond
	maxVersion = 15 * time.Millisecond
	// maxPackageInit bounds one package's init: well above the slowest today
	// (prometheus, about 0.5 ms), well below one compiling schemas (3 ms).
	maxPackageInit = 1500 * time.Microsecond
)

// TestStartIsQuick builds skein and runs `skein --version`: the package
// inits of everything linked in (the CLI, the server and the agent are one
// binary) must take under 10 ms in all, as GODEBUG=inittrace=1 reports them,
// and the whole process under 15 ms. A package that compiles patterns or
// schemas in its init fails here.
//
// Each bound is on the median of 11 runs: one run lasts milliseconds, and on
// a busy machine (go test runs packages side by side) the scheduler can stall
// any single one; the median moves only when most runs are slow.
func TestStartIsQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the skein binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build skein with")
	}
	bin := filepath.Join(t.TempDir(), "skein")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	runVersion(t, bin, nil) // the first run reads the binary from disk
	var inits, walls []time.Duration
	perPackage := map[string][]time.Duration{}
	for range 11 {
		walls = append(walls, runVersion(t, bin, nil))
		var trace bytes.Buffer
		runVersion(t, bin, &trace)
		clocks := initClocks(t, trace.String())
		var total time.Duration
		for pkg, c := range clocks {
			total += c
			perPackage[pkg] = append(perPackage[pkg], c)
		}
		inits = append(inits, total)
	}
	initMed, wallMed := median(inits), median(walls)
	t.Logf("median of 11: package inits %v, skein --version %v", initMed, wallMed)
	if initMed > maxInit {
		t.Errorf("package inits take %v (median of 11, runs %v), want under %v: GODEBUG=inittrace=1 skein --version says which", initMed, inits, maxInit)
	}
	if wallMed > maxVersion {
		t.Errorf("skein --version takes %v (median of 11, runs %v), want under %v", wallMed, walls, maxVersion)
	}
	for pkg, c := range perPackage {
		for len(c) < len(inits) {
			c = append(c, 0) // a package missing from a run's trace
		}
		if m := median(c); m > maxPackageInit {
			t.Errorf("the init of %s takes %v (median of 11), want under %v: do its work on first use", pkg, m, maxPackageInit)
		}
	}
}

// runVersion runs `bin --version` and returns how long it took; with trace set, it
// runs with GODEBUG=inittrace=1 and writes the trace there.
func runVersion(t *testing.T, bin string, trace *bytes.Buffer) time.Duration {
	t.Helper()
	cmd := exec.Command(bin, "--version")
	cmd.Env = os.Environ()
	if trace != nil {
		cmd.Env = append(cmd.Env, "GODEBUG=inittrace=1")
		cmd.Stderr = trace
	}
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("skein --version: %v", err)
	}
	return time.Since(start)
}

// initClocks reads the clock of each "init PKG @T ms, C ms clock, ..." line.
func initClocks(t *testing.T, trace string) map[string]time.Duration {
	t.Helper()
	clocks := map[string]time.Duration{}
	for line := range strings.Lines(trace) {
		f := strings.Fields(line)
		if len(f) < 7 || f[0] != "init" || f[5] != "ms" || f[6] != "clock," {
			continue
		}
		ms, err := strconv.ParseFloat(f[4], 64)
		if err != nil {
			t.Fatalf("inittrace line %q: %v", line, err)
		}
		clocks[f[1]] += time.Duration(ms * float64(time.Millisecond))
	}
	if len(clocks) == 0 {
		t.Fatalf("no init lines in the trace:\n%s", trace)
	}
	return clocks
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
