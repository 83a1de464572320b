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

// What a start of skein may cost in package inits (issue 29): the counts
// of allocations, which do not depend on how busy the machine is, stand for
// the work; the times are measured by BenchmarkStart.
const (
	// maxInitAllocs bounds the allocations of every init together: 5,536 at
	// 5f6cb57, against 38,668 when a schema library compiled its meta-schemas
	// (21,279) and the validators their patterns (10,033) at start.
	maxInitAllocs = 8000
	// maxPackageAllocs bounds one package's: nats-server's 1,709 is the most.
	maxPackageAllocs = 2500
)

// TestStartDoesLittle builds skein and runs `skein --version` with
// GODEBUG=inittrace=1: the inits of everything linked in (the CLI, the server
// and the agent are one binary) must allocate little, in all and per
// package. A package that compiles patterns or schemas in its init fails here.
func TestStartDoesLittle(t *testing.T) {
	bin := buildSkein(t)
	var trace bytes.Buffer
	runVersion(t, bin, &trace)
	total := 0
	for pkg, c := range initCosts(t, trace.String()) {
		total += c.allocs
		if c.allocs > maxPackageAllocs {
			t.Errorf("the init of %s makes %d allocations, want at most %d: do its work on first use", pkg, c.allocs, maxPackageAllocs)
		}
	}
	t.Logf("package inits: %d allocations", total)
	if total > maxInitAllocs {
		t.Errorf("package inits make %d allocations, want at most %d: GODEBUG=inittrace=1 skein --version says which", total, maxInitAllocs)
	}
}

// BenchmarkStart times what the user waits for at every command's start:
// `skein --version` as a whole process (wall-ms) and its package inits as
// GODEBUG=inittrace=1 reports them (init-ms), medians of b.N runs each.
// Issue 29's goals: under 15 ms and under 10 ms on a 2-core machine.
func BenchmarkStart(b *testing.B) {
	bin := buildSkein(b)
	runVersion(b, bin, nil) // the first run reads the binary from disk
	var inits, walls []time.Duration
	for b.Loop() {
		walls = append(walls, runVersion(b, bin, nil))
		var trace bytes.Buffer
		runVersion(b, bin, &trace)
		var total time.Duration
		for _, c := range initCosts(b, trace.String()) {
			total += c.clock
		}
		inits = append(inits, total)
	}
	b.ReportMetric(float64(median(walls).Microseconds())/1000, "wall-ms")
	b.ReportMetric(float64(median(inits).Microseconds())/1000, "init-ms")
}

// buildSkein builds the skein binary into a temporary directory.
func buildSkein(t testing.TB) string {
	t.Helper()
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
	return bin
}

// runVersion runs `bin --version` and returns how long it took; with trace set, it
// runs with GODEBUG=inittrace=1 and writes the trace there.
func runVersion(t testing.TB, bin string, trace *bytes.Buffer) time.Duration {
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

// initCost is what one package's init took.
type initCost struct {
	clock  time.Duration
	allocs int
}

// initCosts reads each "init PKG @T ms, C ms clock, B bytes, A allocs" line.
func initCosts(t testing.TB, trace string) map[string]initCost {
	t.Helper()
	costs := map[string]initCost{}
	for line := range strings.Lines(trace) {
		f := strings.Fields(line)
		if len(f) < 11 || f[0] != "init" || f[5] != "ms" || f[6] != "clock," || !strings.HasPrefix(f[10], "allocs") {
			continue
		}
		ms, err := strconv.ParseFloat(f[4], 64)
		if err != nil {
			t.Fatalf("inittrace line %q: %v", line, err)
		}
		allocs, err := strconv.Atoi(f[9])
		if err != nil {
			t.Fatalf("inittrace line %q: %v", line, err)
		}
		c := costs[f[1]]
		c.clock += time.Duration(ms * float64(time.Millisecond))
		c.allocs += allocs
		costs[f[1]] = c
	}
	if len(costs) == 0 {
		t.Fatalf("no init lines in the trace:\n%s", trace)
	}
	return costs
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
